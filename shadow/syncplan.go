package shadow

// The sync's decisions, as pure functions: given what both sides agreed on at the last sync and what
// each side holds now, which side is written and with what. sync.go runs them against the store and
// the upstream.

// shadowState is a shadow's desired and reported state: what the sync copies (metadata is each side's own,
// dated by each side's clock; versions are each side's own count).
type shadowState struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
}

func (s shadowState) equal(o shadowState) bool {
	return sameSection(s.Desired, o.Desired) && sameSection(s.Reported, o.Reported)
}

func sameSection(a, b map[string]any) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return equalJSON(a, b)
}

// view is one side of a synced shadow: whether it exists, its version (a deleted shadow's is the
// version it had), and its state.
type view struct {
	Exists  bool        `json:"exists"`
	Version int64       `json:"version"`
	State   shadowState `json:"state"`
}

func (v view) same(o view) bool {
	if v.Exists != o.Exists {
		return false
	}
	return !v.Exists || v.State.equal(o.State)
}

// syncRecord is what both sides held after the last sync that completed, stored per shadow: the local
// side's existence and version, and the cloud side's with its state (the base a patch to the cloud
// is computed from, under the optimistic lock of its version).
type syncRecord struct {
	Local view `json:"local"`
	Cloud view `json:"cloud"`
}

func (r *syncRecord) same(o syncRecord) bool {
	return r.Local.Exists == o.Local.Exists && r.Local.Version == o.Local.Version &&
		r.Cloud.Exists == o.Cloud.Exists && r.Cloud.Version == o.Cloud.Version && r.Cloud.State.equal(o.Cloud.State)
}

// changedSince says whether a side changed since rec's record of it: created, deleted or updated.
func changedSince(rec *view, now view) bool {
	if rec == nil {
		return now.Exists
	}
	return now.Exists != rec.Exists || (now.Exists && now.Version != rec.Version)
}

// writeKind is what the sync does to one side.
type writeKind int

const (
	writeNone writeKind = iota
	writeUpdate
	writeDelete
)

// write is one side's part of a plan: for writeUpdate, the state the side is to hold.
type write struct {
	kind writeKind
	to   shadowState
}

// plan is what one reconciliation writes on each side.
type plan struct {
	local, cloud write
}

// planSync decides a reconciliation (rec nil: never synced). The rules are the shadow manager's
// (greengrass-v2/sync-shadows-with-iot-core.md, "conflict"; services/shadow.md §9):
//   - a side that changed since the last sync is copied to the other; nothing changed, nothing written;
//   - both changed: betweenDeviceAndCloud takes desired from the cloud and reported from the device,
//     deviceToCloud takes the device's shadow, cloudToDevice the cloud's;
//   - deviceToCloud never writes the local shadow and cloudToDevice never the cloud's: the other
//     side's changes are ignored (and absorbed into the record, so a later change on the syncing side
//     wins over them);
//   - a delete never removes a shadow that changed on its side since the last sync: a shadow deleted
//     on one side and re-created or updated on the other is kept, and in betweenDeviceAndCloud copied
//     back (the shadow manager deletes re-created shadows, aws-greengrass-shadow-manager#98; the spec
//     says to avoid it).
func planSync(dir Direction, rec *syncRecord, local, cloud view) plan {
	var recLocal, recCloud *view
	if rec != nil {
		recLocal, recCloud = &rec.Local, &rec.Cloud
	}
	rawLocal, rawCloud := changedSince(recLocal, local), changedSince(recCloud, cloud)
	localChanged := rawLocal && dir.toCloud()
	cloudChanged := rawCloud && dir.toDevice()
	var target view
	switch {
	case !localChanged && !cloudChanged:
		return plan{}
	case localChanged && !cloudChanged:
		target = local
	case cloudChanged && !localChanged:
		target = cloud
	case !local.Exists && !cloud.Exists:
		return plan{}
	case !local.Exists:
		target = cloud // deleted here, changed there: the change wins
	case !cloud.Exists:
		target = local
	default:
		target = view{Exists: true, State: shadowState{Desired: cloud.State.Desired, Reported: local.State.Reported}}
	}
	var p plan
	if dir.toDevice() {
		p.local = writeFor(local, target, rawLocal)
	}
	if dir.toCloud() {
		p.cloud = writeFor(cloud, target, rawCloud)
	}
	return p
}

// writeFor is what makes side hold target; changed says whether side changed since the last sync, in
// which case it is not deleted.
func writeFor(side, target view, changed bool) write {
	switch {
	case side.same(target):
		return write{}
	case !target.Exists:
		if !side.Exists || changed {
			return write{}
		}
		return write{kind: writeDelete}
	default:
		return write{kind: writeUpdate, to: target.State}
	}
}

// patchFor is the update request state that turns from into to: each section that differs, with
// nulls for the keys to remove, `null` for a section to remove; nil when they are equal.
func patchFor(from, to shadowState) map[string]any {
	out := map[string]any{}
	for _, s := range []struct {
		key      string
		from, to map[string]any
	}{{"desired", from.Desired, to.Desired}, {"reported", from.Reported, to.Reported}} {
		switch {
		case sameSection(s.from, s.to):
		case len(s.to) == 0:
			out[s.key] = nil
		default:
			out[s.key] = diffObject(s.from, s.to)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// diffObject is the merge patch from one object to another (mergeObject(from, patch) == to).
func diffObject(from, to map[string]any) map[string]any {
	out := map[string]any{}
	for k := range from {
		if _, ok := to[k]; !ok {
			out[k] = nil
		}
	}
	for k, tv := range to {
		fv, ok := from[k]
		tm, tIsObj := tv.(map[string]any)
		fm, fIsObj := fv.(map[string]any)
		switch {
		case ok && tIsObj && fIsObj:
			if sub := diffObject(fm, tm); len(sub) > 0 {
				out[k] = sub
			}
		case tIsObj:
			out[k] = tv // an object over a scalar, an array or nothing replaces it (mergeObject)
		case !ok || !equalJSON(fv, tv):
			out[k] = tv
		}
	}
	return out
}

// pruneEmpty drops empty objects, which no stored shadow holds (mergeObject removes them), so that a
// cloud document that keeps one compares equal to the local copy.
func pruneEmpty(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if o, ok := v.(map[string]any); ok {
			if o = pruneEmpty(o); len(o) == 0 {
				continue
			}
			v = o
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
