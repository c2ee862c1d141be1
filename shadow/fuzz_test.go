package shadow

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzUpdate feeds two update requests to a new shadow and checks what must always hold: no panic,
// answers that are JSON, marshal writing what encoding/json writes, a stored document that reads back the same, no nulls or empty objects stored,
// metadata shaped like the state, a delta that is part of desired, the size limit, the version count.
func FuzzUpdate(f *testing.F) {
	seeds := [][2]string{
		{`{"state":{"reported":{"c":"green"}},"clientToken":"b"}`, `{"state":{"desired":{"c":"red"}}}`},
		{`{"state":{"desired":{"l":{"c":{"r":1,"g":2}}},"reported":{"l":{"c":{"r":1,"g":0}}}}}`, `{"state":{"desired":{"l":null}}}`},
		{`{"state":{"desired":{"a":[1,2]},"reported":{"a":[1]}}}`, `{"state":{"desired":{"a":[3]}},"version":1}`},
		{`{"state":{"desired":{"n":1},"reported":{"n":1.0}}}`, `{"state":null}`},
		{`{"state":{"desired":{"a":{"b":1}}}}`, `{"state":{"desired":{"a":5,"b":{"c":null}}}}`},
		{`{"state":{"reported":{"a":1}}}`, `{"state":{"reported":{"a":{"timestamp":1}}}}`},
		{`{"state":{"desired":{"x":[{"a":null}]}}}`, `{"state":{"desired":{"x":[]},"reported":{"x":[]}}}`},
		{`not json`, `{"state":{"desired":1e400}}`},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, p1, p2 string) {
		for _, p := range []string{p1, p2} {
			if tok, has, e := ParseTokenOnly([]byte(p)); e == nil && has && len(tok) > maxClientToken {
				t.Fatalf("token of %d bytes accepted", len(tok))
			}
		}
		for _, p := range []string{p1, p2} {
			if v, err := decodeJSON([]byte(p)); err == nil && !bytes.Equal(marshal(v), stdMarshal(v)) {
				t.Fatalf("%q: marshal writes %s, encoding/json %s", p, marshal(v), stdMarshal(v))
			}
		}
		lim := Limits{DocumentSize: 512}
		var doc *Document
		for i, p := range []string{p1, p2} {
			req, e := ParseUpdate([]byte(p))
			if e != nil {
				if e.Code < 400 || e.Message == "" {
					t.Fatalf("bad refusal %v", e)
				}
				continue
			}
			u, e := Apply(doc, req, T0+int64(i), lim)
			if e != nil {
				if e.Code != 409 && e.Code != 413 {
					t.Fatalf("update %d refused with %v", i, e)
				}
				continue
			}
			for name, raw := range map[string][]byte{"accepted": u.Accepted, "documents": u.Documents(), "delta": u.Delta} {
				if raw != nil && !json.Valid(raw) {
					t.Fatalf("%s is not JSON: %s", name, raw)
				}
			}
			cur := u.Current
			if cur.Version != doc.baseVersion(T0)+1 {
				t.Fatalf("version %d after %d", cur.Version, doc.baseVersion(T0))
			}
			if !bytes.Equal(cur.encode(), stdMarshal(cur)) || stateSize(cur) != stdStateSize(cur) {
				t.Fatalf("stored document %s, encoding/json writes %s", cur.encode(), stdMarshal(cur))
			}
			if stateSize(cur) > lim.DocumentSize {
				t.Fatalf("stored %d bytes over the %d limit", stateSize(cur), lim.DocumentSize)
			}
			back, err := decodeDocument(cur.encode())
			if err != nil {
				t.Fatalf("stored document does not read back: %v", err)
			}
			if !equalJSON(toAny(back), toAny(cur)) {
				t.Fatalf("stored document reads back as %s, was %s", back.encode(), cur.encode())
			}
			for _, sec := range []struct{ state, meta map[string]any }{{cur.Desired, cur.DesiredMeta}, {cur.Reported, cur.ReportedMeta}} {
				if sec.state != nil && len(sec.state) == 0 {
					t.Fatalf("empty section stored: %s", cur.encode())
				}
				checkStored(t, sec.state, sec.meta, cur)
			}
			delta := computeDelta(cur.Desired, cur.Reported)
			if (len(delta) > 0) != (u.Delta != nil) {
				t.Fatalf("delta %v but published %s", delta, u.Delta)
			}
			for k := range delta {
				if _, ok := cur.Desired[k]; !ok {
					t.Fatalf("delta key %q not in desired", k)
				}
			}
			doc = cur
		}
	})
}

// toAny is a document as plain JSON values, for comparing.
func toAny(d *Document) any {
	v, _ := decodeJSON(d.encode())
	return v
}

// checkStored: no nulls and no empty objects in stored state, and metadata with the state's keys,
// an object's metadata an object, a scalar's a timestamp.
func checkStored(t *testing.T, state, meta map[string]any, d *Document) {
	t.Helper()
	if len(state) != len(meta) {
		t.Fatalf("state has %d keys, metadata %d: %s", len(state), len(meta), d.encode())
	}
	for k, v := range state {
		m, ok := meta[k]
		if !ok {
			t.Fatalf("no metadata for %q: %s", k, d.encode())
		}
		switch x := v.(type) {
		case nil:
			t.Fatalf("null stored at %q: %s", k, d.encode())
		case map[string]any:
			if len(x) == 0 {
				t.Fatalf("empty object stored at %q: %s", k, d.encode())
			}
			mm, ok := m.(map[string]any)
			if !ok {
				t.Fatalf("metadata of object %q is %T: %s", k, m, d.encode())
			}
			checkStored(t, x, mm, d)
		case []any:
			if ma, ok := m.([]any); !ok || len(ma) != len(x) {
				t.Fatalf("metadata of array %q is %v: %s", k, m, d.encode())
			}
		default:
			mm, ok := m.(map[string]any)
			if !ok || len(mm) != 1 || mm["timestamp"] == nil {
				t.Fatalf("metadata of scalar %q is %v: %s", k, m, d.encode())
			}
		}
	}
}
