package shadow

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/service"
)

func st(t *testing.T, desired, reported string) shadowState {
	t.Helper()
	var s shadowState
	for _, x := range []struct {
		raw string
		to  *map[string]any
	}{{desired, &s.Desired}, {reported, &s.Reported}} {
		if x.raw == "" {
			continue
		}
		v, err := decodeJSON([]byte(x.raw))
		if err != nil {
			t.Fatal(err)
		}
		*x.to = v.(map[string]any)
	}
	return s
}

// TestPlanSync: the conflict rules of greengrass-v2/sync-shadows-with-iot-core.md and the delete rule
// (a delete never removes a shadow changed on its side since the last sync).
func TestPlanSync(t *testing.T) {
	a := st(t, `{"c":"red"}`, `{"c":"red"}`)
	localNew := st(t, `{"c":"blue"}`, `{"c":"blue","n":1}`)
	cloudNew := st(t, `{"c":"green"}`, `{"x":1}`)
	rec := &syncRecord{Local: view{Exists: true, Version: 3}, Cloud: view{Exists: true, Version: 7, State: a}}
	same := view{Exists: true, Version: 3, State: a}
	sameCloud := view{Exists: true, Version: 7, State: a}
	changedLocal := view{Exists: true, Version: 4, State: localNew}
	changedCloud := view{Exists: true, Version: 8, State: cloudNew}
	deletedLocal := view{Exists: false, Version: 3}
	deletedCloud := view{Exists: false, Version: 7}
	merged := st(t, `{"c":"green"}`, `{"c":"blue","n":1}`)
	cases := []struct {
		name         string
		dir          Direction
		rec          *syncRecord
		local, cloud view
		wantLocal    writeKind
		wantCloud    writeKind
		to           *shadowState
	}{
		{"nothing changed", BetweenDeviceAndCloud, rec, same, sameCloud, writeNone, writeNone, nil},
		{"local changed", BetweenDeviceAndCloud, rec, changedLocal, sameCloud, writeNone, writeUpdate, &localNew},
		{"cloud changed", BetweenDeviceAndCloud, rec, same, changedCloud, writeUpdate, writeNone, &cloudNew},
		{"both: desired from the cloud, reported from the device", BetweenDeviceAndCloud, rec, changedLocal, changedCloud, writeUpdate, writeUpdate, &merged},
		{"deviceToCloud: cloud change ignored", DeviceToCloud, rec, same, changedCloud, writeNone, writeNone, nil},
		{"deviceToCloud: local wins", DeviceToCloud, rec, changedLocal, changedCloud, writeNone, writeUpdate, &localNew},
		{"cloudToDevice: local change ignored", CloudToDevice, rec, changedLocal, sameCloud, writeNone, writeNone, nil},
		{"cloudToDevice: cloud wins", CloudToDevice, rec, changedLocal, changedCloud, writeUpdate, writeNone, &cloudNew},
		{"local delete", BetweenDeviceAndCloud, rec, deletedLocal, sameCloud, writeNone, writeDelete, nil},
		{"cloud delete", BetweenDeviceAndCloud, rec, same, deletedCloud, writeDelete, writeNone, nil},
		{"local delete loses to a cloud change", BetweenDeviceAndCloud, rec, deletedLocal, changedCloud, writeUpdate, writeNone, &cloudNew},
		{"cloud delete loses to a local change", BetweenDeviceAndCloud, rec, changedLocal, deletedCloud, writeNone, writeUpdate, &localNew},
		{"deviceToCloud: no delete of a re-created cloud shadow", DeviceToCloud, rec, deletedLocal, changedCloud, writeNone, writeNone, nil},
		{"cloudToDevice: no delete of a changed local shadow", CloudToDevice, rec, changedLocal, deletedCloud, writeNone, writeNone, nil},
		{"first sync, local only", BetweenDeviceAndCloud, nil, changedLocal, view{}, writeNone, writeUpdate, &localNew},
		{"first sync, cloud only", BetweenDeviceAndCloud, nil, view{}, changedCloud, writeUpdate, writeNone, &cloudNew},
		{"first sync, both", BetweenDeviceAndCloud, nil, changedLocal, changedCloud, writeUpdate, writeUpdate, &merged},
		{"first sync, a local tombstone is no delete", BetweenDeviceAndCloud, nil, deletedLocal, changedCloud, writeUpdate, writeNone, &cloudNew},
		{"same state on both sides: nothing written", BetweenDeviceAndCloud, nil, view{Exists: true, Version: 1, State: a}, view{Exists: true, Version: 9, State: a}, writeNone, writeNone, nil},
	}
	for _, tc := range cases {
		p := planSync(tc.dir, tc.rec, tc.local, tc.cloud)
		if p.local.kind != tc.wantLocal || p.cloud.kind != tc.wantCloud {
			t.Errorf("%s: local %d cloud %d, want %d and %d", tc.name, p.local.kind, p.cloud.kind, tc.wantLocal, tc.wantCloud)
			continue
		}
		for _, w := range []write{p.local, p.cloud} {
			if w.kind == writeUpdate && tc.to != nil && !w.to.equal(*tc.to) {
				t.Errorf("%s: writes %s, want %s", tc.name, marshal(w.to), marshal(*tc.to))
			}
		}
	}
}

// TestPatchFor: the patch turns one state into the other through the service's own merge.
func TestPatchFor(t *testing.T) {
	cases := []struct{ from, to shadowState }{
		{st(t, `{"a":1,"b":{"c":1,"d":2}}`, `{"r":1}`), st(t, `{"a":2,"b":{"c":1}}`, "")},
		{st(t, "", ""), st(t, `{"a":[1,2]}`, `{"o":{"p":true}}`)},
		{st(t, `{"a":{"b":1}}`, ""), st(t, `{"a":5}`, "")},
		{st(t, `{"a":5}`, ""), st(t, `{"a":{"b":1}}`, "")},
		{st(t, `{"n":1}`, ""), st(t, `{"n":1.0}`, "")},
	}
	for _, tc := range cases {
		patch := patchFor(tc.from, tc.to)
		if patch == nil {
			if !tc.from.equal(tc.to) {
				t.Errorf("%s -> %s: no patch", marshal(tc.from), marshal(tc.to))
			}
			continue
		}
		req, e := ParseUpdate(marshal(map[string]any{"state": patch}))
		if e != nil {
			t.Fatalf("patch %s: %v", marshal(patch), e)
		}
		old := &Document{Desired: tc.from.Desired, Reported: tc.from.Reported, Version: 1}
		u, e := Apply(old, req, 1, DefaultLimits)
		if e != nil {
			t.Fatal(e)
		}
		if got := (shadowState{Desired: u.Current.Desired, Reported: u.Current.Reported}); !got.equal(tc.to) {
			t.Errorf("%s + %s = %s, want %s", marshal(tc.from), marshal(patch), marshal(got), marshal(tc.to))
		}
	}
}

// TestSyncConfig: Greengrass' keys verbatim, the direction in any case, errors naming the key.
func TestSyncConfig(t *testing.T) {
	yes, no := true, false
	c := Config{Synchronize: SyncConfig{
		CoreThing:          &SyncShadows{NamedShadows: []string{"config", reservedShadow}},
		ShadowDocuments:    []SyncDocument{{ThingName: "sensor-1", NamedShadows: []string{"settings"}}, {ThingName: "sensor-1", Classic: &yes}},
		ShadowDocumentsMap: map[string]SyncShadows{"sensor-2": {Classic: &no, NamedShadows: []string{"settings"}}},
		Direction:          "DEVICETOCLOUD",
	}, RateLimits: SyncRateLimits{MaxOutboundSyncUpdatesPerSecond: 100}}
	s, err := c.checkSync("core-1", map[string]string{"sensor-2": "Sensor-2"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range s.shadows {
		got = append(got, id.key())
	}
	if strings.Join(got, " ") != "core-1/ core-1/config sensor-1/ sensor-1/settings Sensor-2/settings" || s.direction != DeviceToCloud || len(s.warnings) != 1 {
		t.Fatalf("shadows %v, direction %s, warnings %v", got, s.direction, s.warnings)
	}
	bad := []struct {
		c    Config
		core string
		want string
	}{
		{Config{Synchronize: SyncConfig{Direction: "up"}}, "", "shadow.synchronize.direction"},
		{Config{Synchronize: SyncConfig{CoreThing: &SyncShadows{}}}, "", "shadow.synchronize.coreThing: core.thingName is empty"},
		{Config{Synchronize: SyncConfig{ShadowDocuments: []SyncDocument{{ThingName: "a/b"}}}}, "", "shadow.synchronize.shadowDocuments[0].thingName"},
		{Config{Synchronize: SyncConfig{ShadowDocuments: []SyncDocument{{ThingName: "a", NamedShadows: []string{"x y"}}}}}, "", "namedShadows"},
		{Config{Strategy: SyncStrategy{Type: "periodic"}}, "", "shadow.strategy.delay"},
		{Config{Strategy: SyncStrategy{Type: "sometimes"}}, "", "shadow.strategy.type"},
	}
	for _, tc := range bad {
		if _, err := tc.c.checkSync(tc.core, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %s", tc.c, err, tc.want)
		}
	}
	def, err := config.Default(Section)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := DecodeConfig(def)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := dc.checkSync("", nil); err != nil || s.shadows != nil || s.direction != BetweenDeviceAndCloud || s.periodic != 0 {
		t.Fatalf("defaults: %+v %v", s, err)
	}
}

// fakeUpstream is a service.Upstream whose shadow service answers as answer says.
type fakeUpstream struct {
	mu       sync.Mutex
	subs     map[string]service.UpstreamHandler
	watchers []func(bool)
	requests []string // the topics published
	answer   func(op string) (kind string, body map[string]any)
}

func (u *fakeUpstream) Publish(_ context.Context, m service.Message) error {
	u.mu.Lock()
	u.requests = append(u.requests, m.Topic)
	u.mu.Unlock()
	var req map[string]any
	_ = json.Unmarshal(m.Payload, &req)
	prefix, op := m.Topic[:strings.LastIndex(m.Topic, "/")], m.Topic[strings.LastIndex(m.Topic, "/")+1:]
	kind, body := u.answer(op)
	body["clientToken"] = req["clientToken"]
	go func() {
		u.mu.Lock()
		h := u.subs[prefix+"/+/+"]
		u.mu.Unlock()
		h(service.Message{Topic: prefix + "/" + op + "/" + kind, Payload: marshal(body)})
	}()
	return nil
}

func (u *fakeUpstream) Subscribe(filter string, h service.UpstreamHandler) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.subs[filter] = h
	return nil
}

func (u *fakeUpstream) Watch(fn func(bool)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.watchers = append(u.watchers, fn)
	fn(true)
}

func (u *fakeUpstream) count(suffix string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, r := range u.requests {
		if strings.HasSuffix(r, suffix) {
			n++
		}
	}
	return n
}

// TestSyncNoLoopOn409: an upstream that answers every update with 409 gets one fresh get and one more
// try per attempt, then the sync backs off: the shadow manager loops there
// (aws-greengrass-shadow-manager#116, "Received conflict ... Retrying as a full sync").
func TestSyncNoLoopOn409(t *testing.T) {
	cfg, err := config.Default(Section)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sections["shadow"].(map[string]any)["synchronize"] = map[string]any{
		"shadowdocuments": []any{map[string]any{"thingName": "dev1"}}}
	svc, err := New(service.Deps{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	s := svc.(*Service)
	up := &fakeUpstream{subs: map[string]service.UpstreamHandler{}, answer: func(op string) (string, map[string]any) {
		if op == "update" {
			return "rejected", map[string]any{"code": 409, "message": "Version conflict"}
		}
		return "accepted", map[string]any{"state": map[string]any{"desired": map[string]any{"a": 1}}, "version": 5}
	}}
	h := newFakeHost(zap.NewNop())
	h.up = up
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = s.Stop() }()
	// The first full sync copies the cloud's shadow down (no update upstream).
	deadline := time.Now().Add(5 * time.Second)
	for {
		if d, _, _ := s.shadows.Get(ID{Thing: "dev1"}); d != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cloud's shadow was not copied down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.deliver("$aws/things/dev1/shadow/update", dev1, `{"state":{"reported":{"r":1}}}`)
	time.Sleep(600 * time.Millisecond)
	if n, g := up.count("/update"), up.count("/get"); n != 2 || g != 2 {
		t.Fatalf("within 600 ms: %d updates and %d gets upstream, want 2 and 2 (one fresh get after the 409)", n, g)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := up.count("/update"); n < 3 || n > 6 {
		t.Fatalf("after 2 s: %d updates upstream, want a retry or two with backoff, not a loop", n)
	}
}
