package test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
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
