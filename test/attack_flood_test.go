package test

import (
	"net"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
)

// TestHalfOpenFloodIsCapped (issue 17, medium): connections that have not finished TLS and CONNECT
// were not capped, so a flood of idle sockets could take the file descriptors devices need. Past
// limits.maxPendingConnections new sockets are closed at once and counted; a connected device is not
// affected, and once the flood ends devices connect again. Refusals at limits.maxConnections are
// logged and counted too.
func TestHalfOpenFloodIsCapped(t *testing.T) {
	h := startBroker(t, func(c *config.Config) {
		c.Limits.MaxPendingConnections = 4
		c.Limits.MaxConnections = 2
	})
	d := h.createDevice("flood-dev")
	dc := h.mustConnectV3(d)

	var idle []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", h.addr())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	h.waitMetric(`ggbroker_connect_refusals_total{reason="TOO_MANY_PENDING"}`, func(float64) bool {
		c, err := net.Dial("tcp", h.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(waitFor))
		_, err = c.Read(make([]byte, 1)) // closed at once, not after the handshake timeout
		return err != nil && !isTimeout(err)
	})
	if !dc.IsConnectionOpen() {
		t.Fatal("a connected device was affected by the flood")
	}
	for _, c := range idle {
		c.Close()
	}
	// The flood's places are given back; a second device connects (2 of limits.maxConnections).
	second := h.createDevice("flood-dev2")
	var c2 pahov3.Client
	deadline := time.Now().Add(waitFor)
	for {
		var err error
		if c2, err = h.connectV3(second, "flood-dev2"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a device could not connect after the flood ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c2.Disconnect(0)
	// A third is one past limits.maxConnections: refused, logged and counted.
	if _, err := h.connectV3(h.createDevice("flood-dev3"), "flood-dev3"); err == nil {
		t.Fatal("a connection past limits.maxConnections was accepted")
	}
	h.waitMetric(`ggbroker_connect_refusals_total{reason="SERVER_BUSY"}`, func(v float64) bool { return v >= 1 })
	h.record(t, "connection refused", map[string]string{"reason": "SERVER_BUSY"})
}
