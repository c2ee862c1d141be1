package test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/auth"
)

// TestRevocationClosesLiveConnections (issue 17, high): a certificate revoked or deactivated in the
// registry (as `ggbroker device revoke` does, from another process) loses its live connections at
// once, MQTT 3.1.1 and 5 alike, with a Disconnect record that says why; before, it kept publishing and
// receiving until it reconnected.
func TestRevocationClosesLiveConnections(t *testing.T) {
	for _, status := range []auth.Status{auth.StatusRevoked, auth.StatusInactive} {
		t.Run(string(status), func(t *testing.T) {
			h := startBroker(t, nil)
			d3, d5, other := h.createDevice("rev-v3"), h.createDevice("rev-v5"), h.createDevice("rev-other")
			lost := make(chan error, 1)
			h.mustConnectV3(d3, func(o *pahov3.ClientOptions) {
				o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
			})
			_, _, gone, err := h.v5(t, d5, paho.Connect{ClientID: "rev-v5", CleanStart: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			bystander := h.mustConnectV3(other)

			for _, thing := range []string{"rev-v3", "rev-v5"} {
				if _, err := h.broker.State().Registry.SetStatus(thing, status); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-lost:
			case <-time.After(waitFor):
				t.Fatal("the MQTT 3.1.1 connection of a certificate no longer active stayed open")
			}
			select {
			case d := <-gone:
				if d.ReasonCode != 0x87 {
					t.Fatalf("DISCONNECT reason 0x%02x, want 0x87 (not authorized)", d.ReasonCode)
				}
			case <-time.After(waitFor):
				t.Fatal("the MQTT 5 connection of a certificate no longer active stayed open")
			}
			for _, id := range []string{"rev-v3", "rev-v5"} {
				h.record(t, "client disconnected", map[string]string{"clientId": id, "disconnectReason": "AUTH_ERROR"})
			}
			if !bystander.IsConnectionOpen() {
				t.Fatal("an active device's connection was closed too")
			}
			publishV3(t, bystander, "rev/still-here", 1, false, "ok")
		})
	}
}

// TestDelayedWillOfARevokedCertificateIsNotSent (issue 17, low): a delayed will was checked at the
// disconnect and sent when due, after its certificate had been revoked. It is asked again when due.
func TestDelayedWillOfARevokedCertificateIsNotSent(t *testing.T) {
	h := startBroker(t, nil)
	obs, got := h.observer(t, "#")
	d := h.createDevice("will-late")
	conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
	if err != nil {
		t.Fatal(err)
	}
	delay, expiry := uint32(1), uint32(60)
	c := paho.NewClient(paho.ClientConfig{ClientID: d.name, Conn: packets.NewThreadSafeConn(conn)})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: d.name, KeepAlive: 30, CleanStart: true,
		Properties:     &paho.ConnectProperties{SessionExpiryInterval: &expiry},
		WillMessage:    &paho.WillMessage{Topic: "will-late/status", QoS: 1, Payload: []byte("gone")},
		WillProperties: &paho.WillProperties{WillDelayInterval: &delay}}); err != nil {
		t.Fatal(err)
	}
	conn.Close() // no DISCONNECT: the will is due in a second
	h.record(t, "client disconnected", map[string]string{"clientId": d.name})
	if _, err := h.broker.State().Registry.SetStatus(d.name, auth.StatusRevoked); err != nil {
		t.Fatal(err)
	}
	// Waiting out the will delay is the point of the test.
	h.record(t, "will message suppressed", map[string]string{"clientId": d.name, "topicName": "will-late/status"})
	expectNoMessage(t, got, obs, "observer/marker-late")
}
