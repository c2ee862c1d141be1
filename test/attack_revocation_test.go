package test

import (
	"testing"
	"time"

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
