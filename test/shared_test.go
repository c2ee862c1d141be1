package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestSharedSubscriptionsInIoTCore (issue 17): the iot-core profile refused $share/ filters, which AWS
// IoT Core supports: iot:Subscribe is decided on topicfilter/$share/<ShareName>/<filter>, iot:Receive on
// the topic; each message goes to one member of the group.
func TestSharedSubscriptionsInIoTCore(t *testing.T) {
	h := profileBroker(t, "iot-core", nil)
	h.writePolicy("workers", `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
	  {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/$share/workers/jobs/#"},
	  {"Effect":"Allow","Action":["iot:Receive","iot:Publish"],"Resource":"arn:aws:iot:*:*:topic/jobs/*"}]}`)
	got := make(chan string, 100)
	var members []*paho.Client
	for i := range 2 {
		d := h.createDevice(fmt.Sprintf("worker-%d", i), "workers")
		_, c, _, err := h.v5(t, d, paho.Connect{ClientID: d.name, CleanStart: true}, func(p paho.PublishReceived) {
			got <- p.Packet.Topic
		})
		if err != nil {
			t.Fatal(err)
		}
		if codes := subscribeV5(t, c, "$share/workers/jobs/#"); codes[0] != 1 {
			t.Fatalf("SUBACK %#x for the shared subscription the policy allows", codes[0])
		}
		if codes := subscribeV5(t, c, "$share/others/jobs/#"); codes[0] < 0x80 {
			t.Fatalf("SUBACK %#x for a share name the policy does not allow", codes[0])
		}
		members = append(members, c)
	}
	const n = 20
	for i := range n {
		publishV5(t, members[0], fmt.Sprintf("jobs/%d", i), 1, "x")
	}
	seen := map[string]int{}
	deadline := time.After(waitFor)
	for len(seen) < n {
		select {
		case topic := <-got:
			seen[topic]++
		case <-deadline:
			t.Fatalf("%d of %d messages reached the group", len(seen), n)
		}
	}
	for topic, k := range seen {
		if k != 1 {
			t.Fatalf("%s reached %d members of the group, want one", topic, k)
		}
	}
}
