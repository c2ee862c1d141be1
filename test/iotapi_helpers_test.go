package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/config"
)

// apiConfig is what a test rig's SDK client gets: the endpoint URL of the API listener, the keys of
// <stateDir>/credentials (profile ggbroker) and the core device CA as the only root, exactly as the
// README tells users to configure theirs.
func (h *harness) apiConfig(t testing.TB) aws.Config {
	t.Helper()
	if h.broker.APIAddr() == nil {
		t.Fatal("the API listener is off")
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(),
		awsconfig.WithSharedCredentialsFiles([]string{filepath.Join(h.broker.State().Dir, broker.CredentialsFile)}),
		awsconfig.WithSharedConfigFiles([]string{}),
		awsconfig.WithSharedConfigProfile("ggbroker"),
		awsconfig.WithRegion(h.cfg.Core.Region),
		// The --ca-bundle of the AWS CLI; it takes precedence over an AWS_CA_BUNDLE in the environment.
		awsconfig.WithCustomCABundle(bytes.NewReader(h.broker.State().CoreCA.CertPEM())),
		awsconfig.WithRetryMaxAttempts(1),
	)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BaseEndpoint = aws.String(h.apiURL())
	return cfg
}

// apiURL is the API listener's endpoint URL.
func (h *harness) apiURL() string { return "https://" + h.broker.APIAddr().String() }

// iotClient is an AWS IoT SDK client against the broker's API listener.
func (h *harness) iotClient(t testing.TB, mutate ...func(*iot.Options)) *iot.Client {
	return iot.NewFromConfig(h.apiConfig(t), mutate...)
}

// startAPIBroker starts a broker with its services (iotapi among them, from app), as `ggbroker serve`
// runs it.
func startAPIBroker(t testing.TB, mutate func(*config.Config)) *harness {
	t.Helper()
	return startBroker(t, mutate)
}

// deviceFromAPI is a device made of what CreateKeysAndCertificate answered.
func deviceFromAPI(t testing.TB, name, certID, certPEM, keyPEM string) *device {
	t.Helper()
	kp, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatalf("the API's certificate and key do not make a key pair: %v", err)
	}
	return &device{name: name, certID: certID, cert: kp}
}

// provisionViaAPI does what a test rig does: create the thing, keys and certificate (ACTIVE), a policy,
// and attach them, all through the AWS SDK.
func provisionViaAPI(t testing.TB, c *iot.Client, name, policyName, policyDoc string) *device {
	t.Helper()
	ctx := context.Background()
	if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name)}); err != nil {
		t.Fatalf("CreateThing: %v", err)
	}
	keys, err := c.CreateKeysAndCertificate(ctx, &iot.CreateKeysAndCertificateInput{SetAsActive: true})
	if err != nil {
		t.Fatalf("CreateKeysAndCertificate: %v", err)
	}
	if policyDoc != "" {
		if _, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String(policyName), PolicyDocument: aws.String(policyDoc)}); err != nil {
			t.Fatalf("CreatePolicy: %v", err)
		}
	}
	if _, err := c.AttachPolicy(ctx, &iot.AttachPolicyInput{PolicyName: aws.String(policyName), Target: keys.CertificateArn}); err != nil {
		t.Fatalf("AttachPolicy: %v", err)
	}
	if _, err := c.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{ThingName: aws.String(name), Principal: keys.CertificateArn}); err != nil {
		t.Fatalf("AttachThingPrincipal: %v", err)
	}
	return deviceFromAPI(t, name, aws.ToString(keys.CertificateId), aws.ToString(keys.CertificatePem), aws.ToString(keys.KeyPair.PrivateKey))
}
