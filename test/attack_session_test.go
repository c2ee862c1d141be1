package test

import (
	"os"
	"path/filepath"
	"testing"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
)

// TestClientIDOfAnotherIdentityIsRefused (issue 17, medium): an unauthenticated local-listener client
// took over a device's persistent session (its queued messages, outside its own policy) and kicked a
// live TLS device. A client ID whose session belongs to another identity is now refused, live or
// persistent, and the device keeps its connection.
func TestClientIDOfAnotherIdentityIsRefused(t *testing.T) {
	h := startBroker(t, func(c *config.Config) {
		c.LocalListener = config.LocalListener{Enabled: true, Listen: "127.0.0.1:0", Anonymous: "local-tools", Policy: "local-any"}
		if err := os.MkdirAll(c.PolicyDir(), 0o700); err != nil {
			t.Fatal(err)
		}
		doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`
		if err := os.WriteFile(filepath.Join(c.PolicyDir(), "local-any.json"), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	dev := h.createDevice("dev-held")
	local := func() error {
		o := pahov3.NewClientOptions().AddBroker("tcp://" + h.broker.LocalAddr().String()).SetClientID("dev-held").
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(waitFor).SetCleanSession(false)
		c := pahov3.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(waitFor) {
			t.Fatal("local connect timed out")
		}
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}

	// Live: the device stays connected and the local client is refused.
	dc := connectSession(t, h.endpoint(dev), "dev-held", false, nil)
	subscribeV3(t, dc, "dev-held/in", 1)
	if err := local(); err == nil {
		t.Fatal("a local-listener client took the client ID of a connected device")
	}
	if !dc.IsConnectionOpen() {
		t.Fatal("the device lost its connection")
	}
	h.record(t, "connection refused", map[string]string{"clientId": "dev-held", "reason": "CLIENT_ID_IN_USE"})

	// Persistent, device offline: still the device's.
	dc.Disconnect(0)
	if err := local(); err == nil {
		t.Fatal("a local-listener client took over an offline device's persistent session")
	}
	// The device itself comes back to its session.
	o := h.v3Options(dev, "dev-held", nil).SetCleanSession(false)
	c := pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("the device's own reconnect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if !tok.(*pahov3.ConnectToken).SessionPresent() {
		t.Fatal("the device's session was lost")
	}
}

// TestQueuedMessagesAreCheckedAgainWhenSent (issue 17, medium): a message queued for an offline
// session was delivered on the permission it had when it was queued. A policy that took iot:Receive
// away meanwhile now keeps it from the device when it reconnects.
func TestQueuedMessagesAreCheckedAgainWhenSent(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("reader", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`)
	dev := h.createDevice("queued-dev", "reader")
	pub := h.mustConnectV3(h.createDevice("queued-pub"))

	got := make(chan string, 10)
	c := connectSession(t, h.endpoint(dev), "queued-dev", false, got)
	subscribeV3(t, c, "news/#", 1)
	c.Disconnect(0)
	publishV3(t, pub, "news/secret", 1, false, "queued while offline")
	publishV3(t, pub, "news/public", 1, false, "also queued")

	before := h.reloads()
	h.writePolicy("reader", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"},
	  {"Effect":"Deny","Action":"iot:Receive","Resource":"arn:aws:iot:*:*:topic/news/secret"}]}`)
	h.waitReload(t, before)

	connectSession(t, h.endpoint(dev), "queued-dev", false, got)
	expectMessage(t, got, "news/public also queued")
	publishV3(t, pub, "news/marker", 1, false, "m")
	expectMessage(t, got, "news/marker m")
	select {
	case m := <-got:
		t.Fatalf("received %q after the policy took it away", m)
	default:
	}
	h.record(t, "not authorized", map[string]string{"clientId": "queued-dev", "topicName": "news/secret", "eventType": "Publish-Out"})
}
