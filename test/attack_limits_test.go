package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/ggbroker/ggbroker/config"
)

// TestOneDeviceCannotExhaustTheGateway (issue 17, high/medium): in the greengrass profile one
// persistent session could hold 180,000 subscriptions, and a 20,000-level filter cost seconds of CPU
// per SUBSCRIBE and per matching PUBLISH. Both are bounded now: subscriptions per session, levels per
// topic and filter.
func TestOneDeviceCannotExhaustTheGateway(t *testing.T) {
	h := profileBroker(t, "greengrass", nil)
	d := h.createDevice("greedy")
	_, c, _, err := h.v5(t, d, paho.Connect{ClientID: "greedy", CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	granted := 0
	for batch := range 11 {
		filters := make([]string, 100)
		for i := range filters {
			filters[i] = fmt.Sprintf("greedy/%d/%d", batch, i)
		}
		for _, code := range subscribeV5(t, c, filters...) {
			if code < 0x80 {
				granted++
			}
		}
	}
	if granted != 1000 {
		t.Fatalf("%d of 1,100 subscriptions granted, want the 1,000 the greengrass profile allows", granted)
	}
	_, c2, _, err := h.v5(t, h.createDevice("deep"), paho.Connect{ClientID: "deep", CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deep := "deep/" + strings.Repeat("x/", 200) + "#"
	if codes := subscribeV5(t, c2, deep, "deep/"+strings.Repeat("x/", 100)+"#"); codes[0] < 0x80 || codes[1] >= 0x80 {
		t.Fatalf("SUBACK %x for a 202-level and a 102-level filter, want the first refused and the second granted", codes)
	}
}

// TestOfflineQueueIsBoundedInBytes (issue 17, high): 1,000 queued 117 KB messages took +428 MB for one
// session; the queue is bounded in bytes (limits.maxQueuedBytes) as well as in messages.
func TestOfflineQueueIsBoundedInBytes(t *testing.T) {
	h := startBroker(t, func(c *config.Config) { c.Limits.MaxQueuedBytes = 100 * 1024 })
	d := h.createDevice("hoarder")
	c := connectSession(t, h.endpoint(d), "hoarder", false, nil)
	subscribeV3(t, c, "bulk/#", 1)
	c.Disconnect(0)
	pub := h.mustConnectV3(h.createDevice("bulk-pub"))
	payload := strings.Repeat("x", 30*1024)
	for i := range 10 {
		publishV3(t, pub, fmt.Sprintf("bulk/%d", i), 1, false, payload)
	}
	h.waitMetric(`ggbroker_messages_dropped_total{reason="inflight-full"}`, func(v float64) bool { return v >= 7 })
	got := make(chan string, 20)
	connectSession(t, h.endpoint(d), "hoarder", false, got)
	publishV3(t, pub, "bulk/marker", 1, false, "end")
	n := 0
	for done := false; !done; {
		select {
		case m := <-got:
			if done = m == "bulk/marker end"; !done {
				n++
			}
		case <-time.After(waitFor):
			t.Fatal("the marker did not arrive")
		}
	}
	if n != 3 {
		t.Fatalf("%d queued messages of 30 KiB delivered with a 100 KiB bound, want 3", n)
	}
}
