package shadow

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const T0 = int64(1719853620) // the clock of these tests, epoch seconds

func fixedClock(ts *int64) func() time.Time { return func() time.Time { return time.Unix(*ts, 0) } }

// TestParseUpdateRefusals: the spec's 400/415 cases (services/shadow.md §6, acceptance 14, 16-20) with
// AWS' messages verbatim, and whether the token is echoed.
func TestParseUpdateRefusals(t *testing.T) {
	long := strings.Repeat("x", 65)
	deep6 := `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":1}}}}}}}`
	deep7 := `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}}`
	cases := []struct {
		name, payload string
		code          int
		msg           string // "" means accepted
		token         string
	}{
		{"not json (17)", `not json`, 400, "Invalid JSON", ""},
		{"empty", ``, 400, "Invalid JSON", ""},
		{"array", `[1]`, 400, "Invalid JSON", ""},
		{"trailing data", `{"state":{}} x`, 400, "Invalid JSON", ""},
		{"no state (18)", `{"clientToken":"x"}`, 400, "Missing required node: state", "x"},
		{"state string (19)", `{"state":"abc"}`, 400, "State node must be an object", ""},
		{"desired number (19)", `{"state":{"desired":5}}`, 400, "Desired node must be an object", ""},
		{"reported array", `{"state":{"reported":[1]}}`, 400, "Reported node must be an object", ""},
		{"unknown state node", `{"state":{"color":"red"}}`, 400, "State contains an invalid node", ""},
		{"null in array (14)", `{"state":{"desired":{"x":[null,"a"]}}}`, 400, "State contains an invalid node", ""},
		{"null in nested array", `{"state":{"reported":{"x":[[1,null]]}}}`, 400, "State contains an invalid node", ""},
		{"token 65 bytes (16)", `{"state":{},"clientToken":"` + long + `"}`, 400, "Invalid clientToken", ""},
		{"token not a string", `{"state":{},"clientToken":5}`, 400, "Invalid clientToken", ""},
		{"token 64 bytes (16)", `{"state":{},"clientToken":"` + long[:64] + `"}`, 0, "", long[:64]},
		{"version string", `{"state":{},"version":"3"}`, 400, "Invalid version", ""},
		{"version fraction", `{"state":{},"version":1.5}`, 400, "Invalid version", ""},
		{"version negative", `{"state":{},"version":-1}`, 400, "Invalid version", ""},
		{"nesting 6 (20)", deep6, 0, "", ""},
		{"nesting 7 (20)", deep7, 400, "JSON contains too many levels of nesting; maximum is 6", ""},
		{"array counts as a level", `{"state":{"desired":{"a":{"b":{"c":{"d":[[1]]}}}}}}`, 400, "JSON contains too many levels of nesting; maximum is 6", ""},
		{"not utf-8", "{\"state\":{\"desired\":{\"a\":\"\xff\"}}}", 415, "Unsupported documented encoding; supported encoding is UTF-8", ""},
		{"v1 sdk shape (22)", `{"state":{"reported":{"t":1}},"thingName":"dev1"}`, 0, "", ""},
		{"delta ignored (23)", `{"state":{"reported":{"t":1},"delta":{"z":1}}}`, 0, "", ""},
		{"state null (13)", `{"state":null}`, 0, "", ""},
		{"desired null (12)", `{"state":{"desired":null}}`, 0, "", ""},
		{"empty state", `{"state":{}}`, 0, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, e := ParseUpdate([]byte(tc.payload))
			if tc.msg == "" {
				if e != nil {
					t.Fatalf("refused: %v", e)
				}
				if req.Token != tc.token {
					t.Fatalf("token %q, want %q", req.Token, tc.token)
				}
				return
			}
			if e == nil || e.Code != tc.code || e.Message != tc.msg {
				t.Fatalf("got %v, want %d %s", e, tc.code, tc.msg)
			}
			if req.Token != tc.token {
				t.Fatalf("token for the rejection %q, want %q", req.Token, tc.token)
			}
		})
	}
}

// step is one request in a sequence against one shadow, and what its answers must hold.
type step struct {
	op      Operation
	payload string
	// code is the refusal expected (0: accepted).
	code int
	msg  string
	// want maps dotted paths of the answer (accepted, or get's document) to their JSON; a value of
	// "-" means the path must be absent.
	want map[string]string
	// delta: the update/delta document's paths ("-" alone: no delta published).
	delta map[string]string
	// docs: the update/documents document's paths.
	docs map[string]string
}

func runSteps(t *testing.T, s *Shadows, id ID, steps []step) {
	t.Helper()
	for i, st := range steps {
		var answer, delta, docs []byte
		var e *Error
		switch st.op {
		case OpUpdate:
			req, pe := ParseUpdate([]byte(st.payload))
			e = pe
			if e == nil {
				var u *Update
				u, e, _ = s.Update(id, req, nil)
				if u != nil {
					answer, delta, docs = u.Accepted, u.Delta, u.Documents()
				}
			}
		case OpGet:
			tok, has, pe := ParseTokenOnly([]byte(st.payload))
			e = pe
			if e == nil {
				var d *Document
				d, e, _ = s.Get(id)
				if d != nil {
					answer = GetResponse(d, s.Now(), tok, has)
				}
			}
		case OpDelete:
			tok, has, pe := ParseTokenOnly([]byte(st.payload))
			e = pe
			if e == nil {
				var v int64
				v, e, _ = s.Delete(id, nil)
				if e == nil {
					answer = DeleteResponse(v, s.Now(), tok, has)
				}
			}
		}
		if st.code != 0 {
			if e == nil || e.Code != st.code || (st.msg != "" && e.Message != st.msg) {
				t.Fatalf("step %d %s %s: got %v (answer %s), want %d %s", i, st.op, st.payload, e, answer, st.code, st.msg)
			}
			continue
		}
		if e != nil {
			t.Fatalf("step %d %s %s: refused %v", i, st.op, st.payload, e)
		}
		checkPaths(t, i, "answer", answer, st.want)
		if len(st.delta) == 1 && st.delta["-"] != "" {
			if delta != nil {
				t.Fatalf("step %d: delta published: %s", i, delta)
			}
		} else if st.delta != nil {
			if delta == nil {
				t.Fatalf("step %d: no delta published", i)
			}
			checkPaths(t, i, "delta", delta, st.delta)
		}
		if st.docs != nil {
			checkPaths(t, i, "documents", docs, st.docs)
		}
	}
}

func checkPaths(t *testing.T, i int, what string, raw []byte, want map[string]string) {
	t.Helper()
	if len(want) == 0 {
		return
	}
	doc := obj(t, raw)
	for path, w := range want {
		got, ok := at(doc, path)
		if w == "-" {
			if ok {
				t.Fatalf("step %d %s: %s present (%s) in %s", i, what, path, jsonOf(got), raw)
			}
			continue
		}
		if !ok {
			t.Fatalf("step %d %s: %s missing in %s", i, what, path, raw)
		}
		if jsonOf(got) != canon(t, w) {
			t.Fatalf("step %d %s: %s = %s, want %s (in %s)", i, what, path, jsonOf(got), w, raw)
		}
	}
}

// TestAcceptanceSequences: the spec's acceptance cases 1-13, 15, 22, 23, 25 on the document store.
func TestAcceptanceSequences(t *testing.T) {
	ts := "1719853620"
	noDelta := map[string]string{"-": "x"}
	cases := []struct {
		name  string
		id    ID
		steps []step
	}{
		{"classic lifecycle (1-7, 25)", ID{Thing: "dev1"}, []step{
			{op: OpGet, payload: `{"clientToken":"a"}`, code: 404, msg: "No shadow exists with name: 'dev1'"},
			{op: OpGet, payload: ``, code: 404},
			{op: OpUpdate, payload: `{"state":{"reported":{"c":"green"}},"clientToken":"b"}`,
				want:  map[string]string{"state": `{"reported":{"c":"green"}}`, "metadata.reported.c.timestamp": ts, "version": "1", "clientToken": `"b"`, "timestamp": ts},
				delta: noDelta,
				docs:  map[string]string{"previous": "null", "current.version": "1", "current.state": `{"reported":{"c":"green"}}`, "clientToken": `"b"`}},
			{op: OpUpdate, payload: `{"state":{"desired":{"c":"red"}}}`,
				want:  map[string]string{"version": "2", "clientToken": "-"},
				delta: map[string]string{"state": `{"c":"red"}`, "metadata": `{"c":{"timestamp":` + ts + `}}`, "version": "2", "clientToken": "-"},
				docs:  map[string]string{"previous.version": "1", "current.version": "2", "current.state.desired": `{"c":"red"}`, "current.state.delta": "-"}},
			{op: OpUpdate, payload: `{"state":{"reported":{"s":"x"}}}`,
				want:  map[string]string{"version": "3"},
				delta: map[string]string{"state": `{"c":"red"}`, "version": "3"}},
			{op: OpUpdate, payload: `{"state":{"reported":{"c":"red"}}}`, want: map[string]string{"version": "4"}, delta: noDelta},
			{op: OpGet, payload: `{"clientToken":"g"}`, want: map[string]string{
				"state.desired": `{"c":"red"}`, "state.reported": `{"c":"red","s":"x"}`, "state.delta": "-",
				"metadata.desired.c.timestamp": ts, "metadata.reported.s.timestamp": ts, "version": "4", "clientToken": `"g"`}},
			{op: OpDelete, payload: `{"clientToken":"d"}`, want: map[string]string{"version": "4", "timestamp": ts, "clientToken": `"d"`}},
			{op: OpGet, code: 404},
			{op: OpDelete, code: 404},
			{op: OpUpdate, payload: `{"state":{"reported":{"c":"blue"}}}`, want: map[string]string{"version": "5"},
				docs: map[string]string{"previous": "null", "current.version": "5", "current.state": `{"reported":{"c":"blue"}}`}},
		}},
		{"nested delta (8)", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"desired":{"l":{"c":{"r":1,"g":2}}},"reported":{"l":{"c":{"r":1,"g":0}}}}}`,
				delta: map[string]string{"state": `{"l":{"c":{"g":2}}}`, "metadata": `{"l":{"c":{"g":{"timestamp":` + ts + `}}}}`}},
			{op: OpGet, want: map[string]string{"state.delta": `{"l":{"c":{"g":2}}}`, "metadata.delta": "-"}},
		}},
		{"arrays are values (9)", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"desired":{"a":[1,2]},"reported":{"a":[1]}}}`,
				delta: map[string]string{"state": `{"a":[1,2]}`, "metadata": `{"a":[{"timestamp":` + ts + `},{"timestamp":` + ts + `}]}`}},
			{op: OpUpdate, payload: `{"state":{"desired":{"a":[3]}}}`},
			{op: OpGet, want: map[string]string{"state.desired.a": `[3]`, "metadata.desired.a": `[{"timestamp":` + ts + `}]`}},
		}},
		{"numbers by value (10)", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"desired":{"n":1},"reported":{"n":1.0}}}`, delta: noDelta},
			{op: OpGet, want: map[string]string{"state.delta": "-"}},
		}},
		{"null deletes (11, 12, 13)", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"desired":{"c":"red","k":1},"reported":{"c":"red"}}}`},
			{op: OpUpdate, payload: `{"state":{"desired":{"c":null}}}`,
				want: map[string]string{"state.desired": `{"c":null}`, "metadata.desired.c.timestamp": ts}},
			{op: OpGet, want: map[string]string{"state.desired": `{"k":1}`, "metadata.desired": `{"k":{"timestamp":` + ts + `}}`}},
			{op: OpUpdate, payload: `{"state":{"desired":null}}`, want: map[string]string{"state": `{"desired":null}`}},
			{op: OpGet, want: map[string]string{"state.desired": "-", "metadata.desired": "-", "state.reported": `{"c":"red"}`}},
			{op: OpUpdate, payload: `{"state":null}`, want: map[string]string{"version": "4", "state": "null"}},
			{op: OpGet, want: map[string]string{"state": `{}`, "metadata": `{}`, "version": "4"}},
		}},
		{"empty objects are not kept", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"desired":{"a":{"b":1},"z":{"y":null}}}}`},
			{op: OpUpdate, payload: `{"state":{"desired":{"a":{"b":null}}}}`},
			{op: OpGet, want: map[string]string{"state": `{}`, "version": "2"}},
		}},
		{"type change replaces metadata", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"reported":{"a":1}}}`},
			{op: OpUpdate, payload: `{"state":{"reported":{"a":{"timestamp":5}}}}`},
			{op: OpGet, want: map[string]string{"state.reported.a": `{"timestamp":5}`, "metadata.reported.a": `{"timestamp":{"timestamp":` + ts + `}}`}},
			{op: OpUpdate, payload: `{"state":{"reported":{"a":[true]}}}`},
			{op: OpGet, want: map[string]string{"metadata.reported.a": `[{"timestamp":` + ts + `}]`}},
		}},
		{"optimistic locking (15)", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"reported":{"a":1}},"version":1}`, code: 409, msg: "Version conflict"},
			{op: OpUpdate, payload: `{"state":{"reported":{"a":1}},"version":0}`, want: map[string]string{"version": "1"}},
			{op: OpUpdate, payload: `{"state":{"reported":{"a":2}},"version":0}`, code: 409, msg: "Version conflict"},
			{op: OpUpdate, payload: `{"state":{"reported":{"a":2}},"version":1}`, want: map[string]string{"version": "2"}},
			{op: OpGet, want: map[string]string{"state.reported.a": "2"}},
		}},
		{"extra fields ignored (22, 23)", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"reported":{"t":1},"delta":{"z":1}},"thingName":"dev1"}`,
				want: map[string]string{"state": `{"reported":{"t":1}}`}},
			{op: OpGet, want: map[string]string{"state": `{"reported":{"t":1}}`}},
		}},
		{"named (24)", ID{Thing: "dev1", Name: "cfg"}, []step{
			{op: OpGet, code: 404, msg: "No shadow exists with name: 'cfg'"},
		}},
		{"html characters are not escaped", ID{Thing: "dev1"}, []step{
			{op: OpUpdate, payload: `{"state":{"reported":{"t":"<&>"}}}`, want: map[string]string{"state.reported.t": `"<&>"`}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := T0
			s := NewShadows(newMemStore(), DefaultLimits, fixedClock(&now))
			runSteps(t, s, tc.id, tc.steps)
		})
	}
}

// TestAcceptedAnswerIsRaw: metadata and version of update/accepted exactly as the spec's capture shows
// them (services/shadow.md §2), and the HTML characters AWS does not escape.
func TestAcceptedAnswerIsRaw(t *testing.T) {
	now := T0
	s := NewShadows(newMemStore(), DefaultLimits, fixedClock(&now))
	req, _ := ParseUpdate([]byte(`{"state":{"reported":{"Color":"green"}},"clientToken":"2e073dae"}`))
	u, e, _ := s.Update(ID{Thing: "t"}, req, nil)
	if e != nil {
		t.Fatal(e)
	}
	want := `{"state":{"reported":{"Color":"green"}},"metadata":{"reported":{"Color":{"timestamp":1719853620}}},"version":1,"timestamp":1719853620,"clientToken":"2e073dae"}`
	if string(u.Accepted) != want {
		t.Fatalf("accepted\n%s\nwant\n%s", u.Accepted, want)
	}
}

// TestMetadataKeepsOldTimestamps: a key the update leaves alone keeps its time.
func TestMetadataKeepsOldTimestamps(t *testing.T) {
	now := T0
	s := NewShadows(newMemStore(), DefaultLimits, fixedClock(&now))
	id := ID{Thing: "t"}
	for _, p := range []string{`{"state":{"reported":{"a":1,"o":{"x":1}}}}`, `{"state":{"reported":{"b":2,"o":{"y":2}}}}`} {
		req, _ := ParseUpdate([]byte(p))
		if _, e, _ := s.Update(id, req, nil); e != nil {
			t.Fatal(e)
		}
		now += 100
	}
	d, _, _ := s.Get(id)
	doc := obj(t, GetResponse(d, now, "", false))
	for path, want := range map[string]string{
		"metadata.reported.a.timestamp":   "1719853620",
		"metadata.reported.o.x.timestamp": "1719853620",
		"metadata.reported.b.timestamp":   "1719853720",
		"metadata.reported.o.y.timestamp": "1719853720",
		"timestamp":                       "1719853820",
	} {
		if got, _ := at(doc, path); jsonOf(got) != want {
			t.Errorf("%s = %s, want %s", path, jsonOf(got), want)
		}
	}
}

// TestSizeLimit (21): the merged desired+reported is measured, not the request, metadata not counted,
// and a refused update leaves the shadow as it was.
func TestSizeLimit(t *testing.T) {
	now := T0
	s := NewShadows(newMemStore(), DefaultLimits, fixedClock(&now))
	id := ID{Thing: "t"}
	// {"reported":{"a":"xxx..."}} is 21 bytes of JSON around the value.
	fill := func(n int) string { return strings.Repeat("x", n) }
	upd := func(p string) *Error {
		req, e := ParseUpdate([]byte(p))
		if e != nil {
			return e
		}
		_, e, _ = s.Update(id, req, nil)
		return e
	}
	if e := upd(`{"state":{"reported":{"a":"` + fill(8192-21) + `"}}}`); e != nil {
		t.Fatalf("8192 bytes refused: %v", e)
	}
	// A 30-byte update that tips the merged state over the limit.
	e := upd(`{"state":{"reported":{"b":1}}}`)
	if e == nil || e.Code != 413 || e.Message != "The payload exceeds the maximum size allowed" {
		t.Fatalf("got %v, want 413", e)
	}
	d, _, _ := s.Get(id)
	if d.Version != 1 || d.Reported["b"] != nil {
		t.Fatalf("refused update changed the shadow: version %d, %v", d.Version, d.Reported["b"])
	}
	// Shrinking is allowed even though the request is large.
	if e := upd(`{"state":{"reported":{"a":null,"big":null,"` + fill(9000) + `":null}}}`); e != nil {
		t.Fatalf("a shrinking update refused: %v", e)
	}
}

// TestTombstone: a delete keeps the version for 48 hours; after that a new shadow starts at 1.
func TestTombstone(t *testing.T) {
	now := T0
	s := NewShadows(newMemStore(), DefaultLimits, fixedClock(&now))
	id := ID{Thing: "t", Name: "n"}
	upd := func(p string) (*Update, *Error) {
		req, e := ParseUpdate([]byte(p))
		if e != nil {
			return nil, e
		}
		u, e, _ := s.Update(id, req, nil)
		return u, e
	}
	for i := 0; i < 3; i++ {
		upd(`{"state":{"reported":{"a":1}}}`)
	}
	if v, e, _ := s.Delete(id, nil); e != nil || v != 3 {
		t.Fatalf("delete: %d %v", v, e)
	}
	if names, _, _ := s.ListNamed("t", "", 0); len(names) != 0 {
		t.Fatalf("deleted shadow listed: %v", names)
	}
	if _, e := upd(`{"state":{},"version":2}`); e == nil || e.Code != 409 {
		t.Fatalf("stale version after delete: %v, want 409", e)
	}
	if u, e := upd(`{"state":{},"version":3}`); e != nil || u.Current.Version != 4 {
		t.Fatalf("update after delete: %v %v", u, e)
	}
	s.Delete(id, nil)
	now += tombstoneLife + 1
	if u, e := upd(`{"state":{"reported":{"a":1}}}`); e != nil || u.Current.Version != 1 {
		t.Fatalf("update 48h after delete: %+v %v, want version 1", u.Current, e)
	}
}

// TestListNamed: only a thing's live named shadows, in order, paged.
func TestListNamed(t *testing.T) {
	now := T0
	s := NewShadows(newMemStore(), DefaultLimits, fixedClock(&now))
	for _, id := range []ID{{"t", ""}, {"t", "c"}, {"t", "a"}, {"t", "b"}, {"t2", "x"}, {"t-1", "y"}} {
		req, _ := ParseUpdate([]byte(`{"state":{}}`))
		if _, e, _ := s.Update(id, req, nil); e != nil {
			t.Fatal(e)
		}
	}
	names, next, err := s.ListNamed("t", "", 2)
	if err != nil || strings.Join(names, ",") != "a,b" || next != "b" {
		t.Fatalf("page 1: %v %q %v", names, next, err)
	}
	names, next, _ = s.ListNamed("t", next, 2)
	if strings.Join(names, ",") != "c" || next != "" {
		t.Fatalf("page 2: %v %q", names, next)
	}
}

// TestStoreFailureRefuses: a failed write answers 500 and is not acknowledged.
func TestStoreFailureRefuses(t *testing.T) {
	st := newMemStore()
	st.failPut = true
	s := NewShadows(st, DefaultLimits, nil)
	req, _ := ParseUpdate([]byte(`{"state":{"reported":{"a":1}}}`))
	u, e, cause := s.Update(ID{Thing: "t"}, req, func(*Update) { t.Fatal("published after a failed write") })
	if u != nil || e == nil || e.Code != 500 || e.Message != "Internal service failure" || cause != errDiskFull {
		t.Fatalf("got %v %v %v", u, e, cause)
	}
}

// TestShadowsCache: an update reads the document the previous one wrote from the cache, not the
// store; a failed write forgets the cached document (the next read goes to the store, which has
// the last durable one); the cache stays within its budget.
func TestShadowsCache(t *testing.T) {
	st := newMemStore()
	s := NewShadows(st, DefaultLimits, nil)
	id := ID{Thing: "t"}
	update := func(doc string) (*Update, *Error) {
		req, e := ParseUpdate([]byte(doc))
		if e != nil {
			t.Fatal(e)
		}
		u, e, _ := s.Update(id, req, nil)
		return u, e
	}
	if _, e := update(`{"state":{"reported":{"a":1}}}`); e != nil {
		t.Fatal(e)
	}
	gets := st.gets
	u, e := update(`{"state":{"reported":{"b":2}}}`)
	if e != nil || u.Previous == nil || u.Previous.Version != 1 || u.Current.Version != 2 {
		t.Fatalf("second update: %v %+v", e, u)
	}
	if d, e, _ := s.Get(id); e != nil || d.Version != 2 || jsonOf(d.Reported) != `{"a":1,"b":2}` {
		t.Fatalf("get after two updates: %v %s", e, d.encode())
	}
	if st.gets != gets {
		t.Fatalf("the store was read %d times for documents the cache holds", st.gets-gets)
	}
	st.failPut = true
	if _, e := update(`{"state":{"reported":{"c":3}}}`); e == nil || e.Code != 500 {
		t.Fatalf("update the store fails: %v", e)
	}
	if _, ok := s.cached(id.key()); ok {
		t.Fatal("a failed write left the document cached")
	}
	st.failPut = false
	if d, e, _ := s.Get(id); e != nil || d.Version != 2 {
		t.Fatalf("get after a failed update: %v %+v", e, d)
	}
	big := `{"state":{"reported":{"x":"` + strings.Repeat("y", 4000) + `"}}}`
	for i := range 600 {
		id = ID{Thing: fmt.Sprintf("t%d", i)}
		if _, e := update(big); e != nil {
			t.Fatal(e)
		}
	}
	if s.cacheBytes > cacheBudget || len(s.cache) == 0 || len(s.cache) >= 600 {
		t.Fatalf("cache of %d documents, %d bytes (budget %d)", len(s.cache), s.cacheBytes, cacheBudget)
	}
}

// TestParseRequestTopic: request topics only; response topics and malformed ones are not requests.
func TestParseRequestTopic(t *testing.T) {
	cases := []struct {
		topic string
		id    ID
		op    Operation
		ok    bool
	}{
		{"$aws/things/dev1/shadow/get", ID{"dev1", ""}, OpGet, true},
		{"$aws/things/dev1/shadow/update", ID{"dev1", ""}, OpUpdate, true},
		{"$aws/things/dev1/shadow/name/cfg/delete", ID{"dev1", "cfg"}, OpDelete, true},
		{"$aws/things/dev1/shadow/update/accepted", ID{}, "", false},
		{"$aws/things/dev1/shadow/name/cfg/update/delta", ID{}, "", false},
		{"$aws/things/dev1/shadow/list", ID{}, "", false},
		{"$aws/things//shadow/get", ID{}, "", false},
		{"$aws/things/dev1/shadow/name//get", ID{}, "", false},
		{"things/dev1/shadow/get", ID{}, "", false},
	}
	for _, tc := range cases {
		id, op, ok := ParseRequestTopic(tc.topic)
		if id != tc.id || op != tc.op || ok != tc.ok {
			t.Errorf("%s: %v %v %v, want %v %v %v", tc.topic, id, op, ok, tc.id, tc.op, tc.ok)
		}
	}
}

func TestNameRules(t *testing.T) {
	cases := []struct {
		id ID
		ok bool
	}{
		{ID{"a:b_c-D9", ""}, true},
		{ID{strings.Repeat("t", 128), strings.Repeat("n", 64)}, true},
		{ID{strings.Repeat("t", 129), ""}, false},
		{ID{"t", strings.Repeat("n", 65)}, false},
		{ID{"a.b", ""}, false},
		{ID{"t", "a b"}, false},
		{ID{"", ""}, false},
	}
	for _, tc := range cases {
		if e := tc.id.Validate(); (e == nil) != tc.ok {
			t.Errorf("%v: %v, want ok=%v", tc.id, e, tc.ok)
		}
	}
}
