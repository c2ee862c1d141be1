package test

import (
	"net/http"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
)

// TestHotRotationKeepsConnections: after a forced rotation (through the admin endpoint), a connected
// client stays connected and keeps working, and a new connection sees the new server certificate.
func TestHotRotationKeepsConnections(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("sensor-h")
	other := h.createDevice("app-h")

	seen := make(chan string, 1)
	lost := make(chan error, 1)
	o := h.v3Options(d, d.name, seen).SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	first := <-seen
	if first != h.broker.ServerCertificate().SerialNumber.Text(16) {
		t.Fatalf("handshake saw serial %s, broker serves %s", first, h.broker.ServerCertificate().SerialNumber.Text(16))
	}

	resp := h.adminPost(t, "/rotate", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /rotate: %s", resp.Status)
	}
	rotated := h.broker.ServerCertificate().SerialNumber.Text(16)
	if rotated == first {
		t.Fatal("POST /rotate did not change the server certificate")
	}

	seen2 := make(chan string, 1)
	c2 := pahov3.NewClient(h.v3Options(other, other.name, seen2))
	if tok := c2.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect after rotation: %v", tok.Error())
	}
	defer c2.Disconnect(0)
	if got := <-seen2; got != rotated {
		t.Fatalf("new connection saw serial %s, want the rotated %s", got, rotated)
	}

	// The first connection survived: it still publishes and receives.
	got := subscribeV3(t, c, "sensor-h/#", 1)
	publishV3(t, c2, "sensor-h/cmd", 1, false, "still here")
	expectMessage(t, got, "sensor-h/cmd still here")
	select {
	case err := <-lost:
		t.Fatalf("hot rotation dropped the connection: %v", err)
	default:
	}
	h.record(t, "server certificate issued", map[string]string{"reason": "forced", "serial": rotated})
}

// TestRestartRotationDisconnectsClients: in restart mode a rotation disconnects every client, as
// Greengrass' broker restart does, and they reconnect to the new certificate.
func TestRestartRotationDisconnectsClients(t *testing.T) {
	h := startBroker(t, func(c *config.Config) { c.ClientDeviceAuth.Certificates.RotationMode = config.RotationRestart })
	d := h.createDevice("sensor-x")
	lost := make(chan error, 1)
	o := h.v3Options(d, d.name, nil).SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if err := h.broker.Rotate("forced"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("restart-mode rotation did not disconnect the client")
	}
	h.record(t, "client disconnected", map[string]string{"clientId": "sensor-x", "disconnectReason": "SERVER_INITIATED_DISCONNECT"})

	seen := make(chan string, 1)
	c2 := pahov3.NewClient(h.v3Options(d, d.name, seen))
	if tok := c2.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("reconnect: %v", tok.Error())
	}
	defer c2.Disconnect(0)
	if got, want := <-seen, h.broker.ServerCertificate().SerialNumber.Text(16); got != want {
		t.Fatalf("reconnect saw serial %s, want %s", got, want)
	}
}
