package shadow

import (
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Limits are the document limits of services/shadow.md §7 that a deployment may change.
type Limits struct {
	// DocumentSize is the largest desired+reported state, serialised after the merge; metadata is not
	// counted. AWS: 8 KB (D-DIAG); the Greengrass shadow manager allows up to 30720.
	DocumentSize int
}

// DefaultLimits are AWS IoT's.
var DefaultLimits = Limits{DocumentSize: 8192}

// Fixed limits (services/shadow.md §7).
const (
	maxDepth       = 6  // nesting, counting the state object as 1 (SM JsonUtil.calculateDepth)
	maxClientToken = 64 // bytes (aws-iot-core/device-shadow-document.md, "Client tokens")
)

// Document is a stored shadow: its state, its metadata and its version. A deleted shadow is kept as a
// tombstone (Exists false) so that its version carries on when it is created again
// (aws-iot-core/device-shadow-data-flow.md, "DELETE").
type Document struct {
	Desired      map[string]any `json:"desired,omitempty"`
	Reported     map[string]any `json:"reported,omitempty"`
	DesiredMeta  map[string]any `json:"desiredMeta,omitempty"`
	ReportedMeta map[string]any `json:"reportedMeta,omitempty"`
	Version      int64          `json:"version"`
	// Deleted is when a delete made this a tombstone (epoch seconds), 0 for a live shadow.
	Deleted int64 `json:"deleted,omitempty"`
}

// Exists reports whether d is a live shadow (not nil, not a tombstone).
func (d *Document) Exists() bool { return d != nil && d.Deleted == 0 }

// tombstoneLife is how long a deleted shadow's version carries on: after 48 hours a shadow of the same
// name starts again from version 0, so its first update is version 1 (device-shadow-data-flow.md).
const tombstoneLife = 48 * 3600

// baseVersion is the version an update is checked against and counts on from.
func (d *Document) baseVersion(now int64) int64 {
	if d == nil || (d.Deleted != 0 && now-d.Deleted > tombstoneLife) {
		return 0
	}
	return d.Version
}

// decodeDocument reads a stored document.
func decodeDocument(raw []byte) (*Document, error) {
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, jsonError("stored shadow is not a JSON object")
	}
	d := &Document{}
	d.Desired, _ = obj["desired"].(map[string]any)
	d.Reported, _ = obj["reported"].(map[string]any)
	d.DesiredMeta, _ = obj["desiredMeta"].(map[string]any)
	d.ReportedMeta, _ = obj["reportedMeta"].(map[string]any)
	if n, ok := obj["version"].(json.Number); ok {
		d.Version, _ = n.Int64()
	}
	if n, ok := obj["deleted"].(json.Number); ok {
		d.Deleted, _ = n.Int64()
	}
	return d, nil
}

// encode is the stored form of d.
func (d *Document) encode() []byte { return marshal(d) }

// section is one of desired and reported in an update request: whether the request has it, and its
// value as sent (nil for null).
type section struct {
	present bool
	value   map[string]any
}

// UpdateRequest is a parsed, validated update request document
// (aws-iot-core/device-shadow-document.md, "Request state document").
type UpdateRequest struct {
	// stateNull is `"state": null`: both sections are cleared, the shadow stays (device-shadow-data-flow.md).
	stateNull         bool
	desired, reported section
	// Token is the clientToken, echoed in every answer; HasToken says whether there was one.
	Token    string
	HasToken bool
	// Version, when HasVersion, is the version the update expects the shadow to have (optimistic locking).
	Version    int64
	HasVersion bool
}

// requestToken reads the clientToken of any request document. A token that is not a string of at
// most 64 bytes is refused (Invalid clientToken, device-shadow-document.md "Client tokens").
func requestToken(obj map[string]any) (string, bool, *Error) {
	raw, ok := obj["clientToken"]
	if !ok || raw == nil {
		return "", false, nil
	}
	s, ok := raw.(string)
	if !ok || len(s) > maxClientToken {
		return "", false, errInvalidClientToken
	}
	return s, true, nil
}

// checkEncoding refuses a payload that is not UTF-8 (415), which encoding/json would otherwise
// silently repair.
func checkEncoding(payload []byte) *Error {
	if !utf8.Valid(payload) {
		return errEncoding
	}
	return nil
}

// ParseUpdate parses and validates an update request. The returned token is the request's clientToken
// as far as it could be read, for the rejection message, also when the request is refused.
func ParseUpdate(payload []byte) (*UpdateRequest, *Error) {
	req := &UpdateRequest{}
	if err := checkEncoding(payload); err != nil {
		return req, err
	}
	v, err := decodeJSON(payload)
	if err != nil {
		return req, errInvalidJSON
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return req, errInvalidJSON
	}
	var e *Error
	if req.Token, req.HasToken, e = requestToken(obj); e != nil {
		return req, e
	}
	if raw, ok := obj["version"]; ok && raw != nil {
		n, ok := raw.(json.Number)
		if !ok {
			return req, errInvalidVersion
		}
		ver, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || ver < 0 {
			return req, errInvalidVersion
		}
		req.Version, req.HasVersion = ver, true
	}
	rawState, ok := obj["state"]
	if !ok {
		return req, errMissingState
	}
	if rawState == nil {
		req.stateNull = true
		return req, nil
	}
	state, ok := rawState.(map[string]any)
	if !ok {
		return req, errStateNotObject
	}
	for k, sv := range state {
		var sec *section
		switch k {
		case "desired":
			sec = &req.desired
		case "reported":
			sec = &req.reported
		case "delta":
			// The delta is computed, never set: the shadow manager drops it from requests
			// (services/shadow.md §3, acceptance case 23).
			continue
		default:
			return req, errInvalidNode
		}
		sec.present = true
		if sv == nil {
			continue
		}
		m, ok := sv.(map[string]any)
		if !ok {
			if k == "desired" {
				return req, errDesiredNotObject
			}
			return req, errReportedNotObject
		}
		sec.value = m
	}
	// Depth counts the state object as level 1 (acceptance case 20: desired.a.b.c.d.e = 1 passes,
	// desired.a.b.c.d.e.f = 1 fails). The delta a request may carry is not part of it.
	for _, sec := range []section{req.desired, req.reported} {
		if sec.value != nil && 1+depth(sec.value, maxDepth) > maxDepth {
			return req, errTooDeep
		}
		if nullInArray(sec.value) {
			return req, errInvalidNode
		}
	}
	return req, nil
}

// echoState is the request's state node as sent, for update/accepted (nulls included, the delta left
// out): services/shadow.md §2.
func (r *UpdateRequest) echoState() any {
	if r.stateNull {
		return nil
	}
	out := map[string]any{}
	for _, s := range []struct {
		k   string
		sec section
	}{{"desired", r.desired}, {"reported", r.reported}} {
		if s.sec.present {
			if s.sec.value == nil {
				out[s.k] = nil
			} else {
				out[s.k] = s.sec.value
			}
		}
	}
	return out
}

// echoMetadata mirrors the request's state with a timestamp at every leaf (nulls included), for
// update/accepted (SM ShadowStateMetadata.createMetadataPatch).
func (r *UpdateRequest) echoMetadata(ts int64) map[string]any {
	out := map[string]any{}
	if r.stateNull {
		return out
	}
	if r.desired.present {
		out["desired"] = patchMeta(sectionValue(r.desired), ts)
	}
	if r.reported.present {
		out["reported"] = patchMeta(sectionValue(r.reported), ts)
	}
	return out
}

func sectionValue(s section) any {
	if s.value == nil {
		return nil
	}
	return s.value
}

// Update is the outcome of an accepted update: the new document and the answers.
type Update struct {
	Previous *Document // nil when the update created the shadow (also over a tombstone)
	Current  *Document
	// Accepted is update/accepted's document (also the HTTP answer); Delta is update/delta's, nil when
	// desired and reported are in sync. update/documents' is Documents().
	Accepted, Delta []byte

	now      int64
	token    *string
	docsJSON []byte
}

// Documents is update/documents' document, written when first asked for: when no subscriber can
// receive update/documents, the service does not ask (Service.publishUpdate).
func (u *Update) Documents() []byte {
	if u.docsJSON == nil {
		var prev any // null on the first update (services/shadow.md §2)
		if u.Previous != nil {
			prev = snapshotOf(u.Previous)
		}
		u.docsJSON = marshal(documents{Previous: prev, Current: snapshotOf(u.Current), Timestamp: u.now, ClientToken: u.token})
	}
	return u.docsJSON
}

// Apply applies req to the stored document old (nil or a tombstone when the shadow does not exist) at
// time now (epoch seconds). It refuses a version conflict (409) and a state over the size limit (413),
// leaving old as it was.
func Apply(old *Document, req *UpdateRequest, now int64, lim Limits) (*Update, *Error) {
	base := old.baseVersion(now)
	if req.HasVersion && req.Version != base {
		return nil, errVersionConflict
	}
	var prevDesired, prevReported, prevDM, prevRM map[string]any
	if old.Exists() {
		prevDesired, prevReported, prevDM, prevRM = old.Desired, old.Reported, old.DesiredMeta, old.ReportedMeta
	}
	cur := &Document{Version: base + 1}
	if !req.stateNull {
		cur.Desired, cur.DesiredMeta = applySection(prevDesired, prevDM, req.desired, now)
		cur.Reported, cur.ReportedMeta = applySection(prevReported, prevRM, req.reported, now)
	}
	if lim.DocumentSize > 0 && stateSize(cur) > lim.DocumentSize {
		return nil, errTooLarge
	}
	u := &Update{Current: cur}
	if old.Exists() {
		u.Previous = old
	}
	accepted := response{State: req.echoState(), Metadata: req.echoMetadata(now), Version: cur.Version, Timestamp: now}
	accepted.token(req.Token, req.HasToken)
	u.Accepted = marshal(accepted)

	u.now = now
	if req.HasToken {
		u.token = &req.Token
	}

	if delta := computeDelta(cur.Desired, cur.Reported); len(delta) > 0 {
		d := response{State: delta, Metadata: deltaMeta(delta, cur.Desired, cur.DesiredMeta), Version: cur.Version, Timestamp: now}
		d.token(req.Token, req.HasToken)
		u.Delta = marshal(d)
	}
	return u, nil
}

// applySection merges a request's section into the stored one, with its metadata.
func applySection(state, meta map[string]any, sec section, now int64) (map[string]any, map[string]any) {
	if !sec.present {
		return state, meta
	}
	if sec.value == nil { // "desired": null removes the section
		return nil, nil
	}
	merged := mergeObject(state, sec.value)
	if len(merged) == 0 {
		return nil, nil // a section that becomes empty is removed (device-shadow-document.md)
	}
	return merged, mergeMeta(merged, state, meta, sec.value, now)
}

// stateSize is the size AWS limits: desired and reported as JSON, metadata left out. The text is
// written to a pooled buffer: only its length is wanted.
func stateSize(d *Document) int {
	buf := sizeBuffers.Get().(*[]byte)
	b := append((*buf)[:0], '{')
	if d.Desired != nil {
		b = append(b, `"desired":`...)
		b = appendObject(b, d.Desired)
	}
	if d.Reported != nil {
		if d.Desired != nil {
			b = append(b, ',')
		}
		b = append(b, `"reported":`...)
		b = appendObject(b, d.Reported)
	}
	b = append(b, '}')
	n := len(b)
	*buf = b
	sizeBuffers.Put(buf)
	return n
}

var sizeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// mergeObject merges patch into old without changing either: a null removes a key, objects merge
// key by key, anything else (arrays included: no element merge) replaces the value. An object that is
// empty after the merge is not kept, so a patch of only nulls for a missing key adds nothing (SM
// JsonMerger.createMergeTree) and deleting an object's last key removes the object.
func mergeObject(old, patch map[string]any) map[string]any {
	out := make(map[string]any, len(old)+len(patch))
	for k, v := range old {
		out[k] = v
	}
	for k, pv := range patch {
		switch p := pv.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			prev, _ := out[k].(map[string]any) // a scalar or array there is replaced by the object
			if m := mergeObject(prev, p); len(m) > 0 {
				out[k] = m
			} else {
				delete(out, k)
			}
		default:
			out[k] = pv
		}
	}
	return out
}

// leaf is the metadata of one value: its last update's time. Maps are never changed once built
// (json.go), so the leaves of one second are one map: every update made a few of them, a twentieth
// of a shadow update's garbage.
func leaf(ts int64) map[string]any {
	if l := lastLeaf.Load(); l != nil && l.ts == ts {
		return l.m
	}
	m := map[string]any{"timestamp": ts}
	lastLeaf.Store(&leafOf{ts: ts, m: m})
	return m
}

type leafOf struct {
	ts int64
	m  map[string]any
}

var lastLeaf atomic.Pointer[leafOf]

// patchMeta is the metadata of a request value: a timestamp for each scalar (and null), objects and
// arrays mirrored (SM ShadowStateMetadata.createMetadataPatch).
func patchMeta(v any, ts int64) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, c := range x {
			out[k] = patchMeta(c, ts)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, c := range x {
			out[i] = patchMeta(c, ts)
		}
		return out
	default:
		return leaf(ts)
	}
}

// mergeMeta is the metadata of a merged section: the request's time for what the patch set, the stored
// metadata for what it left alone, nothing for what is gone. oldState tells how the stored metadata is
// shaped (an object's metadata is an object; a scalar's is a timestamp), so that a type change never
// mixes the two.
func mergeMeta(state, oldState, oldMeta, patch map[string]any, ts int64) map[string]any {
	out := make(map[string]any, len(state))
	for k, v := range state {
		pv, inPatch := patch[k]
		if !inPatch {
			if m, ok := oldMeta[k]; ok {
				out[k] = m
			} else {
				out[k] = patchMeta(v, ts) // stored metadata missing: date it now rather than drop it
			}
			continue
		}
		pm, pIsObj := pv.(map[string]any)
		vm, vIsObj := v.(map[string]any)
		if pIsObj && vIsObj {
			os, _ := oldState[k].(map[string]any)
			var om map[string]any
			if os != nil {
				om, _ = oldMeta[k].(map[string]any)
			}
			out[k] = mergeMeta(vm, os, om, pm, ts)
			continue
		}
		out[k] = patchMeta(v, ts)
	}
	return out
}

// computeDelta is what desired asks for that reported does not have: every desired key that reported
// lacks or holds another value for, nested objects compared key by key down to the differing leaves,
// arrays and scalars as whole values, numbers by value (aws-iot-core/device-shadow-mqtt.md "Message
// body details", device-shadow-document.md "Delta state").
func computeDelta(desired, reported map[string]any) map[string]any {
	out := map[string]any{}
	for k, dv := range desired {
		rv, ok := reported[k]
		if !ok {
			out[k] = dv
			continue
		}
		dm, dIsObj := dv.(map[string]any)
		rm, rIsObj := rv.(map[string]any)
		if dIsObj && rIsObj {
			if sub := computeDelta(dm, rm); len(sub) > 0 {
				out[k] = sub
			}
			continue
		}
		if !equalJSON(dv, rv) {
			out[k] = dv
		}
	}
	return out
}

// deltaMeta projects the desired metadata onto the delta (device-shadow-document.md "Delta state":
// the delta's metadata equals the desired metadata).
func deltaMeta(delta, desired, desiredMeta map[string]any) map[string]any {
	out := make(map[string]any, len(delta))
	for k, v := range delta {
		sub, subIsObj := v.(map[string]any)
		dv, dIsObj := desired[k].(map[string]any)
		mv, mIsObj := desiredMeta[k].(map[string]any)
		if subIsObj && dIsObj && mIsObj {
			out[k] = deltaMeta(sub, dv, mv)
			continue
		}
		if m, ok := desiredMeta[k]; ok {
			out[k] = m
		}
	}
	return out
}

// response is an accepted, delta or get answer; its field order is AWS' (services/shadow.md §2).
type response struct {
	State       any            `json:"state"`
	Metadata    map[string]any `json:"metadata"`
	Version     int64          `json:"version"`
	Timestamp   int64          `json:"timestamp"`
	ClientToken *string        `json:"clientToken,omitempty"`
}

func (r *response) token(t string, has bool) {
	if has {
		r.ClientToken = &t
	}
}

// snapshot is a document's state, metadata and version, as update/documents shows them.
type snapshot struct {
	State    map[string]any `json:"state"`
	Metadata map[string]any `json:"metadata"`
	Version  int64          `json:"version"`
}

func snapshotOf(d *Document) snapshot {
	st, md := map[string]any{}, map[string]any{}
	if d.Desired != nil {
		st["desired"], md["desired"] = d.Desired, d.DesiredMeta
	}
	if d.Reported != nil {
		st["reported"], md["reported"] = d.Reported, d.ReportedMeta
	}
	return snapshot{State: st, Metadata: md, Version: d.Version}
}

type documents struct {
	Previous    any      `json:"previous"`
	Current     snapshot `json:"current"`
	Timestamp   int64    `json:"timestamp"`
	ClientToken *string  `json:"clientToken,omitempty"`
}

// GetResponse is get/accepted's document (and GetThingShadow's answer): state with the delta when there
// is one, metadata of desired and reported, version (services/shadow.md §2).
func GetResponse(d *Document, now int64, token string, hasToken bool) []byte {
	s := snapshotOf(d)
	if delta := computeDelta(d.Desired, d.Reported); len(delta) > 0 {
		s.State["delta"] = delta
	}
	r := response{State: s.State, Metadata: s.Metadata, Version: d.Version, Timestamp: now}
	r.token(token, hasToken)
	return marshal(r)
}

// deleteResponse is delete/accepted's document: the version the shadow had, the time, the token.
type deleteResponse struct {
	Version     int64   `json:"version"`
	Timestamp   int64   `json:"timestamp"`
	ClientToken *string `json:"clientToken,omitempty"`
}

// DeleteResponse is delete/accepted's document (and DeleteThingShadow's answer).
func DeleteResponse(version, now int64, token string, hasToken bool) []byte {
	r := deleteResponse{Version: version, Timestamp: now}
	if hasToken {
		r.ClientToken = &token
	}
	return marshal(r)
}

// errorResponse is a */rejected document (device-shadow-document.md, "Error response document").
type errorResponse struct {
	Code        int     `json:"code"`
	Message     string  `json:"message"`
	Timestamp   int64   `json:"timestamp"`
	ClientToken *string `json:"clientToken,omitempty"`
}

// ErrorResponse is the rejected document for e; the token is echoed only when the request had one.
func ErrorResponse(e *Error, now int64, token string, hasToken bool) []byte {
	r := errorResponse{Code: e.Code, Message: e.Message, Timestamp: now}
	if hasToken {
		r.ClientToken = &token
	}
	return marshal(r)
}

// ParseTokenOnly reads the clientToken of a get or delete request, whose content is otherwise ignored
// (device-shadow-mqtt.md; the SDK v2 clients send {"clientToken": ...}, the v1 clients
// {"thingName": ...}). An empty payload has no token; a payload that is not JSON is refused.
func ParseTokenOnly(payload []byte) (string, bool, *Error) {
	if len(payload) == 0 {
		return "", false, nil
	}
	if err := checkEncoding(payload); err != nil {
		return "", false, err
	}
	v, err := decodeJSON(payload)
	if err != nil {
		return "", false, errInvalidJSON
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return "", false, nil
	}
	return requestToken(obj)
}
