package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/bridge"
	"github.com/ggbroker/ggbroker/config"
)

// startUpstream starts a second ggbroker in the iot-core profile: the AWS IoT Core stand-in.
func startUpstream(t *testing.T) *harness {
	t.Helper()
	return startBroker(t, func(c *config.Config) { c.Behaviour.Profile = "iot-core" })
}

// startFastUpstream is startUpstream without AWS IoT Core's 100 publishes per second per connection,
// for tests that move a thousand messages (the bridge is unpaced there too; TestBridgePacesItself
// checks the pacing against the quota).
func startFastUpstream(t *testing.T) *harness {
	t.Helper()
	return startBroker(t, func(c *config.Config) {
		c.Behaviour.Profile = "iot-core"
		c.Behaviour.PublishesPerSecond = "0"
	})
}

// TestBridgeBothWays is Greengrass' bridge against an AWS IoT Core stand-in: LocalMqtt -> IotCore
// at QoS 1 with and without a target prefix (one message per matching mapping), IotCore -> LocalMqtt
// with a wildcard, retain only where retainAsPublished says, and no loop through mappings that
// overlap in both directions (services/bridge.md acceptance cases 1, 2, 4, 5, 6, 7, 17).
func TestBridgeBothWays(t *testing.T) {
	up := startUpstream(t)
	id := up.coreIdentity("gateway-1")
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{
			"mqttTopicMapping": map[string]any{
				"Hello":    mapping("clients/+/hello", bridge.LocalMqtt, bridge.IotCore, ""),
				"Prefixed": mapping("clients/+/hello", bridge.LocalMqtt, bridge.IotCore, "gw/1/"),
				"Status":   mapping("status/+", bridge.LocalMqtt, bridge.IotCore, ""),
				"Commands": mapping("cmd/#", bridge.IotCore, bridge.LocalMqtt, ""),
				"ShadowUp": mapping("sync/+/state/#", bridge.LocalMqtt, bridge.IotCore, ""),
				"ShadowDn": mapping("sync/+/state/#", bridge.IotCore, bridge.LocalMqtt, ""),
			},
			"mqtt5RouteOptions": map[string]any{"Status": map[string]any{"retainAsPublished": true}},
		})
	})
	local.record(t, "upstream connected", map[string]string{"clientId": "gateway-1", "protocol": "MQTT 5", "status": "Success"})

	cloudApp := up.mustConnectV3(up.createDevice("cloud-app"))
	upHello := collectV3(t, cloudApp, "clients/#")
	upPrefixed := collectV3(t, cloudApp, "gw/#")
	upSync := collectV3(t, cloudApp, "sync/#")
	marker := collectV3(t, cloudApp, "marker/up")
	dev := local.mustConnectV3(local.createDevice("d1"))
	devCmd := collectV3(t, dev, "cmd/#")
	devSync := collectV3(t, dev, "sync/#")

	// Case 1, 2, 4: QoS 0 in, QoS 1 out, once per mapping.
	publishV3(t, dev, "clients/d1/hello", 0, false, "x")
	if m := next(t, upHello, "clients/d1/hello upstream"); m.String() != "clients/d1/hello x" || m.qos != 1 || m.retained {
		t.Fatalf("upstream got %+v, want clients/d1/hello x at QoS 1, not retained", m)
	}
	if m := next(t, upPrefixed, "the prefixed copy"); m.String() != "gw/1/clients/d1/hello x" || m.qos != 1 {
		t.Fatalf("upstream got %+v, want gw/1/clients/d1/hello x", m)
	}
	// Case 5: a topic no mapping matches stays local.
	publishV3(t, dev, "other/topic", 1, false, "local only")
	publishV3(t, dev, "clients/d1/x", 1, false, "no mapping either")
	expectNone(t, upHello, marker, cloudApp, "marker/up")

	// Case 6: down from the upstream, through a wildcard mapping.
	publishV3(t, cloudApp, "cmd/d1/reboot", 1, false, "now")
	if m := next(t, devCmd, "cmd/d1/reboot locally"); m.String() != "cmd/d1/reboot now" {
		t.Fatalf("device got %v", m)
	}

	// Case 7: retained where retainAsPublished says (by mapping name), not elsewhere.
	publishV3(t, dev, "status/d1", 1, true, "online")
	publishV3(t, dev, "clients/d1/hello", 1, true, "retained locally only")
	next(t, upHello, "the second hello")
	waitRetained := func(topic string) <-chan received {
		c := up.mustConnectV3(up.createDevice("late-" + strings.ReplaceAll(topic, "/", "-")))
		return collectV3(t, c, topic)
	}
	if m := next(t, waitRetained("status/d1"), "the retained status"); m.String() != "status/d1 online" || !m.retained {
		t.Fatalf("late subscriber got %+v, want the retained status/d1 online", m)
	}
	lateHello := waitRetained("clients/d1/hello")
	expectNone(t, lateHello, marker, cloudApp, "marker/up")

	// Case 17: the same filter mapped both ways. Up: the device's message reaches the upstream once
	// and does not come back down (MQTT 5 noLocal upstream). Down: the upstream's message reaches the
	// device once and does not go back up (the bridge skips what it published itself).
	publishV3(t, dev, "sync/d1/state/reported", 1, false, "r1")
	if m := next(t, upSync, "sync up"); m.String() != "sync/d1/state/reported r1" {
		t.Fatalf("upstream got %v", m)
	}
	if m := next(t, devSync, "the device's own message"); m.String() != "sync/d1/state/reported r1" {
		t.Fatalf("device got %v", m) // a local subscriber of its own topic gets it, from the local broker
	}
	publishV3(t, cloudApp, "sync/d1/state/desired", 1, false, "d1")
	if m := next(t, devSync, "sync down"); m.String() != "sync/d1/state/desired d1" {
		t.Fatalf("device got %v", m)
	}
	if m := next(t, upSync, "the cloud app's own message"); m.String() != "sync/d1/state/desired d1" {
		t.Fatalf("upstream got %v", m)
	}
	devMarker := collectV3(t, dev, "marker/local")
	expectNone(t, upSync, marker, cloudApp, "marker/up")
	expectNone(t, devSync, devMarker, dev, "marker/local")
	local.waitMetric(`ggbroker_bridge_messages_forwarded_total{direction="to-upstream"}`, func(v float64) bool { return v == 6 })
	local.waitMetric(`ggbroker_bridge_messages_forwarded_total{direction="from-upstream"}`, func(v float64) bool { return v == 2 })
	if v := local.metric("ggbroker_bridge_upstream_connected"); v != 1 {
		t.Fatalf("connected = %v", v)
	}
}

// TestBridgeOutage: 1,000 QoS 1 messages published while the upstream is unreachable are all
// acknowledged to the device, wait in the spool, and arrive upstream in order once it is back;
// messages the upstream had for the bridge meanwhile arrive too (persistent session, clean start false).
func TestBridgeOutage(t *testing.T) {
	up := startFastUpstream(t)
	id := up.coreIdentity("gateway-1")
	link := newOutage(t, up.addr())
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(link.addr), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{
			"Up":   mapping("telemetry/#", bridge.LocalMqtt, bridge.IotCore, ""),
			"Down": mapping("cmd/#", bridge.IotCore, bridge.LocalMqtt, ""),
		}, "upstreamPublishesPerSecond": 0})
	})
	local.record(t, "upstream connected", map[string]string{"sessionPresent": "false"})
	cloudApp := up.mustConnectV3(up.createDevice("cloud-app"))
	got := collectV3(t, cloudApp, "telemetry/#")
	dev := local.mustConnectV3(local.createDevice("d1"))
	devCmd := collectV3(t, dev, "cmd/#")

	link.cut()
	local.record(t, "upstream disconnected", nil)
	local.record(t, "upstream connection failed", nil)
	publishMany(t, dev, "telemetry/d1", 1000)
	publishV3(t, cloudApp, "cmd/d1", 1, false, "while you were away")
	if v := local.metric("ggbroker_bridge_spool_messages"); v != 1000 {
		t.Fatalf("spool holds %v messages, want 1000", v)
	}
	if v := local.metric("ggbroker_bridge_upstream_connected"); v != 0 {
		t.Fatalf("connected = %v during the outage", v)
	}
	// Local devices still work during the outage, and the broker stays ready.
	if code, body := local.adminGet("/readyz"); code != 200 {
		t.Fatalf("/readyz %d during the outage: %s", code, body)
	}

	link.restore()
	local.record(t, "upstream connected", map[string]string{"sessionPresent": "true"})
	expectInOrder(t, got, "telemetry/d1", 0, 1000)
	if m := next(t, devCmd, "the command sent during the outage"); m.String() != "cmd/d1 while you were away" {
		t.Fatalf("device got %v", m)
	}
	local.waitMetric("ggbroker_bridge_spool_messages", func(v float64) bool { return v == 0 })
}

// TestBridgeSpoolLimit: a full spool drops its oldest messages, counts and logs it; the newest are
// delivered.
func TestBridgeSpoolLimit(t *testing.T) {
	up := startUpstream(t)
	id := up.coreIdentity("gateway-1")
	link := newOutage(t, up.addr())
	link.cut()
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(link.addr), id)
		setBridge(c, map[string]any{
			"mqttTopicMapping": map[string]any{"Up": mapping("telemetry/#", bridge.LocalMqtt, bridge.IotCore, "")},
			"spool":            map[string]any{"maxMessages": 10, "maxBytes": 1 << 20},
		})
	})
	dev := local.mustConnectV3(local.createDevice("d1"))
	publishMany(t, dev, "telemetry/d1", 15)
	local.record(t, "bridge spool full: dropped the oldest messages", map[string]string{"reason": "spool-full", "maxMessages": "10"})
	if v := local.metric(`ggbroker_bridge_messages_dropped_total{reason="spool-full"}`); v != 5 {
		t.Fatalf("dropped = %v, want 5", v)
	}
	cloudApp := up.mustConnectV3(up.createDevice("cloud-app"))
	got := collectV3(t, cloudApp, "telemetry/#")
	link.restore()
	expectInOrder(t, got, "telemetry/d1", 5, 10)
}

// TestBridgeRefusedUpstream: a wrong CA for the upstream and a client certificate the upstream does
// not know are logged with the reason, retried with backoff, and local devices carry on.
func TestBridgeRefusedUpstream(t *testing.T) {
	up := startUpstream(t)
	good := up.coreIdentity("gateway-1")
	other := startBroker(t, nil) // another CA and registry
	stranger := other.coreIdentity("gateway-1")
	cases := []struct {
		name     string
		id       coreIdentity
		reason   string
		kind     string
		endpoint string // "" for the upstream
	}{
		{"DNS", good, "DNS: cannot resolve gateway-upstream.invalid", "dns", "gateway-upstream.invalid:8883"},
		{"wrong CA", coreIdentity{thing: good.thing, cert: good.cert, key: good.key, ca: stranger.ca}, "wrong CA", "server-certificate", ""},
		// ggbroker, like AWS IoT Core for a certificate it does not know, completes the handshake and
		// refuses the CONNECT.
		{"unknown client certificate", coreIdentity{thing: good.thing, cert: stranger.cert, key: stranger.key, ca: good.ca}, "core.certificateFilePath registered and active upstream", "not-authorized", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local := startBroker(t, func(c *config.Config) {
				ep := tc.endpoint
				if ep == "" {
					ep = upstreamEndpoint(up.addr())
				}
				setCore(c, ep, tc.id)
				setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{"Up": mapping("t/#", bridge.LocalMqtt, bridge.IotCore, "")}})
			})
			rec := local.record(t, "upstream connection failed", map[string]string{"eventType": "Connect", "status": "Failure", "clientId": "gateway-1"})
			if !strings.Contains(rec["reason"].(string), tc.reason) {
				t.Fatalf("reason %q does not say %q", rec["reason"], tc.reason)
			}
			local.waitMetric(`ggbroker_bridge_connect_failures_total{reason="`+tc.kind+`"}`, func(v float64) bool { return v >= 3 })
			// Backoff: attempt n waits within [min, min(min*2^n, max)] (20ms, 200ms here).
			for n, e := range local.logs.FilterMessage("upstream connection failed").All()[:3] {
				d, _ := e.ContextMap()["retryIn"].(time.Duration)
				if ceil := min(20*time.Millisecond<<n, 200*time.Millisecond); d < 20*time.Millisecond || d > ceil {
					t.Fatalf("attempt %d waits %s, want 20ms..%s", n, d, ceil)
				}
			}
			dev := local.mustConnectV3(local.createDevice("d1"))
			got := collectV3(t, dev, "t/#")
			publishV3(t, dev, "t/1", 1, false, "still works")
			if m := next(t, got, "a local message"); m.String() != "t/1 still works" {
				t.Fatalf("got %v", m)
			}
		})
	}
}

// TestBridgeSurvivesKill: messages acknowledged to a device while the upstream is down survive
// SIGKILL of ggbroker and arrive upstream, in order, after the restart.
func TestBridgeSurvivesKill(t *testing.T) {
	up := startFastUpstream(t)
	id := up.coreIdentity("gateway-1")
	link := newOutage(t, up.addr())
	link.cut()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "ggbroker.yaml")
	cfg := "core:\n  thingName: gateway-1\n  iotDataEndpoint: " + upstreamEndpoint(link.addr) + "\n  certificateFilePath: " + id.cert +
		"\n  privateKeyPath: " + id.key + "\n  rootCaPath: " + id.ca +
		"\nbridge:\n  upstreamPublishesPerSecond: 0\n  minReconnectDelay: 20ms\n  maxReconnectDelay: 200ms\n  mqttTopicMapping:\n    TelemetryToCloud: {topic: \"telemetry/#\", source: LocalMqtt, target: IotCore}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	createCrossDevice(t, dir, "d1", "--out", "devices/d1") // it publishes on telemetry/d1
	s := serve(t, dir, "--config", cfgPath)
	s.waitLog(t, `"msg":"upstream connection failed"`)
	dev := connectFiles(t, s.mqtt, "d1", bridgeDeviceTLS(t, filepath.Join(dir, "devices/d1")), true)
	publishMany(t, dev, "telemetry/d1", 1000)
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.stopped
	s.stopped <- nil

	cloudApp := up.mustConnectV3(up.createDevice("cloud-app"))
	got := collectV3(t, cloudApp, "telemetry/#")
	s = serve(t, dir, "--config", cfgPath)
	s.waitLog(t, `"messages":1000`)
	link.restore()
	expectInOrder(t, got, "telemetry/d1", 0, 1000)

	cmd := exec.Command(ggbrokerBinary(t), "bridge", "status", "--config", cfgPath)
	cmd.Dir = dir
	deadline := 0
	for {
		out, err := cmd.CombinedOutput()
		if err == nil && strings.Contains(string(out), "connected (MQTT 5)") && strings.Contains(string(out), "spool:         0 messages") {
			if !strings.Contains(string(out), "1000 to upstream") {
				t.Fatalf("bridge status:\n%s", out)
			}
			break
		}
		if deadline++; deadline > 100 {
			t.Fatalf("bridge status: %v\n%s", err, out)
		}
		waitALittle()
		cmd = exec.Command(ggbrokerBinary(t), "bridge", "status", "--config", cfgPath)
		cmd.Dir = dir
	}
	s.terminate(t)
}

// TestBridgePacesItself: against AWS IoT Core's 100 publishes per second per connection, a spool
// emptied after an outage is paced so that the upstream refuses nothing, and arrives in order.
func TestBridgePacesItself(t *testing.T) {
	up := startUpstream(t)
	id := up.coreIdentity("gateway-1")
	link := newOutage(t, up.addr())
	link.cut()
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(link.addr), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{"Up": mapping("telemetry/#", bridge.LocalMqtt, bridge.IotCore, "")}})
	})
	dev := local.mustConnectV3(local.createDevice("d1"))
	const n = 250
	publishMany(t, dev, "telemetry/d1", n)
	cloudApp := up.mustConnectV3(up.createDevice("cloud-app"))
	got := collectV3(t, cloudApp, "telemetry/#")
	start := time.Now()
	link.restore()
	expectInOrder(t, got, "telemetry/d1", 0, n)
	if took := time.Since(start); took < (n/100-1)*time.Second {
		t.Fatalf("%d messages in %s: faster than 100/s", n, took)
	}
	for _, reason := range []string{"refused-by-upstream", "spool-full"} {
		if v := local.metric(`ggbroker_bridge_messages_dropped_total{reason="` + reason + `"}`); v != 0 {
			t.Fatalf("dropped %s = %v", reason, v)
		}
	}
	if recs := local.logs.FilterMessage("upstream throttles the bridge: pausing").Len(); recs != 0 {
		t.Logf("throttled %d times (paced publishes can still bunch on the wire)", recs)
	}
}

// TestBridgeMQTT5AndLocalRoutes: MQTT 5 properties (user properties, content type, response topic)
// travel up and down; a LocalMqtt -> LocalMqtt mapping whose output matches its own filter copies a
// message once and does not loop (services/bridge.md cases 8 and 16); retainAsPublished keeps the
// retain flag of an upstream retained message delivered on subscribe.
func TestBridgeMQTT5AndLocalRoutes(t *testing.T) {
	up := startUpstream(t)
	id := up.coreIdentity("gateway-1")
	// Retained upstream before the bridge subscribes: delivered to the bridge with retain set.
	cloudPub := up.mustConnectV3(up.createDevice("cloud-pub"))
	publishV3(t, cloudPub, "config/d1", 1, true, "v7")
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{
			"mqttTopicMapping": map[string]any{
				"Up":     mapping("req/#", bridge.LocalMqtt, bridge.IotCore, ""),
				"Down":   mapping("resp/#", bridge.IotCore, bridge.LocalMqtt, ""),
				"Config": mapping("config/+", bridge.IotCore, bridge.LocalMqtt, ""),
				"Copy":   mapping("in/#", bridge.LocalMqtt, bridge.LocalMqtt, "in/copy/"),
			},
			"mqtt5RouteOptions": map[string]any{"Config": map[string]any{"retainAsPublished": true}, "Copy": map[string]any{"noLocal": false}},
		})
	})
	local.record(t, "upstream connected", nil)

	type props struct {
		topic, payload, contentType, responseTopic, user string
		retain                                           bool
	}
	collect := func(h *harness, name string, filters ...string) (<-chan props, func(string, string, string)) {
		got := make(chan props, 100)
		_, c, err := h.connectV5(h.createDevice(name), name, func(p paho.PublishReceived) {
			pr := props{topic: p.Packet.Topic, payload: string(p.Packet.Payload), retain: p.Packet.Retain}
			if pp := p.Packet.Properties; pp != nil {
				pr.contentType, pr.responseTopic = pp.ContentType, pp.ResponseTopic
				for _, u := range pp.User {
					pr.user += u.Key + "=" + u.Value
				}
			}
			got <- pr
		})
		if err != nil {
			t.Fatal(err)
		}
		subscribeV5(t, c, filters...)
		pub := func(topic, payload, user string) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload), Properties: &paho.PublishProperties{
				ContentType: "application/json", ResponseTopic: "resp/" + name, User: paho.UserProperties{{Key: "k", Value: user}}}})
			if err != nil {
				t.Fatalf("publish %s: %v", topic, err)
			}
		}
		return got, pub
	}
	wait := func(got <-chan props, what string) props {
		t.Helper()
		select {
		case p := <-got:
			return p
		case <-time.After(waitFor):
			t.Fatalf("did not receive %s", what)
		}
		return props{}
	}
	devGot, devPub := collect(local, "d1", "resp/#", "in/#", "config/#")
	if p := wait(devGot, "the retained config"); p.topic != "config/d1" || p.payload != "v7" || !p.retain {
		t.Fatalf("device got %+v, want config/d1 v7 retained", p)
	}
	cloudGot, cloudPub5 := collect(up, "cloud-app", "req/#")

	devPub("req/d1/time", `{"q":1}`, "up")
	want := props{topic: "req/d1/time", payload: `{"q":1}`, contentType: "application/json", responseTopic: "resp/d1", user: "k=up"}
	if p := wait(cloudGot, "the request upstream"); p != want {
		t.Fatalf("upstream got %+v, want %+v", p, want)
	}
	cloudPub5("resp/d1", `{"t":2}`, "down")
	want = props{topic: "resp/d1", payload: `{"t":2}`, contentType: "application/json", responseTopic: "resp/cloud-app", user: "k=down"}
	if p := wait(devGot, "the response locally"); p != want {
		t.Fatalf("device got %+v, want %+v", p, want)
	}

	devPub("in/x", "1", "copy")
	seen := map[string]int{}
	for range 2 {
		p := wait(devGot, "the message and its copy")
		seen[p.topic]++
		if p.user != "k=copy" || p.contentType != "application/json" {
			t.Fatalf("properties lost on %+v", p)
		}
	}
	if seen["in/x"] != 1 || seen["in/copy/in/x"] != 1 {
		t.Fatalf("got %v, want in/x and in/copy/in/x once each", seen)
	}
	devPub("in/marker", "m", "")
	for range 2 { // the marker and its one copy; a loop would have put more in between
		if p := wait(devGot, "the marker"); p.topic != "in/marker" && p.topic != "in/copy/in/marker" {
			t.Fatalf("after the copy, got %+v", p)
		}
	}
	local.waitMetric(`ggbroker_bridge_messages_forwarded_total{direction="local"}`, func(v float64) bool { return v == 2 })
}

// TestBinaryRefusesBadBridgeConfig: serve stops on a bad bridge or core.* key, naming it and the reason.
func TestBinaryRefusesBadBridgeConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ name, body, key, reason string }{
		{"Pubsub", "bridge:\n  mqttTopicMapping:\n    ToComponents: {topic: a/b, source: LocalMqtt, target: Pubsub}\n",
			"bridge.mqttTopicMapping.ToComponents.target", "no Greengrass IPC"},
		{"no topic", "bridge:\n  mqttTopicMapping:\n    Up: {source: LocalMqtt, target: IotCore}\n", "bridge.mqttTopicMapping.Up.topic", "missing"},
		{"endpoint without host", "core:\n  iotDataEndpoint: \":8883\"\n", "core.iotDataEndpoint", "no host"},
		{"unreadable certificate", "core:\n  iotDataEndpoint: example.com\n  certificateFilePath: /nonexistent/core.pem\n  privateKeyPath: /nonexistent/core.key\n  rootCaPath: /nonexistent/ca.pem\n",
			"core.certificateFilePath", "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(ggbrokerBinary(t), "serve", "--config", path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--discovery-listen", "127.0.0.1:0")
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatal("serve started with a bad bridge config")
			}
			for _, want := range []string{tc.key, tc.reason} {
				if !strings.Contains(string(out), want) {
					t.Errorf("output does not say %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestBridgeForgetsRemovedMappings: after a restart without an IotCore-source mapping, its filter is
// unsubscribed from the upstream's persistent session, so the upstream stops sending what no mapping
// wants; the remaining subscription carries on.
func TestBridgeForgetsRemovedMappings(t *testing.T) {
	up := startUpstream(t)
	id := up.coreIdentity("gateway-1")
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{
			"Old": mapping("old/#", bridge.IotCore, bridge.LocalMqtt, ""),
			"New": mapping("new/#", bridge.IotCore, bridge.LocalMqtt, ""),
		}})
	})
	local.record(t, "upstream connected", map[string]string{"subscriptions": "2"})
	local.stop()
	setBridge(local.cfg, map[string]any{"mqttTopicMapping": map[string]any{"New": mapping("new/#", bridge.IotCore, bridge.LocalMqtt, "")}})
	local = startWith(t, local.cfg)
	local.record(t, "unsubscribed upstream from filters no mapping names any more", map[string]string{"topicFilters": "[old/#]"})
	local.record(t, "upstream connected", map[string]string{"sessionPresent": "true", "subscriptions": "1"})
	dev := local.mustConnectV3(local.createDevice("d1"))
	got := collectV3(t, dev, "#")
	cloud := up.mustConnectV3(up.createDevice("cloud-app"))
	publishV3(t, cloud, "old/x", 1, false, "nobody wants this")
	publishV3(t, cloud, "new/x", 1, false, "still bridged")
	if m := next(t, got, "new/x"); m.String() != "new/x still bridged" {
		t.Fatalf("device got %v", m)
	}
	if n := local.logs.FilterMessage("message from the upstream matches no mapping; discarded").Len(); n != 0 {
		t.Fatalf("the upstream still sent %d messages on the removed mapping's filter", n)
	}
}

// TestBridgeDownstreamRespectsReceive: a message from the upstream reaches only the local subscribers
// whose policy allows iot:Receive on its topic.
func TestBridgeDownstreamRespectsReceive(t *testing.T) {
	up := startUpstream(t)
	id := up.coreIdentity("gateway-1")
	local := startBroker(t, func(c *config.Config) {
		c.Authorization.Mode = config.AuthzPolicies
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{"Down": mapping("cmd/#", bridge.IotCore, bridge.LocalMqtt, "")}})
	})
	local.writePolicy("own-commands", `{"Version": "2012-10-17", "Statement": [
	  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
	  {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:us-east-1:123456789012:topicfilter/cmd/*"},
	  {"Effect": "Allow", "Action": "iot:Receive", "Resource": "arn:aws:iot:us-east-1:123456789012:topic/cmd/${iot:ClientId}/*"}]}`)
	local.record(t, "upstream connected", nil)
	d1 := local.mustConnectV3(local.createDevice("d1", "own-commands"))
	d2 := local.mustConnectV3(local.createDevice("d2", "own-commands"))
	got1, got2 := collectV3(t, d1, "cmd/#"), collectV3(t, d2, "cmd/#")
	cloud := up.mustConnectV3(up.createDevice("cloud-app"))
	publishV3(t, cloud, "cmd/d2/x", 1, false, "for d2")
	publishV3(t, cloud, "cmd/d1/x", 1, false, "for d1")
	if m := next(t, got1, "d1's command"); m.String() != "cmd/d1/x for d1" {
		t.Fatalf("d1 got %v", m) // cmd/d2/x came first upstream: d1 would have it first if allowed
	}
	if m := next(t, got2, "d2's command"); m.String() != "cmd/d2/x for d2" {
		t.Fatalf("d2 got %v", m)
	}
	publishV3(t, cloud, "cmd/d2/marker", 1, false, "m")
	if m := next(t, got2, "d2's marker"); m.String() != "cmd/d2/marker m" {
		t.Fatalf("d2 got %v", m) // d1's command, sent before the marker, did not reach d2
	}
}

// TestBridgeDropsWhatTheUpstreamCannotTake: a message larger than the upstream's Maximum Packet Size
// (AWS IoT Core: 128 KiB payload) is dropped, logged and counted, and does not hold up the next.
func TestBridgeDropsWhatTheUpstreamCannotTake(t *testing.T) {
	up := startUpstream(t)
	id := up.coreIdentity("gateway-1")
	local := startBroker(t, func(c *config.Config) {
		c.Behaviour.MaxPayloadBytes = "0" // the local broker takes more than the upstream
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{"Up": mapping("t/#", bridge.LocalMqtt, bridge.IotCore, "")}})
	})
	local.record(t, "upstream connected", nil)
	cloud := up.mustConnectV3(up.createDevice("cloud-app"))
	got := collectV3(t, cloud, "t/#")
	dev := local.mustConnectV3(local.createDevice("d1"))
	publishV3(t, dev, "t/big", 1, false, strings.Repeat("x", 200000))
	publishV3(t, dev, "t/small", 1, false, "fits")
	if m := next(t, got, "the small message"); m.String() != "t/small fits" {
		t.Fatalf("upstream got %.40v", m)
	}
	local.record(t, "message larger than the upstream's maximum packet size; dropped", map[string]string{"topicName": "t/big"})
	if v := local.metric(`ggbroker_bridge_messages_dropped_total{reason="too-large"}`); v != 1 {
		t.Fatalf("too-large = %v", v)
	}
}

// TestBridgeRetriesRefusedSubscriptions: a subscription the upstream's policy refuses is tried again
// with backoff, and works once the policy allows it, without a restart.
func TestBridgeRetriesRefusedSubscriptions(t *testing.T) {
	up := startBroker(t, func(c *config.Config) {
		c.Behaviour.Profile = "iot-core"
		c.Authorization.Mode = config.AuthzPolicies
	})
	policy := func(filters string) string {
		return `{"Version": "2012-10-17", "Statement": [
		  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:us-east-1:123456789012:client/gateway-1"},
		  {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [` + filters + `]},
		  {"Effect": "Allow", "Action": "iot:Receive", "Resource": "arn:aws:iot:us-east-1:123456789012:topic/*"}]}`
	}
	up.writePolicy("gateway", policy(`"arn:aws:iot:us-east-1:123456789012:topicfilter/cmd/*"`))
	id := up.coreIdentity("gateway-1", "gateway")
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{
			"Commands": mapping("cmd/#", bridge.IotCore, bridge.LocalMqtt, ""),
			"Alerts":   mapping("alerts/#", bridge.IotCore, bridge.LocalMqtt, ""),
		}})
	})
	local.record(t, "upstream refused a subscription; retrying with backoff", map[string]string{"topicName": "alerts/#", "reason": "SUBACK 0x87"})
	local.record(t, "upstream connected", nil)
	dev := local.mustConnectV3(local.createDevice("d1"))
	got := collectV3(t, dev, "#")

	before := up.reloads()
	up.writePolicy("gateway", policy(`"arn:aws:iot:us-east-1:123456789012:topicfilter/cmd/*", "arn:aws:iot:us-east-1:123456789012:topicfilter/alerts/*"`))
	up.waitReload(t, before)
	local.record(t, "upstream accepted a subscription it had refused", map[string]string{"topicName": "alerts/#"})
	cloud := up.mustConnectV3(up.createDevice("cloud-app"))
	publishV3(t, cloud, "alerts/fire", 1, false, "now")
	if m := next(t, got, "the alert"); m.String() != "alerts/fire now" {
		t.Fatalf("device got %v", m)
	}
}

// TestBridgeSurvivesKillWhileSending: SIGKILL while the bridge is sending, with the spool's log
// holding records already acknowledged upstream (their deletes are written, not flushed) and
// records not yet sent: after the restart every message arrives, in order; only redeliveries of
// what was acknowledged just before the kill are allowed.
func TestBridgeSurvivesKillWhileSending(t *testing.T) {
	up := startFastUpstream(t)
	id := up.coreIdentity("gateway-1")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "ggbroker.yaml")
	cfg := "core:\n  thingName: gateway-1\n  iotDataEndpoint: " + upstreamEndpoint(up.addr()) + "\n  certificateFilePath: " + id.cert +
		"\n  privateKeyPath: " + id.key + "\n  rootCaPath: " + id.ca +
		"\nbridge:\n  upstreamPublishesPerSecond: 0\n  minReconnectDelay: 20ms\n  maxReconnectDelay: 200ms\n  mqttTopicMapping:\n    TelemetryToCloud: {topic: \"telemetry/#\", source: LocalMqtt, target: IotCore}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	createCrossDevice(t, dir, "d1", "--out", "devices/d1")
	cloudApp := up.mustConnectV3(up.createDevice("cloud-app"))
	got := collectV3(t, cloudApp, "telemetry/#")
	s := serve(t, dir, "--config", cfgPath)
	s.waitLog(t, `"msg":"upstream connected"`)
	dev := connectFiles(t, s.mqtt, "d1", bridgeDeviceTLS(t, filepath.Join(dir, "devices/d1")), true)
	publishMany(t, dev, "telemetry/d1", 3000)
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.stopped
	s.stopped <- nil
	s = serve(t, dir, "--config", cfgPath)
	expectInOrder(t, got, "telemetry/d1", 0, 3000)
	s.terminate(t)
}

// TestBridgedMessagesStillReachLocalSubscribers: a message the bridge spools and no subscription
// matches skips the session store's publish log (nobody to replay it to); one that a local
// subscription matches, even of a session that is offline, and a retained one, are served locally as
// always, and all of them go upstream.
func TestBridgedMessagesStillReachLocalSubscribers(t *testing.T) {
	up := startFastUpstream(t)
	id := up.coreIdentity("gateway-1")
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{"Up": mapping("tele/#", bridge.LocalMqtt, bridge.IotCore, "")},
			"upstreamPublishesPerSecond": 0})
	})
	local.record(t, "upstream connected", map[string]string{"clientId": "gateway-1", "status": "Success"})
	cloudApp := up.mustConnectV3(up.createDevice("cloud-app"))
	upTele := collectV3(t, cloudApp, "tele/#")

	// A persistent session subscribed to part of the bridged topics, then offline.
	watcher := local.createDevice("watcher")
	offline := make(chan received, 16)
	keep := func(o *pahov3.ClientOptions) {
		o.SetCleanSession(false)
		o.SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			offline <- received{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos(), retained: m.Retained()}
		})
	}
	w := local.mustConnectV3(watcher, keep)
	if tok := w.Subscribe("tele/watched/#", 1, nil); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	w.Disconnect(100)

	dev := local.mustConnectV3(local.createDevice("d1"))
	publishV3(t, dev, "tele/alone", 1, false, "nobody local")
	publishV3(t, dev, "tele/watched/a", 1, false, "for the offline session")
	publishV3(t, dev, "tele/kept", 1, true, "retained")
	for _, want := range []string{"tele/alone nobody local", "tele/watched/a for the offline session", "tele/kept retained"} {
		if m := next(t, upTele, want+" upstream"); m.String() != want {
			t.Fatalf("upstream got %v, want %s", m, want)
		}
	}
	local.mustConnectV3(watcher, keep)
	if m := next(t, offline, "the queued message"); m.String() != "tele/watched/a for the offline session" {
		t.Fatalf("the offline session got %v", m)
	}
	late := collectV3(t, local.mustConnectV3(local.createDevice("late")), "tele/#")
	if m := next(t, late, "the retained message"); m.String() != "tele/kept retained" || !m.retained {
		t.Fatalf("a later subscriber got %+v, want the retained tele/kept", m)
	}
}
