package test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/state"
)

// writePolicy writes an AWS IoT policy document into the broker's policy directory.
func (h *harness) writePolicy(name, doc string) {
	h.t.Helper()
	if !json.Valid([]byte(doc)) {
		h.t.Fatalf("test policy %s is not JSON", name)
	}
	if err := certs.WriteFileAtomic(state.PolicyPath(h.broker.State().PolicyDir, name), []byte(doc), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// reloads counts "policies reloaded" records, to wait for the next one.
func (h *harness) reloads() int { return h.logs.FilterMessage("policies reloaded").Len() }

func (h *harness) waitReload(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for h.reloads() <= before {
		if time.Now().After(deadline) {
			t.Fatal("policies were not reloaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// observer is a device that may subscribe to and receive everything outside $aws (crossDevicePolicy).
func (h *harness) observer(t *testing.T, filter string) (pahov3.Client, <-chan string) {
	t.Helper()
	c := h.mustConnectV3(h.createDevice("observer"))
	return c, subscribeV3(t, c, filter, 1)
}

const sensorPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
    {"Sid": "OwnTopics", "Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": "arn:aws:iot:us-east-1:123456789012:topic/sensors/${iot:ClientId}/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:us-east-1:123456789012:topicfilter/sensors/${iot:ClientId}/*"}
  ]
}`

// TestDefaultDevicePolicyOwnTopics: a device under the default device policy, as `ggbroker device
// create NAME` makes it, publishes (retained too), subscribes and receives on its own NAME/... topics,
// and is refused on another thing's topics, on topics of no thing and on # (issue 15: the default
// passes the audit's overly-permissive check because of exactly this).
func TestDefaultDevicePolicyOwnTopics(t *testing.T) {
	t.Parallel()
	h := startBroker(t, nil)
	d := h.createDefaultDevice("own-1")
	other := h.createDefaultDevice("own-2")
	got := make(chan string, 10)
	_, c, err := h.connectV5(d, d.name, func(p paho.PublishReceived) { got <- p.Packet.Topic + " " + string(p.Packet.Payload) })
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	codes := subscribeV5(t, c, "own-1/#", "own-2/#", "#", "sensors/#")
	if want := []byte{1, 0x87, 0x87, 0x87}; string(codes) != string(want) {
		t.Fatalf("SUBACK %v, want %v (own topics granted; another's, # and a shared tree refused)", codes, want)
	}
	if rc := publishV5(t, c, "own-1/temperature", 1, "21.5"); rc != 0 {
		t.Fatalf("publish on its own topic: PUBACK %#x", rc)
	}
	expectMessage(t, got, "own-1/temperature 21.5")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if resp, err := c.Publish(ctx, &paho.Publish{Topic: "own-1/state", QoS: 1, Retain: true, Payload: []byte("on")}); resp == nil || resp.ReasonCode != 0 {
		t.Fatalf("retained publish on its own topic: %+v %v", resp, err)
	}
	expectMessage(t, got, "own-1/state on")
	for _, topic := range []string{"own-2/temperature", "sensors/own-1/temperature", "own-1"} {
		if rc := publishV5(t, c, topic, 1, "x"); rc != 0x87 {
			t.Errorf("publish on %s: PUBACK %#x, want 0x87 (not authorized)", topic, rc)
		}
	}
	// The other device, under the same default policy, may not publish on own-1's topics either.
	_, oc, err := h.connectV5(other, other.name, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", other.name, err)
	}
	if rc := publishV5(t, oc, "own-1/cmd", 1, "forged"); rc != 0x87 {
		t.Fatalf("own-2 publishing on own-1/cmd: PUBACK %#x, want 0x87", rc)
	}
	// A device whose policy allows it (the test's cross-device policy) reaches own-1 on its topics.
	sender := h.mustConnectV3(h.createDevice("sender-1"))
	publishV3(t, sender, "own-1/cmd", 1, false, "hello")
	expectMessage(t, got, "own-1/cmd hello")
	h.record(t, "not authorized", map[string]string{"clientId": "own-1", "topicName": "own-2/temperature"})
}

// TestPublishDenied: a publish outside the policy reaches no one and is not retained; MQTT 5 QoS 1
// gets PUBACK 0x87; every denial is one log record naming action, resource and decision.
func TestPublishDenied(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("sensor", sensorPolicy)
	obs, got := h.observer(t, "#")
	d := h.createDevice("sensor-p", "sensor")

	_, c, err := h.connectV5(d, "sensor-p", nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if rc := publishV5(t, c, "sensors/sensor-p/temp", 1, "ok"); rc != 0 {
		t.Fatalf("allowed publish got PUBACK %#x", rc)
	}
	expectMessage(t, got, "sensors/sensor-p/temp ok")
	if rc := publishV5(t, c, "sensors/other/temp", 1, "nope"); rc != 0x87 {
		t.Fatalf("denied MQTT 5 publish got PUBACK %#x, want 0x87", rc)
	}
	rec := h.record(t, "not authorized", map[string]string{"clientId": "sensor-p", "action": "iot:Publish", "decision": "IMPLICIT_DENY"})
	if rec["resource"] != "arn:aws:iot:us-east-1:123456789012:topic/sensors/other/temp" || rec["principalId"] != d.certID || rec["eventType"] != "Publish-In" {
		t.Fatalf("denial record: %v", rec)
	}

	// MQTT 3.1.1: a denied retained QoS 1 publish is dropped, not delivered and not retained.
	c3 := h.mustConnectV3(h.createDevice("sensor-q", "sensor"))
	publishV3(t, c3, "elsewhere/retained", 1, true, "nope")
	expectNoMessage(t, got, obs, "observer/marker")
	late := h.mustConnectV3(h.createDevice("late"))
	lateGot := subscribeV3(t, late, "elsewhere/#", 1)
	expectNoMessage(t, lateGot, late, "elsewhere/marker")
}

// TestRetainPublishNeedsItsOwnPermission: iot:Publish alone does not allow a retained publish.
func TestRetainPublishNeedsItsOwnPermission(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("no-retain", `{"Version": "2012-10-17", "Statement": [
	  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
	  {"Effect": "Allow", "Action": "iot:Publish", "Resource": "arn:aws:iot:*:*:topic/data/*"}]}`)
	obs, got := h.observer(t, "data/#")
	c := h.mustConnectV3(h.createDevice("pub-r", "no-retain"))
	publishV3(t, c, "data/plain", 1, false, "1")
	expectMessage(t, got, "data/plain 1")
	publishV3(t, c, "data/kept", 1, true, "2")
	expectNoMessage(t, got, obs, "data/marker")
	h.record(t, "not authorized", map[string]string{"clientId": "pub-r", "action": "iot:RetainPublish"})
}

// TestSubscribeDeniedPerFilter: denied filters get 0x87 (MQTT 5) / 0x80 (3.1.1), the others succeed;
// + and # are literal in policies.
func TestSubscribeDeniedPerFilter(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("sub", `{"Version": "2012-10-17", "Statement": [
	  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
	  {"Effect": "Allow", "Action": "iot:Receive", "Resource": "*"},
	  {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": ["arn:aws:iot:*:*:topicfilter/a/+/b", "arn:aws:iot:*:*:topicfilter/ok/*"]}]}`)
	d := h.createDevice("sub-1", "sub")
	_, c, err := h.connectV5(d, "sub-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := subscribeV5(t, c, "a/+/b", "a/x/b", "ok/#", "other/#")
	want := []byte{1, 0x87, 1, 0x87}
	if string(got) != string(want) {
		t.Fatalf("MQTT 5 SUBACK %v, want %v", got, want)
	}
	h.record(t, "not authorized", map[string]string{"clientId": "sub-1", "action": "iot:Subscribe", "resource": "arn:aws:iot:us-east-1:123456789012:topicfilter/a/x/b"})

	d3 := h.createDevice("sub-3", "sub")
	c3 := h.mustConnectV3(d3)
	tok := c3.SubscribeMultiple(map[string]byte{"ok/x": 1, "nope": 1}, nil)
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	res := tok.(*pahov3.SubscribeToken).Result()
	if res["ok/x"] != 1 || res["nope"] != 0x80 {
		t.Fatalf("MQTT 3.1.1 SUBACK %v, want ok/x=1 nope=0x80", res)
	}
}

const receivePolicy = `{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
  {"Effect": "Allow", "Action": ["iot:Subscribe"], "Resource": "arn:aws:iot:*:*:topicfilter/*"},
  {"Effect": "Allow", "Action": ["iot:Receive", "iot:Publish"], "Resource": "arn:aws:iot:*:*:topic/*"},
  {"Sid": "NoSecrets", "Effect": "Deny", "Action": "iot:Receive", "Resource": "arn:aws:iot:*:*:topic/secret/*"}]}`

// TestDenyOnReceiveThroughWildcard: a Deny on iot:Receive stops delivery even through a # subscription,
// and a retained message is checked when it is delivered on subscribe.
func TestDenyOnReceiveThroughWildcard(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("receiver", receivePolicy)
	pub := h.mustConnectV3(h.createDevice("pub-w"))
	publishV3(t, pub, "secret/retained", 1, true, "hidden")
	publishV3(t, pub, "public/retained", 1, true, "shown")

	sub := h.mustConnectV3(h.createDevice("recv-w", "receiver"))
	got := subscribeV3(t, sub, "#", 1)
	expectMessage(t, got, "public/retained shown")
	publishV3(t, pub, "secret/live", 1, false, "hidden")
	publishV3(t, pub, "public/live", 1, false, "shown")
	expectMessage(t, got, "public/live shown")
	expectNoMessage(t, got, pub, "public/marker")
	rec := h.record(t, "not authorized", map[string]string{"clientId": "recv-w", "action": "iot:Receive", "decision": "EXPLICIT_DENY"})
	if rec["eventType"] != "Publish-Out" {
		t.Fatalf("receive denial record: %v", rec)
	}
}

// TestConnectDenied: iot:Connect is checked; an explicit deny names the statement.
func TestConnectDenied(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("no-connect", `{"Version": "2012-10-17", "Statement": [
	  {"Sid": "NotThisOne", "Effect": "Deny", "Action": "iot:Connect", "Resource": "arn:aws:iot:*:*:client/blocked-*"},
	  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}`)
	d := h.createDevice("blocked-1", "no-connect")
	ack, _, err := h.connectV5(d, "blocked-1", nil)
	if err == nil || ack == nil || ack.ReasonCode != 0x87 {
		t.Fatalf("connect: %v %+v, want CONNACK 0x87", err, ack)
	}
	rec := h.record(t, "connection refused", map[string]string{"clientId": "blocked-1", "reason": "AUTHORIZATION_FAILURE", "decision": "EXPLICIT_DENY"})
	if details, _ := rec["details"].(string); !strings.Contains(details, "NotThisOne") {
		t.Fatalf("refusal does not name the deciding statement: %v", rec)
	}
	if _, err := h.connectV3(d, "blocked-1"); err == nil {
		t.Fatal("MQTT 3.1.1 connect allowed")
	}
}

// TestWillIsCheckedWhenSent: a will to a topic the device may not publish to is not delivered (mochi
// does not check wills); an allowed one is.
func TestWillIsCheckedWhenSent(t *testing.T) {
	h := startBroker(t, nil)
	h.writePolicy("sensor", sensorPolicy)
	obs, got := h.observer(t, "#")
	d := h.createDevice("sensor-will", "sensor")

	dieWith := func(willTopic string) {
		t.Helper()
		conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: d.name, Conn: packets.NewThreadSafeConn(conn)})
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: d.name, KeepAlive: 30, CleanStart: true,
			WillMessage: &paho.WillMessage{Topic: willTopic, QoS: 1, Payload: []byte("gone")}}); err != nil {
			t.Fatalf("connect with will %s: %v", willTopic, err)
		}
		conn.Close() // no DISCONNECT: the broker sends the will
		h.record(t, "client disconnected", map[string]string{"clientId": d.name, "disconnectReason": "CONNECTION_LOST"})
	}
	dieWith("forbidden/will")
	expectNoMessage(t, got, obs, "observer/marker-1")
	h.record(t, "will message suppressed", map[string]string{"clientId": d.name, "topicName": "forbidden/will"})

	h.logs.TakeAll()
	dieWith("sensors/sensor-will/status")
	expectMessage(t, got, "sensors/sensor-will/status gone")
}

// TestHotReloadRevokesOnLiveConnection: editing the attached policy file takes a permission away from
// a connected device at its next message, with no restart and no reconnect; a broken edit is refused
// and the last good version stays.
func TestHotReloadRevokesOnLiveConnection(t *testing.T) {
	h := startBroker(t, nil)
	allowAll := `{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}`
	h.writePolicy("live", allowAll)
	pub := h.mustConnectV3(h.createDevice("pub-l"))
	sub := h.mustConnectV3(h.createDevice("sub-l", "live"))
	got := subscribeV3(t, sub, "news/#", 1)
	publishV3(t, pub, "news/1", 1, false, "before")
	expectMessage(t, got, "news/1 before")

	before := h.reloads()
	h.writePolicy("live", `{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"},
	  {"Effect": "Deny", "Action": "iot:Receive", "Resource": "arn:aws:iot:*:*:topic/news/2"}]}`)
	h.waitReload(t, before)
	publishV3(t, pub, "news/2", 1, false, "after")
	publishV3(t, pub, "news/3", 1, false, "still allowed")
	expectMessage(t, got, "news/3 still allowed")
	// The denial's record names the deciding policy as fields, not only in its details.
	h.record(t, "not authorized", map[string]string{"eventType": "Publish-Out", "topicName": "news/2",
		"decision": "EXPLICIT_DENY", "policyName": "live"})

	// A broken edit: refused, logged, and the last good policy (with its Deny) stays in force.
	if err := os.WriteFile(filepath.Join(h.broker.State().PolicyDir, "live.json"), []byte(`{"Version": "2012-10-17", "Statement": [{"Effect": "Maybe"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	h.record(t, "policy reload refused; the last good policies stay in force", nil)
	h.waitMetric("ggbroker_policy_reload_failures_total", func(v float64) bool { return v >= 1 })
	h.waitMetric("ggbroker_policy_version", func(v float64) bool { return v >= 1 })
	publishV3(t, pub, "news/2", 1, false, "after broken edit")
	publishV3(t, pub, "news/4", 1, false, "fine")
	expectMessage(t, got, "news/4 fine")
}

// TestDeviceGroups: the Greengrass client device auth form, verbatim, with a selection rule and the
// thing-name variable; a device in no group cannot connect.
func TestDeviceGroups(t *testing.T) {
	groups := map[string]any{
		"formatVersion": "2021-03-05",
		"definitions": map[string]any{
			"MyDeviceGroup": map[string]any{"selectionRule": "thingName: MyClientDevice* OR thingName: Observer", "policyName": "MyRestrictivePolicy"},
		},
		"policies": map[string]any{
			"MyRestrictivePolicy": map[string]any{
				"AllowConnect":   map[string]any{"statementDescription": "Allow client devices to connect.", "operations": []any{"mqtt:connect"}, "resources": []any{"*"}},
				"AllowPublish":   map[string]any{"operations": []any{"mqtt:publish"}, "resources": []any{"mqtt:topic:clients/${iot:Connection.Thing.ThingName}/hello"}},
				"AllowSubscribe": map[string]any{"operations": []any{"mqtt:subscribe"}, "resources": []any{"mqtt:topicfilter:clients/+/hello"}},
			},
		},
	}
	h := startBroker(t, func(c *config.Config) { c.ClientDeviceAuth.DeviceGroups = groups })
	obs := h.mustConnectV3(h.createDevice("Observer"))
	got := subscribeV3(t, obs, "clients/+/hello", 1)
	dev := h.mustConnectV3(h.createDevice("MyClientDevice1"))
	publishV3(t, dev, "clients/MyClientDevice1/hello", 1, false, "hi")
	expectMessage(t, got, "clients/MyClientDevice1/hello hi")
	publishV3(t, dev, "clients/Observer/hello", 1, false, "spoofed")
	expectNoMessage(t, got, obs, "clients/Observer/hello")

	if _, err := h.connectV3(h.createDevice("Outsider"), "Outsider"); err == nil {
		t.Fatal("a device in no group connected")
	}
}
