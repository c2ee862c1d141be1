package test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/ggbrokertest"
)

// These tests run examples/device-sdk-js, the AWS IoT Device SDK v2 for JavaScript against the real
// broker, as a firmware developer would run them (node script.js --endpoint ... --cert ...).

// deviceSDKJS is examples/device-sdk-js when node loads the AWS IoT Device SDK v2 there (its aws-crt
// native module included); otherwise the test skips and says how to install it.
func deviceSDKJS(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "examples", "device-sdk-js")
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("no node on PATH")
	}
	cmd := exec.Command("node", "-e", "require('aws-iot-device-sdk-v2')")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("the AWS IoT Device SDK v2 for JavaScript does not load in %s: (cd examples/device-sdk-js && npm ci); .ci/run does it: %v\n%s", dir, err, out)
	}
	return dir
}

// runNode runs a script of dir and returns what it printed; an exit status other than 0 or a hang
// fails the test.
func runNode(t *testing.T, dir, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	t.Logf("node %s:\n%s", script, out)
	return string(out)
}

// sdkArgs are the connection arguments every script takes: the MQTT endpoint and the device's files.
func sdkArgs(srv *ggbrokertest.Server, d *ggbrokertest.Device) []string {
	_, port, _ := net.SplitHostPort(srv.MQTTAddr())
	return []string{"--endpoint", "localhost", "--port", port, "--thing", d.Thing,
		"--cert", filepath.Join(d.Dir, "device.pem.crt"), "--key", filepath.Join(d.Dir, "private.pem.key"), "--ca", filepath.Join(d.Dir, "core-ca.pem")}
}

// mustContain fails unless out has every line of want.
func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

// backend connects a client that plays the cloud application, with a policy of its own (the default
// device policy allows a device its own topics only).
func backend(t *testing.T, srv *ggbrokertest.Server) pahov3.Client {
	t.Helper()
	d := srv.CreateDevice(t, "backend", ggbrokertest.WithPolicy(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`))
	o := pahov3.NewClientOptions().AddBroker("ssl://" + srv.MQTTAddr()).SetClientID(d.Thing).SetTLSConfig(d.TLSConfig()).
		SetAutoReconnect(false).SetConnectTimeout(waitFor)
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect backend: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestDeviceSDKJSShadow: examples/device-sdk-js/shadow.js reads the shadow the backend set, applies
// the desired state and reports it.
func TestDeviceSDKJSShadow(t *testing.T) {
	dir := deviceSDKJS(t)
	srv := ggbrokertest.Start(t)
	d := srv.CreateDevice(t, "js-lamp", ggbrokertest.WithFiles(t.TempDir()))
	be := backend(t, srv)
	docs := subscribeV3(t, be, "$aws/things/js-lamp/shadow/update/documents", 1)
	publishV3(t, be, "$aws/things/js-lamp/shadow/update", 1, false, `{"state":{"desired":{"led":"on"}}}`)
	document := func() map[string]any {
		t.Helper()
		var doc map[string]any
		select {
		case m := <-docs:
			if err := json.Unmarshal([]byte(strings.TrimPrefix(m, "$aws/things/js-lamp/shadow/update/documents ")), &doc); err != nil {
				t.Fatalf("documents: %v\n%s", err, m)
			}
		case <-time.After(waitFor):
			t.Fatal("the backend saw no update/documents")
		}
		return doc
	}
	if doc := document(); field(doc, "current", "state", "desired", "led") != "on" {
		t.Fatalf("documents of the backend's update: %v", doc)
	}

	out := runNode(t, dir, "shadow.js", sdkArgs(srv, d)...)
	mustContain(t, out, `desired {"led":"on"} version 1`, `reported {"led":"on","temperature":21.5} version 2`)
	// What the backend sees: the device's report, in the documents the shadow service publishes.
	if doc := document(); field(doc, "current", "state", "reported", "led") != "on" || field(doc, "current", "state", "desired", "led") != "on" {
		t.Fatalf("documents after the example: %v", doc)
	}
}

// TestDeviceSDKJSJobs: examples/device-sdk-js/jobs.js takes the job the backend created through the
// AWS API and reports it SUCCEEDED.
func TestDeviceSDKJSJobs(t *testing.T) {
	dir := deviceSDKJS(t)
	srv := ggbrokertest.Start(t)
	d := srv.CreateDevice(t, "js-pump", ggbrokertest.WithFiles(t.TempDir()))
	c := iot.NewFromConfig(srv.AWSConfig(t))
	ctx := context.Background()
	arn := "arn:aws:iot:" + srv.Config().Core.Region + ":" + srv.Config().Core.AccountID + ":thing/js-pump"
	if _, err := c.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("flush-1"), Targets: []string{arn},
		Document: aws.String(`{"operation":"flush"}`)}); err != nil {
		t.Fatalf("CreateJob: %v", err)
	}

	out := runNode(t, dir, "jobs.js", sdkArgs(srv, d)...)
	mustContain(t, out, `job flush-1 IN_PROGRESS {"operation":"flush"}`, "job flush-1 SUCCEEDED")
	ex, err := c.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("flush-1"), ThingName: aws.String("js-pump")})
	if err != nil || ex.Execution.Status != iottypes.JobExecutionStatusSucceeded || ex.Execution.StatusDetails.DetailsMap["result"] != "done" {
		t.Fatalf("execution after the example: %v %+v", err, ex)
	}
	// Nothing left: a second run says so.
	mustContain(t, runNode(t, dir, "jobs.js", sdkArgs(srv, d)...), "no pending job")
}

// ownTopicsPolicy lets a device connect as its thing and use the topics under its thing name.
const ownTopicsPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"}]}`

// TestDeviceSDKJSFleetProvisioning: examples/device-sdk-js/provision.js provisions a thing by claim
// with the template the backend created, and connects with its new certificate.
func TestDeviceSDKJSFleetProvisioning(t *testing.T) {
	dir := deviceSDKJS(t)
	srv := ggbrokertest.Start(t)
	c := iot.NewFromConfig(srv.AWSConfig(t))
	ctx := context.Background()
	if _, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("fleet-device"), PolicyDocument: aws.String(ownTopicsPolicy)}); err != nil {
		t.Fatalf("CreatePolicy: %v", err)
	}
	if _, err := c.CreateProvisioningTemplate(ctx, &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("fleet"), Enabled: aws.Bool(true),
		ProvisioningRoleArn: aws.String("arn:aws:iam::123456789012:role/provisioning"), TemplateBody: aws.String(fleetTemplateBody)}); err != nil {
		t.Fatalf("CreateProvisioningTemplate: %v", err)
	}
	claim := srv.CreateDevice(t, "claim-1", ggbrokertest.WithPolicy(claimPolicy), ggbrokertest.WithFiles(t.TempDir()))
	be := backend(t, srv)
	hello := subscribeV3(t, be, "SN-0001/hello", 1)
	outDir := t.TempDir()

	out := runNode(t, dir, "provision.js", append(sdkArgs(srv, claim), "--template", "fleet", "--serial", "SN-0001", "--out", outDir)...)
	mustContain(t, out, "registered thing SN-0001", "connected as SN-0001")
	expectMessage(t, hello, "SN-0001/hello provisioned")
	th, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("SN-0001")})
	if err != nil || th.Attributes["serial"] != "SN-0001" {
		t.Fatalf("the provisioned thing: %v %+v", err, th)
	}
	if _, err := os.Stat(filepath.Join(outDir, "private.pem.key")); err != nil {
		t.Fatalf("the example did not write the new key: %v", err)
	}
}

// TestDeviceSDKJSDiscovery: examples/device-sdk-js/discovery.js discovers the core with the SDK's
// Greengrass discovery client, on the ALPN listener (what the SDK uses on port 443) and on the plain
// one (8443), then connects to the address it was given and gets its own message back.
func TestDeviceSDKJSDiscovery(t *testing.T) {
	dir := deviceSDKJS(t)
	srv := ggbrokertest.Start(t, ggbrokertest.WithConfig(func(c *config.Config) {
		c.Discovery.ALPNListen = "127.0.0.1:0"
		c.Connectivity.Endpoints = []config.Endpoint{{HostAddress: "127.0.0.1"}}
	}))
	d := srv.CreateDevice(t, "js-sensor", ggbrokertest.WithFiles(t.TempDir()))
	_, mqttPort, _ := net.SplitHostPort(srv.MQTTAddr())
	for name, addr := range map[string]string{"alpnListen": srv.DiscoveryALPNAddr(), "listen": srv.DiscoveryAddr()} {
		t.Run(name, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(addr)
			out := runNode(t, dir, "discovery.js", "--thing", d.Thing, "--cert", filepath.Join(d.Dir, "device.pem.crt"),
				"--key", filepath.Join(d.Dir, "private.pem.key"), "--ca", filepath.Join(d.Dir, "core-ca.pem"),
				"--region", srv.Config().Core.Region, "--discovery-endpoint", "localhost", "--discovery-port", port)
			mustContain(t, out, "at 127.0.0.1:"+mqttPort, "received js-sensor/hello hello through discovery")
		})
	}
	srv.WaitRecord(t, "client connected", map[string]string{"clientId": "js-sensor", "status": "Success"})
}
