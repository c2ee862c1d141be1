package ggbrokertest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/iot"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/ggbrokertest"
)

// A test of firmware logic against a real broker over mutual TLS, with the paho MQTT client. In your
// own code this is the body of a func TestSomething(t *testing.T).
func Example() {
	var t *testing.T // your test's t

	srv := ggbrokertest.Start(t, ggbrokertest.WithProfile("iot-core"))
	dev := srv.CreateDevice(t, "sensor-1")

	opts := mqtt.NewClientOptions().AddBroker("ssl://" + srv.MQTTAddr()).SetClientID(dev.Thing).SetTLSConfig(dev.TLSConfig())
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(250)
	c.Publish("sensor-1/temperature", 1, false, "21.5").Wait()

	// Assert on what the broker decided, as AWS IoT's logs would say it.
	srv.WaitRecord(t, "client connected", map[string]string{"clientId": "sensor-1", "status": "Success"})
	fmt.Println(len(srv.Records()) > 0)
}

// Restart keeps the state directory and the addresses: a persistent session and its queued messages
// survive, as across a gateway reboot.
func ExampleServer_Restart() {
	var t *testing.T // your test's t

	srv := ggbrokertest.Start(t, ggbrokertest.WithPersistence(true))
	dev := srv.CreateDevice(t, "sensor-1")
	// ... connect with clean session false, subscribe to sensor-1/#, disconnect, have another device
	// (created with a WithPolicy that lets it publish on sensor-1/...) publish ...
	srv.Restart(t)
	// ... reconnect dev: the session and the queued message are there.
	_ = dev
}

// Provision devices from a test with the AWS SDK for Go v2, as against AWS IoT Core: AWSConfig points
// the SDK at the broker's AWS API listener.
func ExampleServer_AWSConfig() {
	var t *testing.T // your test's t

	srv := ggbrokertest.Start(t)
	c := iot.NewFromConfig(srv.AWSConfig(t))
	out, err := c.CreateKeysAndCertificate(context.Background(), &iot.CreateKeysAndCertificateInput{SetAsActive: true})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(*out.CertificateId != "")
}

// A gateway bridged to an AWS IoT Core stand-in, as a Greengrass core with the MQTT bridge component:
// the device's telemetry goes up, the cloud application's commands come down.
func ExampleWithUpstream() {
	var t *testing.T // your test's t

	cloud := ggbrokertest.Start(t, ggbrokertest.WithProfile("iot-core"))
	gateway := ggbrokertest.Start(t, ggbrokertest.WithUpstream(cloud,
		ggbrokertest.LocalToIotCore("+/telemetry"),
		ggbrokertest.IotCoreToLocal("+/commands")))

	dev := gateway.CreateDevice(t, "sensor-1") // its own topics: sensor-1/...
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + gateway.MQTTAddr()).SetClientID(dev.Thing).SetTLSConfig(dev.TLSConfig()))
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(250)
	c.Publish("sensor-1/telemetry", 1, false, "21.5").Wait()
	// ... a client of cloud subscribed to +/telemetry receives it; one publishing sensor-1/commands
	// reaches the device.
}
