package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/ggbrokertest"
)

// awsCLI runs the real AWS CLI against the broker's API listener, configured the way the README tells
// users: the credentials file, the endpoint URL and the core CA as CA bundle. It returns stdout, stderr
// and the exit code.
func (h *harness) awsCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		t.Skip("the AWS CLI (aws) is not installed: apt-get install -y awscli (.ci/run does)")
	}
	caFile := filepath.Join(t.TempDir(), "core-ca.pem")
	if err := os.WriteFile(caFile, h.broker.State().CoreCA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	full := append([]string{"--endpoint-url", h.apiURL(), "--ca-bundle", caFile, "--region", h.cfg.Core.Region, "--output", "json"}, args...)
	cmd := exec.Command(bin, full...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AWS_") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env,
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(h.broker.State().Dir, broker.CredentialsFile),
		"AWS_PROFILE=ggbroker", "AWS_CONFIG_FILE=/dev/null", "AWS_RETRY_MODE=standard", "AWS_MAX_ATTEMPTS=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	if ee, isExit := err.(*exec.ExitError); isExit {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("aws %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func (h *harness) mustAWS(t *testing.T, out any, args ...string) {
	t.Helper()
	stdout, stderr, code := h.awsCLI(t, args...)
	if code != 0 {
		t.Fatalf("aws %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			t.Fatalf("aws %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, stdout)
		}
	}
}

// TestAWSCLI provisions a device with the real AWS CLI (botocore's SigV4 and rest-json serializer,
// not the Go SDK's) and connects it.
func TestAWSCLI(t *testing.T) {
	h := startAPIBroker(t, nil)
	h.mustAWS(t, nil, "iot", "create-thing", "--thing-name", "cli-dev", "--attribute-payload", `{"attributes":{"room":"lab"}}`)
	var keys struct {
		CertificateArn, CertificateId, CertificatePem string
		KeyPair                                       struct{ PrivateKey string }
	}
	h.mustAWS(t, &keys, "iot", "create-keys-and-certificate", "--set-as-active")
	if keys.CertificateArn == "" || keys.KeyPair.PrivateKey == "" {
		t.Fatalf("create-keys-and-certificate: %+v", keys)
	}
	policyFile := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policyFile, []byte(thingPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	h.mustAWS(t, nil, "iot", "create-policy", "--policy-name", "cli-policy", "--policy-document", "file://"+policyFile)
	h.mustAWS(t, nil, "iot", "attach-policy", "--policy-name", "cli-policy", "--target", keys.CertificateArn)
	h.mustAWS(t, nil, "iot", "attach-thing-principal", "--thing-name", "cli-dev", "--principal", keys.CertificateArn)
	var attached struct{ Policies []struct{ PolicyName string } }
	h.mustAWS(t, &attached, "iot", "list-attached-policies", "--target", keys.CertificateArn)
	if len(attached.Policies) != 1 || attached.Policies[0].PolicyName != "cli-policy" {
		t.Fatalf("list-attached-policies: %+v", attached)
	}
	var thing struct {
		ThingName  string
		Attributes map[string]string
	}
	h.mustAWS(t, &thing, "iot", "describe-thing", "--thing-name", "cli-dev")
	if thing.Attributes["room"] != "lab" {
		t.Fatalf("describe-thing: %+v", thing)
	}

	d := deviceFromAPI(t, "cli-dev", keys.CertificateId, keys.CertificatePem, keys.KeyPair.PrivateKey)
	cl := h.mustConnectV3(d)
	got := subscribeV3(t, cl, "dev/cli-dev/#", 1)
	publishV3(t, cl, "dev/cli-dev/t", 1, false, "from the CLI's device")
	expectMessage(t, got, "dev/cli-dev/t from the CLI's device")

	// Greengrass V2 on the same endpoint: botocore signs it for "greengrass".
	var assoc struct{ ErrorEntries []any }
	h.mustAWS(t, &assoc, "greengrassv2", "batch-associate-client-device-with-core-device",
		"--core-device-thing-name", h.cfg.Core.ThingName, "--entries", "thingName=cli-dev")
	var listed struct{ AssociatedClientDevices []struct{ ThingName string } }
	h.mustAWS(t, &listed, "greengrassv2", "list-client-devices-associated-with-core-device", "--core-device-thing-name", h.cfg.Core.ThingName)
	if len(assoc.ErrorEntries) != 0 || len(listed.AssociatedClientDevices) != 1 || listed.AssociatedClientDevices[0].ThingName != "cli-dev" {
		t.Fatalf("greengrassv2 association: %+v %+v", assoc, listed)
	}

	_, stderr, code := h.awsCLI(t, "iot", "describe-thing", "--thing-name", "nope")
	if code == 0 || !strings.Contains(stderr, "ResourceNotFoundException") {
		t.Fatalf("describe-thing of a missing thing: exit %d\n%s", code, stderr)
	}
}

// TestServeBinaryServesAPI: `ggbroker serve` (the real binary, with app's services) serves the API on
// the address its "serving" record names, and what the API makes, the CLI lists: one registry.
func TestServeBinaryServesAPI(t *testing.T) {
	dir := t.TempDir()
	s := serve(t, dir)
	addr, _ := s.serving["api"].(string)
	credPath, _ := s.serving["apiCredentials"].(string)
	if addr == "" || credPath == "" {
		t.Fatalf("the serving record names no API listener: %v", s.serving)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ggbroker-data", "ca", "core-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(),
		awsconfig.WithSharedCredentialsFiles([]string{credPath}), awsconfig.WithSharedConfigFiles([]string{}),
		awsconfig.WithSharedConfigProfile("ggbroker"), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCustomCABundle(bytes.NewReader(caPEM)), awsconfig.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	cfg.BaseEndpoint = aws.String("https://" + addr)
	c := iot.NewFromConfig(cfg)
	if _, err := c.CreateThing(context.Background(), &iot.CreateThingInput{ThingName: aws.String("from-api")}); err != nil {
		t.Fatalf("CreateThing on the binary's listener: %v", err)
	}
	keys, err := c.CreateKeysAndCertificate(context.Background(), &iot.CreateKeysAndCertificateInput{SetAsActive: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachThingPrincipal(context.Background(), &iot.AttachThingPrincipalInput{ThingName: aws.String("from-api"), Principal: keys.CertificateArn}); err != nil {
		t.Fatal(err)
	}
	if list := run(t, dir, "device", "list"); !strings.Contains(list, "from-api") {
		t.Fatalf("`ggbroker device list` does not show the thing the API made:\n%s", list)
	}
}

// TestGGBrokerTestServesAPI: ggbrokertest, the package for people who test against ggbroker, hands
// out the API listener's URL and credentials file, and a Restart keeps the URL.
func TestGGBrokerTestServesAPI(t *testing.T) {
	s := ggbrokertest.Start(t)
	client := func() *iot.Client {
		cfg, err := awsconfig.LoadDefaultConfig(context.Background(),
			awsconfig.WithSharedCredentialsFiles([]string{s.APICredentialsFile()}), awsconfig.WithSharedConfigFiles([]string{}),
			awsconfig.WithSharedConfigProfile("ggbroker"), awsconfig.WithRegion("us-east-1"),
			awsconfig.WithCustomCABundle(bytes.NewReader(s.CoreCA().PEM)), awsconfig.WithRetryMaxAttempts(1))
		if err != nil {
			t.Fatal(err)
		}
		cfg.BaseEndpoint = aws.String(s.APIURL())
		return iot.NewFromConfig(cfg)
	}
	if _, err := client().CreateThing(context.Background(), &iot.CreateThingInput{ThingName: aws.String("gbt-1")}); err != nil {
		t.Fatal(err)
	}
	url := s.APIURL()
	s.Restart(t)
	if s.APIURL() != url {
		t.Fatalf("API URL %s after a restart, was %s", s.APIURL(), url)
	}
	if _, err := client().DescribeThing(context.Background(), &iot.DescribeThingInput{ThingName: aws.String("gbt-1")}); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}
