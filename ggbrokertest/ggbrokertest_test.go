package ggbrokertest_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/ggbrokertest"
)

// allowAll is a policy for the devices that play the backend in these tests.
const allowAll = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`

func connect(t *testing.T, srv *ggbrokertest.Server, d *ggbrokertest.Device, clean bool) (mqtt.Client, chan string) {
	t.Helper()
	got := make(chan string, 10)
	o := mqtt.NewClientOptions().AddBroker("ssl://" + srv.MQTTAddr()).SetClientID(d.Thing).SetTLSConfig(d.TLSConfig()).
		SetAutoReconnect(false).SetCleanSession(clean).SetConnectTimeout(ggbrokertest.Timeout).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(ggbrokertest.Timeout) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", d.Thing, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, got
}

func wait(t *testing.T, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(ggbrokertest.Timeout) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
}

func expect(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case m := <-got:
		if m != want {
			t.Fatalf("received %q, want %q", m, want)
		}
	case <-time.After(ggbrokertest.Timeout):
		t.Fatalf("did not receive %q", want)
	}
}

// TestServersRunInParallel: many servers in one test binary, each with its own state and ports.
func TestServersRunInParallel(t *testing.T) {
	for _, profile := range []string{"greengrass", "iot-core"} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			srv := ggbrokertest.Start(t, ggbrokertest.WithProfile(profile))
			d := srv.CreateDevice(t, "sensor-1")
			c, got := connect(t, srv, d, true)
			wait(t, c.Subscribe("sensor-1/#", 1, nil))
			wait(t, c.Publish("sensor-1/t", 1, false, "21.5"))
			expect(t, got, "sensor-1/t 21.5")
			srv.WaitRecord(t, "client connected", map[string]string{"clientId": "sensor-1", "eventType": "Connect", "status": "Success"})
		})
	}
}

// TestPolicyRevokeRestart: a device's own policy decides; SetPolicy applies before it returns; Revoke
// closes the live connection; Restart keeps persistent sessions and queued messages.
func TestPolicyRevokeRestart(t *testing.T) {
	srv := ggbrokertest.Start(t)
	d := srv.CreateDevice(t, "sensor-2", ggbrokertest.WithPolicy(`{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Action":"iot:Connect","Resource":"*"},
	  {"Effect":"Allow","Action":["iot:Publish","iot:Subscribe","iot:Receive"],"Resource":"*"}]}`))
	// The default device policy allows a device its own sender/... topics only: news/ needs a policy.
	other := srv.CreateDevice(t, "sender", ggbrokertest.WithPolicy(`{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
	  {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/news/*"}]}`))
	c, _ := connect(t, srv, d, false)
	wait(t, c.Subscribe("news/#", 1, nil))
	c.Disconnect(0)

	s, _ := connect(t, srv, other, true)
	wait(t, s.Publish("news/1", 1, false, "queued"))
	srv.Restart(t)

	c, got := connect(t, srv, d, false)
	expect(t, got, "news/1 queued")

	srv.SetPolicy(t, "sensor-2-policy", `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Action":["iot:Connect","iot:Publish","iot:Subscribe"],"Resource":"*"}]}`)
	s, _ = connect(t, srv, other, true)
	wait(t, s.Publish("news/2", 1, false, "not for you"))
	srv.WaitRecord(t, "not authorized", map[string]string{"clientId": "sensor-2", "topicName": "news/2"})

	srv.Revoke(t, "sensor-2")
	deadline := time.Now().Add(ggbrokertest.Timeout)
	for c.IsConnectionOpen() {
		if time.Now().After(deadline) {
			t.Fatal("a revoked device stayed connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.WaitRecord(t, "client disconnected", map[string]string{"clientId": "sensor-2", "disconnectReason": "AUTH_ERROR"})
	_ = got
}

// TestRotateAndFiles: Rotate issues a new server certificate the device still trusts; WithFiles
// writes the files device firmware reads.
func TestRotateAndFiles(t *testing.T) {
	srv := ggbrokertest.Start(t, ggbrokertest.WithPersistence(false))
	dir := t.TempDir()
	d := srv.CreateDevice(t, "sensor-3", ggbrokertest.WithFiles(dir))
	if d.Dir != dir {
		t.Fatalf("Dir %q", d.Dir)
	}
	for _, f := range []string{"device.pem.crt", "private.pem.key", "core-ca.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("WithFiles: %v", err)
		}
	}
	before := srv.Broker().ServerCertificate().SerialNumber
	srv.Rotate(t)
	if srv.Broker().ServerCertificate().SerialNumber.Cmp(before) == 0 {
		t.Fatal("Rotate did not issue a new certificate")
	}
	connect(t, srv, d, true)
	if !srv.CoreCA().Pool.Equal(srv.CoreCA().Pool) || len(srv.CoreCA().PEM) == 0 {
		t.Fatal("no core CA")
	}
}

// TestLocalListenerAndDeviceGroups: the options reach the broker.
func TestLocalListenerAndDeviceGroups(t *testing.T) {
	srv := ggbrokertest.Start(t, ggbrokertest.WithLocalListener("dashboard",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`))
	o := mqtt.NewClientOptions().AddBroker("tcp://" + srv.LocalAddr()).SetClientID("ui").SetAutoReconnect(false).SetConnectTimeout(ggbrokertest.Timeout)
	c := mqtt.NewClient(o)
	wait(t, c.Connect())
	c.Disconnect(0)

	groups := map[string]any{
		"formatVersion": "2021-03-05",
		"definitions":   map[string]any{"sensors": map[string]any{"selectionRule": "thingName: sensor-*", "policyName": "p"}},
		"policies": map[string]any{"p": map[string]any{"s": map[string]any{"statementDescription": "all",
			"operations": []any{"mqtt:connect", "mqtt:publish", "mqtt:subscribe"}, "resources": []any{"*"}}}},
	}
	gsrv := ggbrokertest.Start(t, ggbrokertest.WithDeviceGroups(groups))
	connect(t, gsrv, gsrv.CreateDevice(t, "sensor-9"), true)
	stranger := gsrv.CreateDevice(t, "pump-1")
	o = mqtt.NewClientOptions().AddBroker("ssl://" + gsrv.MQTTAddr()).SetClientID("pump-1").SetTLSConfig(stranger.TLSConfig()).
		SetAutoReconnect(false).SetConnectTimeout(ggbrokertest.Timeout)
	if tok := mqtt.NewClient(o).Connect(); tok.WaitTimeout(ggbrokertest.Timeout) && tok.Error() == nil {
		t.Fatal("a device in no group connected")
	}
}

// TestAWSSDKProvisionsADevice: the real AWS SDK for Go v2 against the real API listener creates a
// thing, keys and a policy, and the device connects with them.
func TestAWSSDKProvisionsADevice(t *testing.T) {
	srv := ggbrokertest.Start(t)
	ctx := context.Background()
	c := iot.NewFromConfig(srv.AWSConfig(t))
	if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("sdk-sensor")}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.CreateKeysAndCertificate(ctx, &iot.CreateKeysAndCertificateInput{SetAsActive: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []func() error{
		func() error {
			_, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("sdk-all"),
				PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`)})
			return err
		},
		func() error {
			_, err := c.AttachPolicy(ctx, &iot.AttachPolicyInput{PolicyName: aws.String("sdk-all"), Target: keys.CertificateArn})
			return err
		},
		func() error {
			_, err := c.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{ThingName: aws.String("sdk-sensor"), Principal: keys.CertificateArn})
			return err
		},
	} {
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := tls.X509KeyPair([]byte(*keys.CertificatePem), []byte(*keys.KeyPair.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: srv.CoreCA().Pool, Certificates: []tls.Certificate{cert}, ServerName: "localhost"}
	o := mqtt.NewClientOptions().AddBroker("ssl://" + srv.MQTTAddr()).SetClientID("sdk-sensor").SetTLSConfig(tc).
		SetAutoReconnect(false).SetConnectTimeout(ggbrokertest.Timeout)
	wait(t, mqtt.NewClient(o).Connect())
}

// TestUpstreamBridge: WithUpstream bridges a device's message up to an iot-core server and a cloud
// application's message down, before and after a restart of the gateway; a topic no mapping names
// stays local.
func TestUpstreamBridge(t *testing.T) {
	cloud := ggbrokertest.Start(t, ggbrokertest.WithProfile("iot-core"))
	gw := ggbrokertest.Start(t, ggbrokertest.WithConfig(func(c *config.Config) { c.Core.ThingName = "gateway-1" }),
		ggbrokertest.WithUpstream(cloud, ggbrokertest.LocalToIotCore("+/telemetry"), ggbrokertest.IotCoreToLocal("+/commands")))
	if gw.Config().Core.ThingName != "gateway-1" || gw.Config().Core.IoTDataEndpoint == "" {
		t.Fatalf("core %+v", gw.Config().Core)
	}
	app, fromDevices := connect(t, cloud, cloud.CreateDevice(t, "cloud-app", ggbrokertest.WithPolicy(allowAll)), true)
	wait(t, app.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) {
		if m.Topic() != "sensor-1/commands" { // its own, which it publishes
			fromDevices <- m.Topic() + " " + string(m.Payload())
		}
	}))
	dev, toDevice := connect(t, gw, gw.CreateDevice(t, "sensor-1"), true)
	wait(t, dev.Subscribe("sensor-1/commands", 1, nil))

	check := func(n string) {
		t.Helper()
		wait(t, dev.Publish("sensor-1/local-only", 1, false, "stays"))
		wait(t, dev.Publish("sensor-1/telemetry", 1, false, "21.5 "+n))
		expect(t, fromDevices, "sensor-1/telemetry 21.5 "+n) // not sensor-1/local-only first: no mapping names it
		wait(t, app.Publish("sensor-1/commands", 1, false, "reboot "+n))
		expect(t, toDevice, "sensor-1/commands reboot "+n)
	}
	check("1")
	cloud.WaitRecord(t, "client connected", map[string]string{"clientId": "gateway-1", "status": "Success"})

	gw.Restart(t) // returns once the bridge is subscribed upstream again
	dev, toDevice = connect(t, gw, gw.CreateDevice(t, "sensor-1"), true)
	wait(t, dev.Subscribe("sensor-1/commands", 1, nil))
	check("2")
}
