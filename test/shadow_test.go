package test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// The Device Shadow service end to end: the spec's acceptance cases (reference/services/shadow.md §11)
// against the real broker, with paho.mqtt.golang (MQTT 3.1.1) and paho.golang (MQTT 5) over mutual TLS.

// shadowMsg is one message a shadow client received.
type shadowMsg struct {
	topic string
	body  []byte
}

// shadowClient is a device connected to the broker and subscribed to its shadows' answers the way the
// SDK v2 clients subscribe: $aws/things/T/shadow/+/+ (get/accepted, update/delta ...) and the same for
// named shadows; never to the request topics themselves.
type shadowClient struct {
	t     testing.TB
	thing string
	pub   func(topic, payload string)
	got   chan shadowMsg
	// pubQoS0 publishes without waiting (MQTT 3.1.1 clients only).
	pubQoS0 func(topic, payload string)
}

func shadowFilters(thing string) []string {
	return []string{"$aws/things/" + thing + "/shadow/+/+", "$aws/things/" + thing + "/shadow/name/+/+/+"}
}

// shadowV3 connects d over MQTT 3.1.1 with clientID and subscribes to the shadow answers of thing.
func (h *harness) shadowV3(d *device, clientID, thing string) *shadowClient {
	h.t.Helper()
	c, err := h.connectV3(d, clientID)
	if err != nil {
		h.t.Fatalf("connect %s: %v", clientID, err)
	}
	sc := &shadowClient{t: h.t, thing: thing, got: make(chan shadowMsg, 1000)}
	for _, f := range shadowFilters(thing) {
		tok := c.Subscribe(f, 1, func(_ pahov3.Client, m pahov3.Message) { sc.got <- shadowMsg{m.Topic(), m.Payload()} })
		if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			h.t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}
	sc.pub = func(topic, payload string) { publishV3(h.t, c, topic, 1, false, payload) }
	sc.pubQoS0 = func(topic, payload string) { c.Publish(topic, 0, false, payload) }
	return sc
}

// shadowV5 is shadowV3 over MQTT 5.
func (h *harness) shadowV5(d *device, clientID, thing string) *shadowClient {
	h.t.Helper()
	sc := &shadowClient{t: h.t, thing: thing, got: make(chan shadowMsg, 1000)}
	_, c, err := h.connectV5(d, clientID, func(p paho.PublishReceived) {
		sc.got <- shadowMsg{p.Packet.Topic, p.Packet.Payload}
	})
	if err != nil {
		h.t.Fatalf("connect %s: %v", clientID, err)
	}
	for _, rc := range subscribeV5(h.t, c, shadowFilters(thing)...) {
		if rc > 2 {
			h.t.Fatalf("subscribe refused: %#x", rc)
		}
	}
	sc.pub = func(topic, payload string) {
		if rc := publishV5(h.t, c, topic, 1, payload); rc != 0 {
			h.t.Fatalf("publish %s: PUBACK %#x", topic, rc)
		}
	}
	return sc
}

// await waits for one message on each of topics, in any order, and returns them by topic. A message on
// a topic in forbidden fails the test; others are skipped.
func (c *shadowClient) await(topics []string, forbidden []string) map[string]map[string]any {
	c.t.Helper()
	out := map[string]map[string]any{}
	deadline := time.After(waitFor)
	for len(out) < len(topics) {
		select {
		case m := <-c.got:
			wanted := false
			for _, want := range topics {
				if _, seen := out[want]; m.topic == want && !seen {
					var doc map[string]any
					if err := json.Unmarshal(m.body, &doc); err != nil {
						c.t.Fatalf("%s: not a JSON object: %s", m.topic, m.body)
					}
					out[want], wanted = doc, true
				}
			}
			for _, f := range forbidden {
				if m.topic == f && !wanted {
					c.t.Fatalf("unexpected message on %s: %s", m.topic, m.body)
				}
			}
		case <-deadline:
			c.t.Fatalf("waited for %v, got %v", topics, keysOf(out))
		}
	}
	return out
}

func keysOf(m map[string]map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// nothingMore checks that no message on the forbidden topics arrives before the answer to a marker get
// on a named shadow. The service answers one connection's requests in order, so whatever an earlier
// request would have caused is sent before the marker's answer.
func (c *shadowClient) nothingMore(forbidden ...string) {
	c.t.Helper()
	marker := "$aws/things/" + c.thing + "/shadow/name/marker"
	c.pub(marker+"/get", `{"clientToken":"marker"}`)
	c.await([]string{marker + "/get/rejected"}, forbidden)
}

// shadowStep is one request of an acceptance case and what must come back. Topics use P for the classic
// shadow's prefix and Pn for the named shadow "cfg"'s.
type shadowStep struct {
	topic, payload string
	// want maps each answer topic that must arrive to dotted paths in it and their JSON ("-": absent).
	want map[string]map[string]string
	// not lists answer topics that must not arrive.
	not []string
}

func expandTopic(s, thing string) string {
	s = strings.Replace(s, "Pn", "$aws/things/"+thing+"/shadow/name/cfg", 1)
	return strings.Replace(s, "P", "$aws/things/"+thing+"/shadow", 1)
}

func (c *shadowClient) run(steps []shadowStep) {
	c.t.Helper()
	for i, st := range steps {
		var topics, not []string
		for tp := range st.want {
			topics = append(topics, expandTopic(tp, c.thing))
		}
		for _, tp := range st.not {
			not = append(not, expandTopic(tp, c.thing))
		}
		payload := strings.ReplaceAll(st.payload, "$THING", c.thing)
		c.pub(expandTopic(st.topic, c.thing), payload)
		got := c.await(topics, not)
		for tp, paths := range st.want {
			doc := got[expandTopic(tp, c.thing)]
			for path, want := range paths {
				v, ok := jsonPath(doc, path)
				if want == "-" {
					if ok {
						c.t.Fatalf("step %d (%s %s): %s has %s = %s", i, st.topic, st.payload, tp, path, mustJSON(v))
					}
					continue
				}
				if !ok {
					c.t.Fatalf("step %d (%s %s): %s has no %s: %v", i, st.topic, st.payload, tp, path, doc)
				}
				want = strings.ReplaceAll(want, "$THING", c.thing)
				if got := mustJSON(v); got != canonJSON(c.t, want) {
					c.t.Fatalf("step %d (%s %s): %s %s = %s, want %s", i, st.topic, st.payload, tp, path, got, want)
				}
			}
		}
		if len(not) > 0 {
			c.nothingMore(not...)
		}
	}
}

func jsonPath(v any, path string) (any, bool) {
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func canonJSON(t testing.TB, s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON in the test: %s", s)
	}
	return mustJSON(v)
}

// TestShadowAcceptance: the spec's acceptance cases 1-27 and 30, table-driven, over MQTT 3.1.1 and 5.
func TestShadowAcceptance(t *testing.T) {
	long := strings.Repeat("t", 64)
	cases := []struct {
		name  string
		steps []shadowStep
	}{
		{"1-7, 25 classic lifecycle", []shadowStep{
			{topic: "P/get", payload: `{"clientToken":"a"}`, want: map[string]map[string]string{
				"P/get/rejected": {"code": "404", "message": `"No shadow exists with name: '$THING'"`, "clientToken": `"a"`}}},
			{topic: "P/get", payload: ``, want: map[string]map[string]string{"P/get/rejected": {"code": "404", "clientToken": "-"}}},
			{topic: "P/update", payload: `{"state":{"reported":{"c":"green"}},"clientToken":"b"}`, want: map[string]map[string]string{
				"P/update/accepted":  {"state": `{"reported":{"c":"green"}}`, "version": "1", "clientToken": `"b"`},
				"P/update/documents": {"previous": "null", "current.version": "1"}},
				not: []string{"P/update/delta"}},
			{topic: "P/update", payload: `{"state":{"desired":{"c":"red"}}}`, want: map[string]map[string]string{
				"P/update/accepted":  {"version": "2"},
				"P/update/delta":     {"state": `{"c":"red"}`, "version": "2"},
				"P/update/documents": {"previous.version": "1", "current.version": "2"}}},
			{topic: "P/update", payload: `{"state":{"reported":{"s":"x"}}}`, want: map[string]map[string]string{
				"P/update/accepted": {"version": "3"},
				"P/update/delta":    {"state": `{"c":"red"}`, "version": "3"}}},
			{topic: "P/update", payload: `{"state":{"reported":{"c":"red"}}}`, want: map[string]map[string]string{
				"P/update/accepted": {"version": "4"}}, not: []string{"P/update/delta"}},
			{topic: "P/get", payload: `{"clientToken":"g"}`, want: map[string]map[string]string{"P/get/accepted": {
				"state.desired": `{"c":"red"}`, "state.reported": `{"c":"red","s":"x"}`, "state.delta": "-",
				"version": "4", "clientToken": `"g"`}}},
			{topic: "P/delete", payload: `{"clientToken":"d"}`, want: map[string]map[string]string{"P/delete/accepted": {"version": "4", "clientToken": `"d"`}}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/rejected": {"code": "404"}}},
			{topic: "P/update", payload: `{"state":{"reported":{"c":"red"}}}`, want: map[string]map[string]string{"P/update/accepted": {"version": "5"}}},
		}},
		{"8 nested delta", []shadowStep{
			{topic: "P/update", payload: `{"state":{"desired":{"l":{"c":{"r":1,"g":2}}},"reported":{"l":{"c":{"r":1,"g":0}}}}}`,
				want: map[string]map[string]string{"P/update/delta": {"state": `{"l":{"c":{"g":2}}}`}}},
		}},
		{"9 arrays are values", []shadowStep{
			{topic: "P/update", payload: `{"state":{"desired":{"a":[1,2]},"reported":{"a":[1]}}}`,
				want: map[string]map[string]string{"P/update/delta": {"state": `{"a":[1,2]}`}}},
			{topic: "P/update", payload: `{"state":{"desired":{"a":[3]}}}`, want: map[string]map[string]string{"P/update/accepted": {}}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"state.desired.a": `[3]`}}},
		}},
		{"10 numbers by value", []shadowStep{
			{topic: "P/update", payload: `{"state":{"desired":{"n":1},"reported":{"n":1.0}}}`,
				want: map[string]map[string]string{"P/update/accepted": {}}, not: []string{"P/update/delta"}},
		}},
		{"11-13 nulls", []shadowStep{
			{topic: "P/update", payload: `{"state":{"desired":{"c":"red","k":1}}}`, want: map[string]map[string]string{"P/update/accepted": {}}},
			{topic: "P/update", payload: `{"state":{"desired":{"c":null}}}`, want: map[string]map[string]string{
				"P/update/accepted": {"state.desired": `{"c":null}`}}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"state.desired": `{"k":1}`}}},
			{topic: "P/update", payload: `{"state":{"desired":null}}`, want: map[string]map[string]string{"P/update/accepted": {}}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"state.desired": "-"}}},
			{topic: "P/update", payload: `{"state":null}`, want: map[string]map[string]string{"P/update/accepted": {"version": "4"}}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"version": "4", "state": `{}`}}},
		}},
		{"14, 16-20 refusals", []shadowStep{
			{topic: "P/update", payload: `{"state":{"desired":{"x":[null,"a"]}}}`, want: map[string]map[string]string{"P/update/rejected": {"code": "400"}}},
			{topic: "P/update", payload: `{"state":{},"clientToken":"` + long + `x"}`, want: map[string]map[string]string{
				"P/update/rejected": {"code": "400", "message": `"Invalid clientToken"`}}},
			{topic: "P/update", payload: `{"state":{},"clientToken":"` + long + `"}`, want: map[string]map[string]string{
				"P/update/accepted": {"clientToken": `"` + long + `"`}}},
			{topic: "P/update", payload: `not json`, want: map[string]map[string]string{"P/update/rejected": {"code": "400", "message": `"Invalid JSON"`}}},
			{topic: "P/update", payload: `{"clientToken":"x"}`, want: map[string]map[string]string{
				"P/update/rejected": {"code": "400", "message": `"Missing required node: state"`, "clientToken": `"x"`}}},
			{topic: "P/update", payload: `{"state":"abc"}`, want: map[string]map[string]string{"P/update/rejected": {"message": `"State node must be an object"`}}},
			{topic: "P/update", payload: `{"state":{"desired":5}}`, want: map[string]map[string]string{"P/update/rejected": {"message": `"Desired node must be an object"`}}},
			{topic: "P/update", payload: `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":1}}}}}}}`, want: map[string]map[string]string{"P/update/accepted": {}}},
			{topic: "P/update", payload: `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}}`, want: map[string]map[string]string{
				"P/update/rejected": {"code": "400", "message": `"JSON contains too many levels of nesting; maximum is 6"`}}},
		}},
		{"15 optimistic locking", append(repeatStep(9, shadowStep{topic: "P/update", payload: `{"state":{"reported":{"n":1}}}`,
			want: map[string]map[string]string{"P/update/accepted": {}}}),
			shadowStep{topic: "P/update", payload: `{"state":{"reported":{"n":1}}}`, want: map[string]map[string]string{"P/update/accepted": {"version": "10"}}},
			shadowStep{topic: "P/update", payload: `{"state":{"reported":{"n":2}},"version":9,"clientToken":"v"}`, want: map[string]map[string]string{
				"P/update/rejected": {"code": "409", "message": `"Version conflict"`, "clientToken": `"v"`}}},
			shadowStep{topic: "P/update", payload: `{"state":{"reported":{"n":2}},"version":10}`, want: map[string]map[string]string{"P/update/accepted": {"version": "11"}}},
		)},
		{"21 size limit", []shadowStep{
			{topic: "P/update", payload: `{"state":{"reported":{"a":"` + strings.Repeat("x", 8000) + `"}}}`, want: map[string]map[string]string{"P/update/accepted": {}}},
			{topic: "P/update", payload: `{"state":{"desired":{"b":"` + strings.Repeat("y", 300) + `"}}}`, want: map[string]map[string]string{
				"P/update/rejected": {"code": "413", "message": `"The payload exceeds the maximum size allowed"`}}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"version": "1", "state.desired": "-"}}},
		}},
		{"22, 23 extra fields ignored", []shadowStep{
			{topic: "P/update", payload: `{"state":{"reported":{"t":1},"delta":{"z":1}},"thingName":"$THING"}`, want: map[string]map[string]string{"P/update/accepted": {}}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"state": `{"reported":{"t":1}}`, "thingName": "-"}}},
		}},
		{"24 named shadow", []shadowStep{
			{topic: "Pn/get", payload: `{"clientToken":"n"}`, want: map[string]map[string]string{"Pn/get/rejected": {"code": "404", "message": `"No shadow exists with name: 'cfg'"`}}},
			{topic: "Pn/update", payload: `{"state":{"desired":{"a":1}}}`, want: map[string]map[string]string{
				"Pn/update/accepted": {"version": "1"}, "Pn/update/delta": {"state": `{"a":1}`}},
				not: []string{"P/update/accepted", "P/update/delta", "P/update/documents"}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/rejected": {"code": "404"}}},
		}},
		{"26 delete missing", []shadowStep{
			{topic: "P/delete", payload: `{"clientToken":"x"}`, want: map[string]map[string]string{"P/delete/rejected": {"code": "404", "clientToken": `"x"`}}},
		}},
		{"27 a response topic is ordinary traffic", []shadowStep{
			// The client's own publish to update/accepted comes back to it as an ordinary message.
			{topic: "P/update/accepted", payload: `{"state":{"reported":{"x":1}}}`, want: map[string]map[string]string{"P/update/accepted": {"state": `{"reported":{"x":1}}`, "version": "-"}},
				not: []string{"P/update/documents", "P/update/rejected"}},
			{topic: "P/get", want: map[string]map[string]string{"P/get/rejected": {"code": "404"}}},
		}},
		{"30 SDK v2 correlation", []shadowStep{
			{topic: "P/get", payload: `{"clientToken":"u1"}`, want: map[string]map[string]string{"P/get/rejected": {"clientToken": `"u1"`}},
				not: []string{"P/get/rejected", "P/get/accepted"}},
		}},
	}
	h := startBroker(t, nil)
	for _, proto := range []string{"v3", "v5"} {
		for i, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				thing := fmt.Sprintf("shadow-%s-%d", proto, i)
				d := h.createDevice(thing)
				var c *shadowClient
				if proto == "v3" {
					c = h.shadowV3(d, thing, thing)
				} else {
					c = h.shadowV5(d, thing, thing)
				}
				c.t = t
				c.run(tc.steps)
			})
		}
	}
	rec := h.record(t, "UpdateThingShadow", map[string]string{"status": "Success", "protocol": "MQTT", "deviceShadowName": "shadow-v3-0"})
	if rec["topicName"] != "$aws/things/shadow-v3-0/shadow/update" || rec["clientId"] != "shadow-v3-0" || rec["eventType"] != "UpdateThingShadow" {
		t.Fatalf("record %v", rec)
	}
}

func repeatStep(n int, s shadowStep) []shadowStep {
	out := make([]shadowStep, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// anyShadowPolicy lets a device connect with any client ID and use every thing's shadow topics.
const anyShadowPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": "arn:aws:iot:*:*:topic/$aws/things/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:*:*:topicfilter/$aws/things/*"}
  ]
}`

// TestShadowUnregisteredThing (28): the shadow of a thing the registry does not know works as any other.
func TestShadowUnregisteredThing(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("any-shadow", anyShadowPolicy)
	c := h.shadowV5(h.createDevice("app", "any-shadow"), "app", "ghost-thing")
	c.run([]shadowStep{
		{topic: "P/update", payload: `{"state":{"desired":{"on":true}},"clientToken":"g"}`, want: map[string]map[string]string{
			"P/update/accepted": {"version": "1", "clientToken": `"g"`}, "P/update/delta": {"state": `{"on":true}`}}},
		{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"state.delta": `{"on":true}`}}},
	})
}

// TestShadowDeniedUpdate (29): a device whose policy lacks iot:Publish on update is refused by the
// broker; the shadow is unchanged and nothing is published on update/accepted.
func TestShadowDeniedUpdate(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("read-only-shadow", `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
    {"Effect": "Allow", "Action": "iot:Publish", "Resource": "arn:aws:iot:*:*:topic/$aws/things/ro/shadow/get"},
    {"Effect": "Allow", "Action": "iot:Receive", "Resource": "arn:aws:iot:*:*:topic/$aws/things/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:*:*:topicfilter/$aws/things/*"}
  ]
}`)
	h.writePolicy("any-shadow", anyShadowPolicy)
	watcher := h.shadowV3(h.createDevice("watcher", "any-shadow"), "watcher", "ro")
	d := h.createDevice("ro", "read-only-shadow")
	var got []shadowMsg
	var mu sync.Mutex
	_, c, err := h.connectV5(d, "ro", func(p paho.PublishReceived) {
		mu.Lock()
		got = append(got, shadowMsg{p.Packet.Topic, p.Packet.Payload})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	subscribeV5(t, c, shadowFilters("ro")...)
	if rc := publishV5(t, c, "$aws/things/ro/shadow/update", 1, `{"state":{"reported":{"x":1}}}`); rc != 0x87 {
		t.Fatalf("denied update got PUBACK %#x, want 0x87", rc)
	}
	if rc := publishV5(t, c, "$aws/things/ro/shadow/get", 1, `{"clientToken":"after"}`); rc != 0 {
		t.Fatalf("get got PUBACK %#x", rc)
	}
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].topic != "$aws/things/ro/shadow/get/rejected" || !strings.Contains(string(got[0].body), `"code":404`) {
		t.Fatalf("after a denied update the device received %v, want only the get's 404", got)
	}
	watcher.nothingMore("$aws/things/ro/shadow/update/accepted", "$aws/things/ro/shadow/update/documents")
}

// TestShadowConcurrentDevices: 50 devices update their own shadows at once; every device sees its
// versions 1..n in order and nothing is lost.
func TestShadowConcurrentDevices(t *testing.T) {
	h := startBroker(t, nil)
	const devices, updates = 50, 5
	clients := make([]*shadowClient, devices)
	for i := range clients {
		name := fmt.Sprintf("crowd-%02d", i)
		clients[i] = h.shadowV3(h.createDevice(name), name, name)
	}
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for _, c := range clients {
		wg.Add(1)
		go func(c *shadowClient) {
			defer wg.Done()
			P := "$aws/things/" + c.thing + "/shadow"
			for v := 1; v <= updates; v++ {
				c.pub(P+"/update", fmt.Sprintf(`{"state":{"reported":{"n%d":%d}},"clientToken":"%d"}`, v, v, v))
				select {
				case m := <-waitTopic(c.got, P+"/update/accepted"):
					var doc struct {
						Version     int    `json:"version"`
						ClientToken string `json:"clientToken"`
					}
					_ = json.Unmarshal(m.body, &doc)
					if doc.Version != v || doc.ClientToken != fmt.Sprint(v) {
						errs <- fmt.Errorf("%s: update %d answered %s", c.thing, v, m.body)
						return
					}
				case <-time.After(waitFor):
					errs <- fmt.Errorf("%s: update %d not answered", c.thing, v)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := clients[devices-1]
	c.t = t
	c.run([]shadowStep{{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {
		"version": fmt.Sprint(updates), "state.reported.n1": "1", "state.reported.n5": "5"}}}})
}

// waitTopic forwards the first message on topic, skipping others.
func waitTopic(got <-chan shadowMsg, topic string) <-chan shadowMsg {
	out := make(chan shadowMsg, 1)
	go func() {
		deadline := time.After(waitFor)
		for {
			select {
			case m := <-got:
				if m.topic == topic {
					out <- m
					return
				}
			case <-deadline:
				return
			}
		}
	}()
	return out
}

// TestShadowOneShadowTwoConnections: two connections update the same shadow concurrently; the
// versions each sees on update/accepted (its own and the other's) strictly increase, update/documents
// tells a gapless history, and no update is lost.
func TestShadowOneShadowTwoConnections(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("any-shadow", anyShadowPolicy)
	const each = 25
	conns := []*shadowClient{h.shadowV3(h.createDevice("twin-a", "any-shadow"), "twin-a", "twin"),
		h.shadowV5(h.createDevice("twin-b", "any-shadow"), "twin-b", "twin")}
	P := "$aws/things/twin/shadow"
	var wg sync.WaitGroup
	versions := make([][]int, len(conns))
	docs := make([][2]int, 0, 2*each)
	var docsMu sync.Mutex
	for i, c := range conns {
		wg.Add(1)
		go func(i int, c *shadowClient) {
			defer wg.Done()
			key := string(rune('a' + i))
			for n := 1; n <= each; n++ {
				token := fmt.Sprintf("%s-%d", key, n)
				c.pub(P+"/update", fmt.Sprintf(`{"state":{"reported":{"%s":%d}},"clientToken":"%s"}`, key, n, token))
				deadline := time.After(waitFor)
			wait:
				for {
					select {
					case m := <-c.got:
						var doc struct {
							Version     int    `json:"version"`
							ClientToken string `json:"clientToken"`
							Previous    *struct {
								Version int `json:"version"`
							} `json:"previous"`
							Current struct {
								Version int `json:"version"`
							} `json:"current"`
						}
						_ = json.Unmarshal(m.body, &doc)
						switch m.topic {
						case P + "/update/accepted":
							// Both connections' update/accepted reach every subscriber, as at AWS.
							versions[i] = append(versions[i], doc.Version)
							if doc.ClientToken == token {
								break wait
							}
						case P + "/update/documents":
							if i == 0 { // one connection's view of the history
								prev := 0
								if doc.Previous != nil {
									prev = doc.Previous.Version
								}
								docsMu.Lock()
								docs = append(docs, [2]int{prev, doc.Current.Version})
								docsMu.Unlock()
							}
						}
					case <-deadline:
						t.Errorf("connection %d: update %d not answered", i, n)
						return
					}
				}
			}
		}(i, c)
	}
	wg.Wait()
	for i, vs := range versions {
		for j := 1; j < len(vs); j++ {
			if vs[j] <= vs[j-1] {
				t.Fatalf("connection %d saw versions %v: not strictly increasing", i, vs)
			}
		}
	}
	getter := conns[1] // not conns[0], whose documents are counted below
	getter.t = t
	getter.run([]shadowStep{{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {
		"version": fmt.Sprint(2 * each), "state.reported": fmt.Sprintf(`{"a":%d,"b":%d}`, each, each)}}}})
	c := conns[0]
	// Connection a drains the documents the other's last updates caused.
	deadline := time.After(waitFor)
	for {
		docsMu.Lock()
		n := len(docs)
		docsMu.Unlock()
		if n >= 2*each {
			break
		}
		select {
		case m := <-c.got:
			if m.topic == P+"/update/documents" {
				var doc struct {
					Previous *struct{ Version int } `json:"previous"`
					Current  struct{ Version int }  `json:"current"`
				}
				_ = json.Unmarshal(m.body, &doc)
				prev := 0
				if doc.Previous != nil {
					prev = doc.Previous.Version
				}
				docsMu.Lock()
				docs = append(docs, [2]int{prev, doc.Current.Version})
				docsMu.Unlock()
			}
		case <-deadline:
			t.Fatalf("%d update/documents received, want %d", n, 2*each)
		}
	}
	for i, d := range docs {
		if d[1] != i+1 || d[0] != i {
			t.Fatalf("update/documents %d: previous %d current %d; history %v", i, d[0], d[1], docs)
		}
	}
}

// TestShadowDurable: shadows survive a broker restart on the same state directory, and their versions
// carry on.
func TestShadowDurable(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("keeper")
	c := h.shadowV3(d, "keeper", "keeper")
	c.run([]shadowStep{
		{topic: "P/update", payload: `{"state":{"desired":{"mode":"eco"},"reported":{"mode":"off"}}}`, want: map[string]map[string]string{"P/update/accepted": {"version": "1"}}},
		{topic: "Pn/update", payload: `{"state":{"reported":{"fw":"1.2"}}}`, want: map[string]map[string]string{"Pn/update/accepted": {"version": "1"}}},
		{topic: "Pn/delete", want: map[string]map[string]string{"Pn/delete/accepted": {"version": "1"}}},
	})
	h.stop()
	h2 := startWith(t, h.cfg)
	c2 := h2.shadowV5(d, "keeper", "keeper")
	c2.run([]shadowStep{
		{topic: "P/get", want: map[string]map[string]string{"P/get/accepted": {"version": "1", "state.delta": `{"mode":"eco"}`}}},
		{topic: "P/update", payload: `{"state":{"reported":{"mode":"eco"}}}`, want: map[string]map[string]string{"P/update/accepted": {"version": "2"}}},
		{topic: "Pn/get", want: map[string]map[string]string{"Pn/get/rejected": {"code": "404"}}},
		{topic: "Pn/update", payload: `{"state":{"reported":{"fw":"1.3"}}}`, want: map[string]map[string]string{"Pn/update/accepted": {"version": "2"}}},
	})
}

// TestShadowPubackSIGKILL: the PUBACK of a QoS 1 update request nobody subscribes to (the request is
// consumed, not written to the publish log) comes once the update is stored: the real binary, killed
// with SIGKILL right after the last PUBACK, has every acknowledged update after its restart. No
// client subscribes to the answers, so nothing but the PUBACK says the update was done.
func TestShadowPubackSIGKILL(t *testing.T) {
	dir := t.TempDir()
	createCrossDevice(t, dir, "kill-lamp", "--out", "devices/kill-lamp")
	s := serve(t, dir)
	P := "$aws/things/kill-lamp/shadow"
	c := connectSession(t, fileEndpoint(t, s.mqtt, filepath.Join(dir, "devices", "kill-lamp")), "kill-lamp", true, nil)
	const n = 50
	for i := 1; i <= n; i++ {
		publishV3(t, c, P+"/update", 1, false, fmt.Sprintf(`{"state":{"reported":{"n":%d}}}`, i))
	}
	if err := s.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown, no flush
		t.Fatal(err)
	}
	<-s.stopped
	s.stopped <- nil // for serve's cleanup

	s2 := serve(t, dir)
	got := make(chan string, 10)
	c2 := connectSession(t, fileEndpoint(t, s2.mqtt, filepath.Join(dir, "devices", "kill-lamp")), "kill-lamp", true, got)
	if tok := c2.Subscribe(P+"/get/accepted", 1, nil); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	publishV3(t, c2, P+"/get", 1, false, `{}`)
	select {
	case m := <-got:
		var doc struct {
			State struct {
				Reported struct{ N int } `json:"reported"`
			} `json:"state"`
			Version int `json:"version"`
		}
		body, _ := strings.CutPrefix(m, P+"/get/accepted ")
		if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Version != n || doc.State.Reported.N != n {
			t.Fatalf("after SIGKILL the shadow is %s (%v), want version %d with n %d: an acknowledged update was lost", m, err, n, n)
		}
	case <-time.After(waitFor):
		t.Fatal("no get/accepted after the restart")
	}
}

// TestShadowHTTPSDevice (32): a device calls UpdateThingShadow with its certificate on the device
// HTTPS listener; it gets the raw accepted document and MQTT subscribers get the delta, the documents
// and (as at AWS, where the console's edits show on update/accepted) the accepted document.
func TestShadowHTTPSDevice(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("dev1")
	sub := h.shadowV3(d, "dev1", "dev1")
	hc := h.discoveryClient(d)
	base := "https://" + h.broker.DiscoveryAddr().String()
	call := func(method, path, body string) (int, string, string) {
		req, err := http.NewRequestWithContext(context.Background(), method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), string(b)
	}
	code, _, body := call("POST", "/things/dev1/shadow?name=cfg", `{"state":{"desired":{"a":1}}}`)
	if code != 200 || !strings.Contains(body, `"state":{"desired":{"a":1}}`) || !strings.Contains(body, `"version":1`) {
		t.Fatalf("UpdateThingShadow: %d %s", code, body)
	}
	Pn := "$aws/things/dev1/shadow/name/cfg"
	got := sub.await([]string{Pn + "/update/delta", Pn + "/update/documents", Pn + "/update/accepted"}, nil)
	if mustJSON(got[Pn+"/update/delta"]["state"]) != `{"a":1}` || mustJSON(got[Pn+"/update/accepted"]["version"]) != "1" {
		t.Fatalf("MQTT after an HTTP update: %v", got)
	}
	cases := []struct {
		method, path, body string
		code               int
		errType, contains  string
	}{
		{"GET", "/things/dev1/shadow?name=cfg", "", 200, "", `"delta":{"a":1}`},
		{"GET", "/api/things/shadow/ListNamedShadowsForThing/dev1", "", 200, "", `"results":["cfg"]`},
		{"GET", "/things/dev1/shadow", "", 404, "ResourceNotFoundException", `{"message":"No shadow exists with name: 'dev1'"}`},
		{"GET", "/things/dev2/shadow", "", 403, "ForbiddenException", `"Forbidden"`},
		{"POST", "/things/dev1/shadow?name=cfg", `{"state":{},"version":5}`, 409, "ConflictException", `"Version conflict"`},
		{"DELETE", "/things/dev1/shadow?name=cfg", "", 200, "", `"version":1`},
		{"GET", "/things/dev1/shadow?name=cfg", "", 404, "ResourceNotFoundException", ""},
	}
	for _, tc := range cases {
		code, et, body := call(tc.method, tc.path, tc.body)
		if code != tc.code || et != tc.errType || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s: %d %q %s, want %d %q %s", tc.method, tc.path, code, et, body, tc.code, tc.errType, tc.contains)
		}
	}
	h.record(t, "UpdateThingShadow", map[string]string{"protocol": "HTTP", "status": "Success", "deviceShadowName": "dev1", "shadowName": "cfg"})
}

// TestShadowAnswersReachWhom: an application subscribed to a device's shadow topics follows its changes
// on update/accepted, update/documents and update/delta (AWS' device state replica pattern), but the
// device's get answers and rejections reach the device only.
func TestShadowAnswersReachWhom(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("any-shadow", anyShadowPolicy)
	app := h.shadowV3(h.createDevice("app", "any-shadow"), "app", "lamp")
	lamp := h.shadowV5(h.createDevice("lamp"), "lamp", "lamp")
	P := "$aws/things/lamp/shadow"
	lamp.run([]shadowStep{
		{topic: "P/update", payload: `{"state":{"reported":{"on":false}},"clientToken":"l1"}`, want: map[string]map[string]string{"P/update/accepted": {"clientToken": `"l1"`}}},
	})
	got := app.await([]string{P + "/update/accepted", P + "/update/documents"}, nil)
	if mustJSON(got[P+"/update/accepted"]["clientToken"]) != `"l1"` {
		t.Fatalf("app saw %v", got)
	}
	lamp.run([]shadowStep{
		{topic: "P/get", payload: `{"clientToken":"l2"}`, want: map[string]map[string]string{"P/get/accepted": {"clientToken": `"l2"`}}},
		{topic: "P/update", payload: `not json`, want: map[string]map[string]string{"P/update/rejected": {"code": "400"}}},
		{topic: "P/update", payload: `{"state":{"reported":{"on":true}},"clientToken":"l3"}`, want: map[string]map[string]string{"P/update/accepted": {"clientToken": `"l3"`}}},
	})
	got = app.await([]string{P + "/update/accepted"}, []string{P + "/get/accepted", P + "/update/rejected"})
	if mustJSON(got[P+"/update/accepted"]["clientToken"]) != `"l3"` {
		t.Fatalf("app saw %v", got)
	}
}

// TestShadowInFlightLimit (31): a burst of requests on one connection, far faster than updates are
// written to disk, gets 429 for what is over 10 in flight; every request is answered exactly once and
// the accepted versions count up without a gap.
func TestShadowInFlightLimit(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("burst")
	c := h.shadowV3(d, "burst", "burst")
	const n = 200
	pad := strings.Repeat("x", 4000) // each update takes its time to parse, merge and store
	P := "$aws/things/burst/shadow"
	for i := 0; i < n; i++ {
		c.pubQoS0(P+"/update", fmt.Sprintf(`{"state":{"reported":{"i":%d,"pad":"%s"}},"clientToken":"%d"}`, i, pad, i))
	}
	answered := map[string]string{}
	var versions []int
	rejected429 := 0
	deadline := time.After(waitFor)
	for len(answered) < n {
		select {
		case m := <-c.got:
			var doc struct {
				Code        int    `json:"code"`
				Version     int    `json:"version"`
				ClientToken string `json:"clientToken"`
			}
			_ = json.Unmarshal(m.body, &doc)
			switch m.topic {
			case P + "/update/accepted":
				versions = append(versions, doc.Version)
			case P + "/update/rejected":
				if doc.Code != 429 {
					t.Fatalf("rejected %s", m.body)
				}
				rejected429++
			default:
				continue
			}
			if prev, dup := answered[doc.ClientToken]; dup {
				t.Fatalf("request %s answered twice: %s and %s", doc.ClientToken, prev, m.topic)
			}
			answered[doc.ClientToken] = m.topic
		case <-deadline:
			t.Fatalf("%d of %d requests answered", len(answered), n)
		}
	}
	if rejected429 == 0 {
		t.Fatalf("no 429 in a burst of %d requests", n)
	}
	for i, v := range versions {
		if v != i+1 {
			t.Fatalf("accepted versions %v", versions)
		}
	}
	t.Logf("%d accepted, %d refused with 429", len(versions), rejected429)
}

// iotdata calls the iot-data API on the broker's real API listener, SigV4-signed for "iotdata" with
// the AWS SDK for Go v2's signer and the keys of <stateDir>/credentials. (The SDK's iotdataplane client
// module is not in this build's module cache, so the request is built by hand as botocore's iot-data
// model lays it out.) It returns the status, x-amzn-ErrorType and body.
func (h *harness) iotdata(t *testing.T, method, path, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, h.apiURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := h.apiConfig(t).Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "iotdata", h.cfg.Core.Region, time.Now()); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: waitFor, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.broker.State().CoreCA.Pool(), MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("x-amzn-ErrorType"), string(raw)
}

// TestShadowIotDataAPI: the iot-data API on the real API listener (HTTPS, SigV4 for iotdata), called
// as the account. Publish reaches MQTT subscribers; a Publish to a shadow request topic is a shadow
// request; UpdateThingShadow (32) publishes the same MQTT answers as an MQTT update; errors come in
// AWS' shape; an unsigned request is refused by the listener.
func TestShadowIotDataAPI(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("dev9")
	sub := h.shadowV5(d, "dev9", "dev9")
	_, got := h.observer(t, "plain/#")
	if code, et, body := h.iotdata(t, "POST", "/topics/plain/hello?qos=1", "hi"); code != 200 {
		t.Fatalf("Publish: %d %s %s", code, et, body)
	}
	expectMessage(t, got, "plain/hello hi")

	P := "$aws/things/dev9/shadow"
	Pn := P + "/name/cfg"
	// qos=1: the seam's Host.Publish fails every QoS 0 message for now (it gives each a packet ID;
	// /work/wt/REQUESTS.md), so Publish's default qos=0 answers 500 until that is fixed.
	if code, et, body := h.iotdata(t, "POST", "/topics/"+url.PathEscape(P+"/update")+"?qos=1", `{"state":{"desired":{"x":1}}}`); code != 200 {
		t.Fatalf("Publish to the update topic: %d %s %s", code, et, body)
	}
	m := sub.await([]string{P + "/update/delta", P + "/update/accepted"}, nil)
	if mustJSON(m[P+"/update/delta"]["state"]) != `{"x":1}` {
		t.Fatalf("after an HTTP publish to update: %v", m)
	}
	code, _, body := h.iotdata(t, "POST", "/things/dev9/shadow?name=cfg", `{"state":{"desired":{"a":1}},"clientToken":"h"}`)
	if code != 200 || !strings.Contains(body, `"version":1`) || !strings.Contains(body, `"clientToken":"h"`) {
		t.Fatalf("UpdateThingShadow: %d %s", code, body)
	}
	m = sub.await([]string{Pn + "/update/accepted", Pn + "/update/documents", Pn + "/update/delta"}, nil)
	if mustJSON(m[Pn+"/update/delta"]["state"]) != `{"a":1}` || mustJSON(m[Pn+"/update/documents"]["previous"]) != "null" {
		t.Fatalf("MQTT after UpdateThingShadow: %v", m)
	}
	cases := []struct {
		method, path, body string
		code               int
		errType, contains  string
	}{
		{"GET", "/things/dev9/shadow", "", 200, "", `"delta":{"x":1}`},
		{"GET", "/things/dev9/shadow?name=cfg", "", 200, "", `"desired":{"a":1}`},
		{"GET", "/api/things/shadow/ListNamedShadowsForThing/dev9", "", 200, "", `"results":["cfg"]`},
		{"GET", "/things/nobody/shadow", "", 404, "ResourceNotFoundException", `{"message":"No shadow exists with name: 'nobody'"}`},
		{"POST", "/things/dev9/shadow", `{"state":"x"}`, 400, "InvalidRequestException", `{"message":"State node must be an object"}`},
		{"POST", "/things/dev9/shadow?name=cfg", `{"state":{},"version":9}`, 409, "ConflictException", `{"message":"Version conflict"}`},
		{"POST", "/things/dev9/shadow", `{"state":{"reported":{"a":"` + strings.Repeat("x", 8200) + `"}}}`, 413, "RequestEntityTooLargeException", `"The payload exceeds the maximum size allowed"`},
		{"DELETE", "/things/dev9/shadow?name=cfg", "", 200, "", `"version":1`},
		{"GET", "/api/things/shadow/ListNamedShadowsForThing/dev9", "", 200, "", `"results":[]`},
	}
	for _, tc := range cases {
		code, et, body := h.iotdata(t, tc.method, tc.path, tc.body)
		if code != tc.code || et != tc.errType || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s: %d %q %s, want %d %q %s", tc.method, tc.path, code, et, body, tc.code, tc.errType, tc.contains)
		}
	}
	sub.await([]string{Pn + "/delete/accepted"}, nil)

	client := &http.Client{Timeout: waitFor, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.broker.State().CoreCA.Pool(), MinVersion: tls.VersionTLS12}}}
	resp, err := client.Get(h.apiURL() + "/things/dev9/shadow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatal("an unsigned GetThingShadow was answered")
	}
	h.record(t, "UpdateThingShadow", map[string]string{"protocol": "HTTP", "status": "Success", "deviceShadowName": "dev9", "shadowName": "cfg"})
}
