package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/config"
)

// The shadow service's Greengrass shadow manager sync (shadow.synchronize) end to end: a local ggbroker
// (the core device) syncs shadows with a second ggbroker in the iot-core profile (the AWS IoT Core
// stand-in, which serves shadows too), over the bridge's upstream connection with mutual TLS, through
// a relay the test can cut.

// syncPolicy lets the core device (upstream) and the tests' devices (both sides) connect, use every
// thing's shadow topics and the telemetry topics.
const syncPolicy = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": ["arn:aws:iot:*:*:topic/$aws/things/*", "arn:aws:iot:*:*:topic/telemetry/*"]},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": ["arn:aws:iot:*:*:topicfilter/$aws/things/*", "arn:aws:iot:*:*:topicfilter/telemetry/*"]}
  ]
}`

// syncPair is the core device's broker, its upstream, the link between them and a local device.
type syncPair struct {
	t     *testing.T
	up    *harness
	local *harness
	link  *outage
	dev   *shadowClient
}

// startSyncPair starts both brokers. The local one syncs dev1's classic shadow and its named shadow
// cfg, and the core thing's (gateway-1's) classic shadow, in direction; bridge, if given, is more of
// the bridge block.
func startSyncPair(t *testing.T, direction string, bridge ...map[string]any) *syncPair {
	t.Helper()
	up := startUpstream(t)
	up.writePolicy("sync", syncPolicy)
	id := up.coreIdentity("gateway-1", "sync")
	link := newOutage(t, up.addr())
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(link.addr), id)
		setBridge(c, nil)
		for _, kv := range bridge {
			setBridge(c, kv)
		}
		setShadowSync(c, map[string]any{
			"coreThing":       map[string]any{"classic": true},
			"shadowDocuments": []any{map[string]any{"thingName": "dev1", "classic": true, "namedShadows": []any{"cfg"}}},
			"direction":       direction,
		})
	})
	local.record(t, "upstream connected", map[string]string{"clientId": "gateway-1", "status": "Success"})
	local.writePolicy("sync", syncPolicy)
	dev := local.shadowV3(local.createDevice("dev1", "sync"), "dev1", "dev1")
	return &syncPair{t: t, up: up, local: local, link: link, dev: dev}
}

// setShadowSync sets shadow.synchronize (keys lower-cased, as viper reads a file).
func setShadowSync(cfg *config.Config, sync map[string]any) {
	sec := map[string]any{}
	if old, ok := cfg.Sections["shadow"].(map[string]any); ok {
		for k, v := range old {
			sec[k] = v
		}
	}
	low := map[string]any{}
	for k, v := range sync {
		low[strings.ToLower(k)] = v
	}
	sec["synchronize"] = low
	cfg.Sections["shadow"] = sec
}

// shadowDoc reads a shadow through a broker's iot-data API: nil when there is none.
func shadowDoc(t *testing.T, h *harness, thing, name string) map[string]any {
	t.Helper()
	path := "/things/" + thing + "/shadow"
	if name != "" {
		path += "?name=" + name
	}
	code, _, body := h.iotdata(t, "GET", path, "")
	switch code {
	case 200:
		var doc map[string]any
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("GetThingShadow %s: %v", path, err)
		}
		return doc
	case 404:
		return nil
	}
	t.Fatalf("GetThingShadow %s: %d %s", path, code, body)
	return nil
}

// stateOf is a shadow's desired and reported state as JSON, "none" when there is no shadow.
func stateOf(doc map[string]any) string {
	if doc == nil {
		return "none"
	}
	st, _ := doc["state"].(map[string]any)
	out := map[string]any{}
	for _, k := range []string{"desired", "reported"} {
		if v, ok := st[k]; ok {
			out[k] = v
		}
	}
	return mustJSON(out)
}

func versionOfDoc(doc map[string]any) int {
	v, _ := doc["version"].(float64)
	return int(v)
}

// waitState waits until a broker's shadow holds want (stateOf's JSON or "none") and returns it.
func waitState(t *testing.T, h *harness, where, thing, name, want string) map[string]any {
	t.Helper()
	if want != "none" {
		want = canonJSON(t, want)
	}
	deadline := time.Now().Add(waitFor)
	for {
		doc := shadowDoc(t, h, thing, name)
		if got := stateOf(doc); got == want {
			return doc
		} else if time.Now().After(deadline) {
			t.Fatalf("%s shadow %s/%s is %s, want %s", where, thing, name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// update changes a broker's shadow through its iot-data API.
func updateShadow(t *testing.T, h *harness, thing, name, doc string) {
	t.Helper()
	path := "/things/" + thing + "/shadow"
	if name != "" {
		path += "?name=" + name
	}
	if code, _, body := h.iotdata(t, "POST", path, doc); code != 200 {
		t.Fatalf("UpdateThingShadow %s: %d %s", path, code, body)
	}
}

func deleteShadow(t *testing.T, h *harness, thing, name string) {
	t.Helper()
	path := "/things/" + thing + "/shadow"
	if name != "" {
		path += "?name=" + name
	}
	if code, _, body := h.iotdata(t, "DELETE", path, ""); code != 200 {
		t.Fatalf("DeleteThingShadow %s: %d %s", path, code, body)
	}
}

// quiet waits until the sync has been idle for a while (no write of its for 300 ms) and then checks
// that both versions of a shadow stayed where they were: no ping-pong between the two brokers.
func (p *syncPair) quiet(thing, name string, localVersion, cloudVersion int) {
	p.t.Helper()
	time.Sleep(300 * time.Millisecond)
	l, c := shadowDoc(p.t, p.local, thing, name), shadowDoc(p.t, p.up, thing, name)
	if versionOfDoc(l) != localVersion || versionOfDoc(c) != cloudVersion {
		p.t.Fatalf("%s/%s: local version %d, upstream version %d; want %d and %d (a sync loop?)", thing, name,
			versionOfDoc(l), versionOfDoc(c), localVersion, cloudVersion)
	}
}

// TestShadowSyncBothWays (betweenDeviceAndCloud): a local device's update reaches the upstream's
// shadow; an update on the upstream reaches the local shadow and the device gets the delta; named and
// the core thing's shadows too; each change is written once on each side, with no echo.
func TestShadowSyncBothWays(t *testing.T) {
	p := startSyncPair(t, "betweenDeviceAndCloud")
	P, Pn := "$aws/things/dev1/shadow", "$aws/things/dev1/shadow/name/cfg"

	p.dev.pub(P+"/update", `{"state":{"reported":{"temp":20}},"clientToken":"r1"}`)
	p.dev.await([]string{P + "/update/accepted"}, nil)
	waitState(t, p.up, "upstream", "dev1", "", `{"reported":{"temp":20}}`)

	updateShadow(t, p.up, "dev1", "", `{"state":{"desired":{"led":"on"}}}`)
	m := p.dev.await([]string{P + "/update/delta"}, nil)
	if mustJSON(m[P+"/update/delta"]["state"]) != `{"led":"on"}` {
		t.Fatalf("delta %v", m)
	}
	waitState(t, p.local, "local", "dev1", "", `{"desired":{"led":"on"},"reported":{"temp":20}}`)

	// The device follows the delta; the upstream sees the device in sync.
	p.dev.pub(P+"/update", `{"state":{"reported":{"led":"on"}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"desired":{"led":"on"},"reported":{"temp":20,"led":"on"}}`)
	p.quiet("dev1", "", 3, 3)

	// A named shadow, both ways, and a key removed.
	p.dev.pub(Pn+"/update", `{"state":{"desired":{"mode":"eco","fan":1}}}`)
	waitState(t, p.up, "upstream", "dev1", "cfg", `{"desired":{"mode":"eco","fan":1}}`)
	updateShadow(t, p.up, "dev1", "cfg", `{"state":{"desired":{"fan":null}}}`)
	waitState(t, p.local, "local", "dev1", "cfg", `{"desired":{"mode":"eco"}}`)
	p.quiet("dev1", "cfg", 2, 2)

	// The core thing's classic shadow (coreThing), from the cloud.
	updateShadow(t, p.up, "gateway-1", "", `{"state":{"desired":{"fw":"2.0"}}}`)
	waitState(t, p.local, "local", "gateway-1", "", `{"desired":{"fw":"2.0"}}`)

	// An application connected to the upstream over MQTT, as in the cloud.
	app := p.up.shadowV3(p.up.createDevice("cloud-app", "sync"), "cloud-app", "dev1")
	app.pub(P+"/update", `{"state":{"desired":{"led":"off"}},"clientToken":"app"}`)
	app.await([]string{P + "/update/accepted"}, nil)
	m = p.dev.await([]string{P + "/update/delta"}, nil)
	if mustJSON(m[P+"/update/delta"]["state"]) != `{"led":"off"}` {
		t.Fatalf("delta %v", m)
	}

	// A shadow synchronize does not name stays local.
	p.dev.pub("$aws/things/dev1/shadow/name/private/update", `{"state":{"reported":{"x":1}}}`)
	p.dev.await([]string{"$aws/things/dev1/shadow/name/private/update/accepted"}, nil)
	p.quiet("dev1", "cfg", 2, 2)
	if d := shadowDoc(t, p.up, "dev1", "private"); d != nil {
		t.Fatalf("an unsynced shadow reached the upstream: %v", d)
	}
	p.local.record(t, "shadow synced", map[string]string{"direction": "to-cloud", "operation": "update", "deviceShadowName": "dev1"})
	p.local.record(t, "shadow synced", map[string]string{"direction": "to-device", "operation": "update", "shadowName": "cfg"})
	if v := p.local.metric(`ggbroker_shadow_sync_writes_total{direction="to-cloud",operation="update"}`); v != 3 {
		t.Fatalf("writes to the cloud: %v, want 3", v)
	}
}

// TestShadowSyncConflict: both sides change while the link is down; when it is back, the full sync
// takes desired from the cloud and reported from the device (greengrass-v2/sync-shadows-with-iot-core.md),
// once, and the device gets the cloud's desired as a delta. Updates made during the outage are all
// synced: the sync does not stop after an outage.
func TestShadowSyncConflict(t *testing.T) {
	p := startSyncPair(t, "betweenDeviceAndCloud")
	P := "$aws/things/dev1/shadow"
	p.dev.pub(P+"/update", `{"state":{"desired":{"color":"red"},"reported":{"color":"red"}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"desired":{"color":"red"},"reported":{"color":"red"}}`)

	p.link.cut()
	p.local.record(t, "upstream disconnected", nil)
	for i := range 3 {
		p.dev.pub(P+"/update", fmt.Sprintf(`{"state":{"desired":{"color":"blue"},"reported":{"color":"red","n":%d}}}`, i))
	}
	updateShadow(t, p.up, "dev1", "", `{"state":{"desired":{"color":"green"}}}`)
	updateShadow(t, p.up, "dev1", "", `{"state":{"reported":{"cloudOnly":true}}}`)
	p.link.restore()

	want := `{"desired":{"color":"green"},"reported":{"color":"red","n":2}}`
	waitState(t, p.up, "upstream", "dev1", "", want)
	waitState(t, p.local, "local", "dev1", "", want)
	// Local: 1 + 3 device updates + 1 sync; upstream: 1 sync + 2 cloud updates + 1 sync.
	p.quiet("dev1", "", 5, 4)

	// Realtime again after the outage.
	p.dev.pub(P+"/update", `{"state":{"reported":{"color":"green"}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"desired":{"color":"green"},"reported":{"color":"green","n":2}}`)
}

// TestShadowSyncDeviceToCloud: the device's shadow is copied up; the cloud's changes are not copied
// down, and the device's next change wins over them (the stale version meets a 409, which costs one
// fresh read, not a loop).
func TestShadowSyncDeviceToCloud(t *testing.T) {
	p := startSyncPair(t, "deviceToCloud")
	P := "$aws/things/dev1/shadow"
	p.dev.pub(P+"/update", `{"state":{"reported":{"a":1}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"reported":{"a":1}}`)

	updateShadow(t, p.up, "dev1", "", `{"state":{"desired":{"cloud":true}}}`)
	p.quiet("dev1", "", 1, 2)
	waitState(t, p.local, "local", "dev1", "", `{"reported":{"a":1}}`)

	p.dev.pub(P+"/update", `{"state":{"reported":{"a":2}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"reported":{"a":2}}`)
	p.quiet("dev1", "", 2, 3)
	if v := p.local.metric("ggbroker_shadow_sync_conflicts_total"); v != 1 {
		t.Fatalf("conflicts: %v, want 1", v)
	}
	if v := p.local.metric(`ggbroker_shadow_sync_writes_total{direction="to-device",operation="update"}`); v > 0 {
		t.Fatalf("local writes in deviceToCloud: %v", v)
	}
}

// TestShadowSyncCloudToDevice: the cloud's shadow is copied down; the device's changes are not copied
// up.
func TestShadowSyncCloudToDevice(t *testing.T) {
	p := startSyncPair(t, "cloudToDevice")
	P := "$aws/things/dev1/shadow"
	updateShadow(t, p.up, "dev1", "", `{"state":{"desired":{"x":1}}}`)
	m := p.dev.await([]string{P + "/update/delta"}, nil)
	if mustJSON(m[P+"/update/delta"]["state"]) != `{"x":1}` {
		t.Fatalf("delta %v", m)
	}
	p.dev.pub(P+"/update", `{"state":{"reported":{"y":2}}}`)
	p.quiet("dev1", "", 2, 1)
	waitState(t, p.up, "upstream", "dev1", "", `{"desired":{"x":1}}`)
	if v := p.local.metric(`ggbroker_shadow_sync_writes_total{direction="to-cloud",operation="update"}`); v > 0 {
		t.Fatalf("cloud writes in cloudToDevice: %v", v)
	}
}

// TestShadowSyncDelete: deletes propagate both ways; a shadow re-created on the other side is copied,
// never deleted; and a delete made while the link was down loses to an update the other side made
// meanwhile (the shadow manager deletes re-created shadows, aws-greengrass-shadow-manager#98).
func TestShadowSyncDelete(t *testing.T) {
	p := startSyncPair(t, "betweenDeviceAndCloud")
	P := "$aws/things/dev1/shadow"
	p.dev.pub(P+"/update", `{"state":{"reported":{"a":1}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"reported":{"a":1}}`)

	// Local delete -> cloud delete.
	p.dev.pub(P+"/delete", `{"clientToken":"del"}`)
	p.dev.await([]string{P + "/delete/accepted"}, nil)
	waitState(t, p.up, "upstream", "dev1", "", "none")

	// Re-created in the cloud -> re-created locally, and stays.
	updateShadow(t, p.up, "dev1", "", `{"state":{"desired":{"b":2}}}`)
	waitState(t, p.local, "local", "dev1", "", `{"desired":{"b":2}}`)
	time.Sleep(300 * time.Millisecond)
	waitState(t, p.up, "upstream", "dev1", "", `{"desired":{"b":2}}`)

	// Cloud delete -> local delete.
	deleteShadow(t, p.up, "dev1", "")
	p.dev.await([]string{P + "/delete/accepted"}, nil)
	waitState(t, p.local, "local", "dev1", "", "none")

	// Both sides again, then a local delete during an outage while the cloud updates: kept everywhere.
	p.dev.pub(P+"/update", `{"state":{"reported":{"c":3}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"reported":{"c":3}}`)
	p.link.cut()
	p.local.record(t, "upstream disconnected", nil)
	p.dev.pub(P+"/delete", `{}`)
	updateShadow(t, p.up, "dev1", "", `{"state":{"desired":{"d":4}}}`)
	p.link.restore()
	waitState(t, p.local, "local", "dev1", "", `{"desired":{"d":4},"reported":{"c":3}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"desired":{"d":4},"reported":{"c":3}}`)
}

// TestShadowSyncAcrossRestart: what both sides agreed on is stored, so a core device that restarts
// tells a shadow the cloud deleted meanwhile (deleted locally too) from one never synced (copied up).
func TestShadowSyncAcrossRestart(t *testing.T) {
	p := startSyncPair(t, "betweenDeviceAndCloud")
	P := "$aws/things/dev1/shadow"
	p.dev.pub(P+"/update", `{"state":{"reported":{"a":1}}}`)
	waitState(t, p.up, "upstream", "dev1", "", `{"reported":{"a":1}}`)
	// Recorded once the sync record is stored.
	p.local.record(t, "shadow synced", map[string]string{"direction": "to-cloud", "deviceShadowName": "dev1", "shadowName": ""})
	p.local.stop()

	deleteShadow(t, p.up, "dev1", "")
	updateShadow(t, p.up, "dev1", "cfg", `{"state":{"desired":{"new":true}}}`)
	local := startWith(t, p.local.cfg)
	waitState(t, local, "local", "dev1", "", "none")
	waitState(t, local, "local", "dev1", "cfg", `{"desired":{"new":true}}`)
	time.Sleep(300 * time.Millisecond)
	waitState(t, p.up, "upstream", "dev1", "", "none")
}

// TestShadowSyncPeriodic: strategy periodic syncs every delay seconds, not on each change.
func TestShadowSyncPeriodic(t *testing.T) {
	up := startUpstream(t)
	up.writePolicy("sync", syncPolicy)
	id := up.coreIdentity("gateway-1", "sync")
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(up.addr()), id)
		setBridge(c, nil)
		setShadowSync(c, map[string]any{"shadowDocuments": []any{map[string]any{"thingName": "dev1"}}})
		sec := c.Sections["shadow"].(map[string]any)
		sec["strategy"] = map[string]any{"type": "periodic", "delay": 1}
	})
	local.record(t, "upstream connected", nil)
	local.writePolicy("sync", syncPolicy)
	dev := local.shadowV3(local.createDevice("dev1", "sync"), "dev1", "dev1")
	start := time.Now()
	dev.pub("$aws/things/dev1/shadow/update", `{"state":{"reported":{"a":1}}}`)
	waitState(t, up, "upstream", "dev1", "", `{"reported":{"a":1}}`)
	updateShadow(t, up, "dev1", "", `{"state":{"desired":{"b":2}}}`)
	waitState(t, local, "local", "dev1", "", `{"desired":{"b":2},"reported":{"a":1}}`)
	if time.Since(start) < time.Second {
		t.Fatalf("synced both ways within %s: not periodic", time.Since(start))
	}
}

// TestShadowSyncBesideBridgeTraffic: the sync's requests share the upstream session with the bridge's
// spooled messages; each side's PUBACKs reach their own sender, nothing is lost or acknowledged twice.
func TestShadowSyncBesideBridgeTraffic(t *testing.T) {
	p := startSyncPair(t, "betweenDeviceAndCloud", map[string]any{
		"mqttTopicMapping":           map[string]any{"Up": mapping("telemetry/#", "LocalMqtt", "IotCore", "")},
		"upstreamPublishesPerSecond": 0,
	})
	cloudApp := p.up.mustConnectV3(p.up.createDevice("cloud-app", "sync"))
	got := collectV3(t, cloudApp, "telemetry/#")
	pub := p.local.mustConnectV3(p.local.createDevice("pub", "sync"))
	P := "$aws/things/dev1/shadow"
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			p.dev.pub(P+"/update", fmt.Sprintf(`{"state":{"reported":{"i":%d}}}`, i))
		}
	}()
	publishMany(t, pub, "telemetry/pub", 300)
	<-done
	expectInOrder(t, got, "telemetry/pub", 0, 300)
	waitState(t, p.up, "upstream", "dev1", "", `{"reported":{"i":19}}`)
}
