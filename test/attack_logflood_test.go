package test

import (
	"testing"
)

// TestDeniedDeliveriesDoNotFloodTheLog (issue 17, medium): a subscriber denied iot:Receive on a busy
// topic wrote one ~740-byte record per message (220 MB in 3 s). Identical denials are now one record a
// second, and every one is still counted in the metrics.
func TestDeniedDeliveriesDoNotFloodTheLog(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("no-receive", `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Action":["iot:Connect","iot:Subscribe"],"Resource":"*"},
	  {"Effect":"Deny","Action":"iot:Receive","Resource":"arn:aws:iot:*:*:topic/busy/*"}]}`)
	sub := h.mustConnectV3(h.createDevice("flooded", "no-receive"))
	subscribeV3(t, sub, "busy/#", 0)
	pub := h.mustConnectV3(h.createDevice("busy-pub"))
	const n = 300
	for range n {
		publishV3(t, pub, "busy/a", 0, false, "x")
	}
	h.waitMetric(`ggbroker_policy_decisions_total{action="iot:Receive",result="denied"}`, func(v float64) bool { return v >= n })
	records := 0
	for _, e := range h.logs.FilterMessage("not authorized").All() {
		if e.ContextMap()["clientId"] == "flooded" {
			records++
		}
	}
	// The run spans a few seconds at most on a slow machine: one record at its start, one per second after.
	if records < 1 || records > 10 {
		t.Fatalf("%d denial records for %d identical denials", records, n)
	}
}
