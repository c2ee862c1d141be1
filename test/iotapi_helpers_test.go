package test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/ggbroker/ggbroker/broker"
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
