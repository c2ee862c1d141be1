package test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/ggbroker/ggbroker/ggbrokertest"
)

// These tests run examples/provisioning: a device provisioned from outside through the AWS IoT API
// (the AWS CLI, boto3), with only the endpoint URL, the CA bundle and the credentials file pointing
// at ggbroker, then connected with the files it got.

// provisioningEnv is the environment the examples run in: the caller's without its AWS_ variables (a
// developer's own profile or keys must not leak in) and without their AWS config file.
func provisioningEnv(srv *ggbrokertest.Server, extra ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AWS_") && !strings.HasPrefix(e, "GGBROKER_") {
			env = append(env, e)
		}
	}
	_, port, _ := net.SplitHostPort(srv.MQTTAddr())
	return append(append(env, "AWS_CONFIG_FILE=/dev/null", "AWS_MAX_ATTEMPTS=1", "AWS_REGION="+srv.Config().Core.Region,
		"GGBROKER_MQTT_PORT="+port), extra...)
}

// runProvisioning runs an example and returns its output; a failure fails the test.
func runProvisioning(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	t.Logf("%s:\n%s", filepath.Base(args[0]), out)
	return string(out)
}

// checkProvisioned checks what the example made through the API: the thing with one certificate,
// which carries the example's policy.
func checkProvisioned(t *testing.T, srv *ggbrokertest.Server, thing string) {
	t.Helper()
	c := iot.NewFromConfig(srv.AWSConfig(t))
	ctx := context.Background()
	ps, err := c.ListThingPrincipals(ctx, &iot.ListThingPrincipalsInput{ThingName: aws.String(thing)})
	if err != nil || len(ps.Principals) != 1 {
		t.Fatalf("principals of %s: %v %v", thing, ps, err)
	}
	pol, err := c.ListAttachedPolicies(ctx, &iot.ListAttachedPoliciesInput{Target: aws.String(ps.Principals[0])})
	if err != nil || len(pol.Policies) != 1 || aws.ToString(pol.Policies[0].PolicyName) != thing+"-policy" {
		t.Fatalf("policies of %s: %+v %v", ps.Principals[0], pol, err)
	}
}

// TestProvisioningAWSCLIExample runs examples/provisioning/provision-cli.sh: the AWS CLI provisions,
// mosquitto_pub connects with the files and publishes on the device's own topic.
func TestProvisioningAWSCLIExample(t *testing.T) {
	for _, tool := range []string{"aws", "mosquitto_pub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install awscli mosquitto-clients; .ci/run does)", tool)
		}
	}
	srv := ggbrokertest.Start(t)
	got := subscribeV3(t, backend(t, srv), "cli-sensor/hello", 1)
	out := runProvisioning(t, provisioningEnv(srv, "GGBROKER_STATE_DIR="+srv.Broker().State().Dir, "GGBROKER_API_URL="+srv.APIURL()),
		"bash", filepath.Join("..", "examples", "provisioning", "provision-cli.sh"), "cli-sensor", filepath.Join(t.TempDir(), "cli-sensor"))
	mustContain(t, out, "provisioned cli-sensor: arn:aws:iot:", "published cli-sensor/hello")
	expectMessage(t, got, "cli-sensor/hello provisioned with the AWS CLI")
	checkProvisioned(t, srv, "cli-sensor")
}

// pythonWithBoto3 is a Python 3 that imports boto3 and paho.mqtt (Debian's python3-boto3 and
// python3-paho-mqtt install into the system Python), or "".
func pythonWithBoto3() string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(py, "-c", "import boto3, paho.mqtt.client").Run(); err == nil {
			return py
		}
	}
	return ""
}

// TestProvisioningBoto3Example runs examples/provisioning/provision_boto3.py: boto3 provisions, paho
// connects with the files and publishes on the device's own topic.
func TestProvisioningBoto3Example(t *testing.T) {
	py := pythonWithBoto3()
	if py == "" {
		t.Skip("no Python 3 with boto3 and paho-mqtt (apt-get install python3-boto3 python3-paho-mqtt; .ci/run does)")
	}
	srv := ggbrokertest.Start(t)
	got := subscribeV3(t, backend(t, srv), "py-sensor/hello", 1)
	_, port, _ := net.SplitHostPort(srv.MQTTAddr())
	out := runProvisioning(t, provisioningEnv(srv), py, filepath.Join("..", "examples", "provisioning", "provision_boto3.py"),
		"--state-dir", srv.Broker().State().Dir, "--api-url", srv.APIURL(), "--region", srv.Config().Core.Region,
		"--thing", "py-sensor", "--out", filepath.Join(t.TempDir(), "py-sensor"), "--mqtt-port", port)
	mustContain(t, out, "provisioned py-sensor: arn:aws:iot:", "published py-sensor/hello")
	expectMessage(t, got, "py-sensor/hello provisioned with boto3")
	checkProvisioned(t, srv, "py-sensor")
}
