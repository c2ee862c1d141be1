package shadow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/internal/ids"
	"github.com/ggbroker/ggbroker/service"
)

// The Greengrass shadow manager's sync (services/shadow.md §9): the shadows synchronize names are kept
// in step with the upstream's Device Shadow service over the core device's one upstream connection
// (service.Upstream, the bridge's), with the shadow MQTT API there: get, update with the optimistic
// lock of the version last seen, delete, and update/documents and delete/accepted for the cloud's own
// changes. The shadow manager writes over HTTPS instead; MQTT needs no second credential and no
// second connection, and AWS IoT answers both the same way.
//
// One goroutine does all the work, one shadow at a time, from a queue: cloud changes in arrival
// order, then shadows due a full sync (get both sides), then local changes. The defects the spec
// lists are avoided by construction:
//   - no loop: what the sync wrote is recorded (syncRecord) before the next item is taken, so the echo
//     of its own write (the local change, the cloud's update/documents) finds nothing changed; and a
//     409 leads to one fresh get and one more try, then to a retry with backoff, never to a loop;
//   - no stop after an outage: nothing waits without a deadline; a failure retries the shadow with
//     backoff, and every new session starts with a full sync of every shadow;
//   - no deleted re-creations: see planSync.

// SyncBucket holds the sync records, one per synced shadow (ID.key).
const SyncBucket = "shadow-sync"

// Waits of the sync.
const (
	syncRequestTimeout = 10 * time.Second // for the upstream's answer to one request
	syncMinRetry       = time.Second
	syncMaxRetry       = time.Minute
)

var (
	errSyncNotConnected = errors.New("no upstream session")
	errSyncTimeout      = errors.New("no answer from the upstream's shadow service")
	errCloudConflict    = errors.New("the upstream's shadow changed meanwhile (409)")
	errLocalConflict    = errors.New("the local shadow changed meanwhile (409)")
)

// syncer runs the sync.
type syncer struct {
	svc     *Service
	set     *syncSettings
	up      service.Upstream
	records service.Store
	log     *zap.Logger
	m       *syncMetrics
	synced  map[ID]bool

	mu        sync.Mutex
	wake      chan struct{}
	connected bool
	session   chan struct{} // closed when the current upstream session ends
	events    []cloudEvent
	full      map[ID]bool
	dirty     map[ID]bool
	later     map[ID]bool // failed; due a full sync at retryAt
	failures  int         // in a row, for the backoff
	retryAt   time.Time
	pending   map[string]*pendingRequest

	tokenPrefix string
	tokens      atomic.Uint64
	lastRequest time.Time
	written     []syncWrite // the sync goroutine's
	done        chan struct{}
}

// cloudEvent is a change the upstream published: update/documents' current document, or
// delete/accepted's version.
type cloudEvent struct {
	id   ID
	view view
}

type pendingRequest struct {
	op string
	ch chan answer
}

// answer is the upstream's answer to one request.
type answer struct {
	accepted bool
	body     map[string]any
}

func (a answer) code() int {
	n, _ := a.body["code"].(json.Number)
	c, _ := strconv.Atoi(string(n))
	return c
}

// startSync starts the sync when synchronize names shadows and there is an upstream.
func (s *Service) startSync(ctx context.Context) error {
	if s.syncSet == nil || len(s.syncSet.shadows) == 0 {
		return nil
	}
	up := s.host.Upstream()
	if up == nil {
		s.log.Warn("shadow sync is configured but core.iotDataEndpoint names no upstream: no shadow is synced",
			zap.Int("shadows", len(s.syncSet.shadows)))
		return nil
	}
	store, err := s.host.Store(SyncBucket)
	if err != nil {
		return fmt.Errorf("shadow sync store: %w", err)
	}
	m, err := newSyncMetrics(s.host.Metrics())
	if err != nil {
		return err
	}
	y := &syncer{svc: s, set: s.syncSet, up: up, records: store, log: s.log, m: m, synced: map[ID]bool{},
		wake: make(chan struct{}, 1), session: make(chan struct{}), full: map[ID]bool{}, dirty: map[ID]bool{},
		later: map[ID]bool{}, pending: map[string]*pendingRequest{}, tokenPrefix: "ggbroker-sync-" + ids.TraceID()[:8] + "-",
		done: make(chan struct{})}
	close(y.session)
	for _, id := range y.set.shadows {
		y.synced[id] = true
		// One filter per shadow: its get, update and delete answers, update/delta and update/documents.
		if err := up.Subscribe(id.Prefix()+"/+/+", y.fromUpstream(id)); err != nil {
			return fmt.Errorf("shadow sync: %w", err)
		}
	}
	s.shadows.OnChange(y.localChanged)
	s.sync = y
	up.Watch(y.watch)
	s.log.Info("shadow sync configured", zap.String("direction", string(y.set.direction)), zap.Int("shadows", len(y.set.shadows)),
		zap.Duration("periodic", y.set.periodic))
	go y.run(ctx)
	return nil
}

// wait returns once the sync goroutine has stopped.
func (y *syncer) wait() { <-y.done }

func (y *syncer) poke() {
	select {
	case y.wake <- struct{}{}:
	default:
	}
}

// watch hears of upstream sessions: each new one starts with a full sync of every shadow.
func (y *syncer) watch(connected bool) {
	y.mu.Lock()
	defer y.mu.Unlock()
	if connected == y.connected {
		return
	}
	y.connected = connected
	if !connected {
		close(y.session)
		return
	}
	y.session = make(chan struct{})
	y.events, y.dirty, y.later, y.failures = nil, map[ID]bool{}, map[ID]bool{}, 0
	for _, id := range y.set.shadows {
		y.full[id] = true
	}
	y.poke()
}

// localChanged hears of every accepted local update and delete (Shadows.OnChange).
func (y *syncer) localChanged(id ID) {
	if !y.synced[id] || y.set.periodic > 0 || !y.set.direction.toCloud() {
		return
	}
	y.mu.Lock()
	y.dirty[id] = true
	y.mu.Unlock()
	y.poke()
}

// fromUpstream is the handler of one shadow's upstream subscription. It runs in the upstream
// connection's reader: it only hands answers to their waiting request and queues changes.
func (y *syncer) fromUpstream(id ID) service.UpstreamHandler {
	prefix := id.Prefix() + "/"
	return func(m service.Message) {
		suffix, ok := strings.CutPrefix(m.Topic, prefix)
		if !ok {
			return
		}
		op, kind, _ := strings.Cut(suffix, "/")
		v, err := decodeJSON(m.Payload)
		if err != nil {
			return
		}
		body, _ := v.(map[string]any)
		tok, _ := body["clientToken"].(string)
		if kind == "accepted" || kind == "rejected" {
			y.mu.Lock()
			p := y.pending[tok]
			y.mu.Unlock()
			if p != nil && p.op == op {
				select {
				case p.ch <- answer{accepted: kind == "accepted", body: body}:
				default:
				}
				return
			}
		}
		if y.set.periodic > 0 || !y.set.direction.toDevice() {
			return
		}
		var ev cloudEvent
		switch {
		case op == "update" && kind == "documents":
			cur, _ := body["current"].(map[string]any)
			if cur == nil {
				return
			}
			ev = cloudEvent{id: id, view: viewOfCloud(cur)}
		case op == "delete" && kind == "accepted":
			ev = cloudEvent{id: id, view: view{Version: versionOf(body)}}
		default:
			return
		}
		y.mu.Lock()
		y.events = append(y.events, ev)
		y.mu.Unlock()
		y.poke()
	}
}

// viewOfCloud reads a document of the upstream (get/accepted, update/documents' current).
func viewOfCloud(doc map[string]any) view {
	st, _ := doc["state"].(map[string]any)
	d, _ := st["desired"].(map[string]any)
	r, _ := st["reported"].(map[string]any)
	return view{Exists: true, Version: versionOf(doc), State: shadowState{Desired: pruneEmpty(d), Reported: pruneEmpty(r)}}
}

func versionOf(doc map[string]any) int64 {
	n, _ := doc["version"].(json.Number)
	v, _ := n.Int64()
	return v
}

// run is the sync goroutine.
func (y *syncer) run(ctx context.Context) {
	defer close(y.done)
	var tick <-chan time.Time
	if y.set.periodic > 0 {
		t := time.NewTicker(y.set.periodic)
		defer t.Stop()
		tick = t.C
	}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-y.wake:
		case <-tick:
			y.mu.Lock()
			for _, id := range y.set.shadows {
				y.full[id] = true
			}
			y.mu.Unlock()
		case <-retry.C:
			y.mu.Lock()
			for id := range y.later {
				y.full[id] = true
			}
			y.later = map[ID]bool{}
			y.mu.Unlock()
		}
		for ctx.Err() == nil {
			kind, id, ev, ok := y.take()
			if !ok {
				break
			}
			var err error
			switch kind {
			case "event":
				err = y.onCloudEvent(ctx, ev)
			case "full":
				err = y.fullSync(ctx, id)
			default:
				err = y.onLocalChange(ctx, id)
			}
			if ctx.Err() != nil {
				return // stopping: what was cut short is the next start's full sync
			}
			y.settle(id, err)
		}
		y.mu.Lock()
		y.m.retrying.Set(float64(len(y.later)))
		if len(y.later) > 0 {
			retry.Reset(time.Until(y.retryAt))
		}
		y.mu.Unlock()
	}
}

// take picks the next item: cloud changes first, in order, then full syncs, then local changes. A
// shadow due a full sync skips its queued changes (the full sync reads both sides). Nothing is taken
// without a session.
func (y *syncer) take() (kind string, id ID, ev cloudEvent, ok bool) {
	y.mu.Lock()
	defer y.mu.Unlock()
	if !y.connected {
		return "", ID{}, cloudEvent{}, false
	}
	for len(y.events) > 0 {
		ev, y.events = y.events[0], y.events[1:]
		if !y.full[ev.id] && !y.later[ev.id] {
			return "event", ev.id, ev, true
		}
	}
	for id := range y.full {
		delete(y.full, id)
		delete(y.dirty, id)
		return "full", id, cloudEvent{}, true
	}
	for id := range y.dirty {
		delete(y.dirty, id)
		if !y.later[id] {
			return "local", id, cloudEvent{}, true
		}
	}
	return "", ID{}, cloudEvent{}, false
}

// settle records an item's outcome: a failure retries the shadow with a full sync after a backoff.
func (y *syncer) settle(id ID, err error) {
	y.mu.Lock()
	defer y.mu.Unlock()
	if err == nil {
		if len(y.later) == 0 {
			y.failures = 0
		}
		return
	}
	reason := failureReason(err)
	y.m.failures.WithLabelValues(reason).Inc()
	if !y.connected && (errors.Is(err, errSyncNotConnected) || errors.Is(err, service.ErrNotConnected)) {
		return // the next session's full sync takes it up
	}
	delay := syncMinRetry << min(y.failures, 6)
	delay = min(delay, syncMaxRetry)
	y.failures++
	if len(y.later) == 0 || time.Now().Add(delay).Before(y.retryAt) {
		y.retryAt = time.Now().Add(delay)
	}
	y.later[id] = true
	y.log.Warn("shadow sync failed; retrying", zap.String("deviceShadowName", id.Thing), zap.String("shadowName", id.Name),
		zap.String("reason", reason), zap.String("details", err.Error()), zap.Duration("retryIn", time.Until(y.retryAt)))
}

func failureReason(err error) string {
	switch {
	case errors.Is(err, errSyncNotConnected), errors.Is(err, service.ErrNotConnected):
		return "not-connected"
	case errors.Is(err, errSyncTimeout):
		return "timeout"
	case errors.Is(err, errCloudConflict), errors.Is(err, errLocalConflict):
		return "conflict"
	case errors.Is(err, errCloudRefused):
		return "refused"
	}
	return "error"
}

// fullSync reads both sides and reconciles them.
func (y *syncer) fullSync(ctx context.Context, id ID) error {
	y.m.full.Inc()
	rec, err := y.record(id)
	if err != nil {
		return err
	}
	cloud, err := y.get(ctx, id, rec)
	if err != nil {
		return err
	}
	return y.reconcile(ctx, id, cloud, true)
}

// onCloudEvent reconciles after a change the upstream published; an event older than what the
// record holds (the echo of the sync's own write among them) changes nothing.
func (y *syncer) onCloudEvent(ctx context.Context, ev cloudEvent) error {
	rec, err := y.record(ev.id)
	if err != nil {
		return err
	}
	if rec != nil {
		c := rec.Cloud
		if ev.view.Version < c.Version || (ev.view.Version == c.Version && ev.view.Exists == c.Exists) || (!ev.view.Exists && !c.Exists) {
			return nil
		}
	}
	return y.reconcile(ctx, ev.id, ev.view, false)
}

// onLocalChange reconciles after a local update or delete, taking the cloud to be as last recorded (the
// optimistic lock finds out if it is not); a shadow never synced gets a full sync.
func (y *syncer) onLocalChange(ctx context.Context, id ID) error {
	rec, err := y.record(id)
	if err != nil {
		return err
	}
	if rec == nil {
		return y.fullSync(ctx, id)
	}
	return y.reconcile(ctx, id, rec.Cloud, false)
}

// reconcile plans and writes. fresh says cloud was just read: otherwise a cloud delete, which has no
// optimistic lock, is preceded by a get, and a 409 from the cloud leads to one full sync.
func (y *syncer) reconcile(ctx context.Context, id ID, cloud view, fresh bool) error {
	defer y.flushWritten() // after the record is stored: a "shadow synced" record means it is
	for attempt := 0; ; attempt++ {
		rec, err := y.record(id)
		if err != nil {
			return err
		}
		local, err := y.local(id)
		if err != nil {
			return err
		}
		p := planSync(y.set.direction, rec, local, cloud)
		if p.cloud.kind == writeDelete && !fresh {
			return y.fullSync(ctx, id)
		}
		newLocal, err := y.writeLocal(id, local, p.local)
		if errors.Is(err, errLocalConflict) && attempt == 0 {
			continue // a device changed it meanwhile: read it again, once
		}
		if err != nil {
			return err
		}
		newCloud, err := y.writeCloud(ctx, id, cloud, p.cloud)
		if errors.Is(err, errCloudConflict) && !fresh {
			y.m.conflicts.Inc()
			return y.fullSync(ctx, id)
		}
		if err != nil {
			return err
		}
		next := syncRecord{Local: view{Exists: newLocal.Exists, Version: newLocal.Version}, Cloud: newCloud}
		if rec == nil || !rec.same(next) {
			return y.saveRecord(id, next)
		}
		return nil
	}
}

// record reads a shadow's sync record, nil when it was never synced.
func (y *syncer) record(id ID) (*syncRecord, error) {
	raw, err := y.records.Get(id.key())
	if err != nil || raw == nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var r syncRecord
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("sync record of %s: %w", id.key(), err)
	}
	return &r, nil
}

func (y *syncer) saveRecord(id ID, r syncRecord) error {
	return y.records.Put(id.key(), marshal(r))
}

// local reads the local side.
func (y *syncer) local(id ID) (view, error) {
	d, err := y.svc.shadows.load(id)
	if err != nil || d == nil {
		return view{}, err
	}
	return view{Exists: d.Exists(), Version: d.Version, State: shadowState{Desired: d.Desired, Reported: d.Reported}}, nil
}

// writeLocal applies w to the local shadow under its optimistic lock, publishing the answers a device
// update would (update/accepted, documents, delta), and returns the local side after it.
func (y *syncer) writeLocal(id ID, local view, w write) (view, error) {
	s := y.svc
	switch w.kind {
	case writeUpdate:
		patch := patchFor(local.State, w.to)
		if patch == nil && local.Exists {
			return local, nil
		}
		doc := map[string]any{"state": patch}
		if patch == nil {
			doc["state"] = map[string]any{}
		}
		if local.Exists {
			doc["version"] = local.Version
		}
		req, e := ParseUpdate(marshal(doc))
		if e != nil {
			return local, fmt.Errorf("local update of %s: %w", id.key(), e)
		}
		u, e, cause := s.shadows.Update(id, req, func(u *Update) {
			s.accepted(nil, id, "/update/accepted", u.Accepted)
			s.publishUpdate(id, u)
		})
		if e != nil {
			if e.Code == 409 {
				y.m.conflicts.Inc()
				return local, errLocalConflict
			}
			return local, fmt.Errorf("local update of %s: %w (%v)", id.key(), e, cause)
		}
		out := view{Exists: true, Version: u.Current.Version, State: shadowState{Desired: u.Current.Desired, Reported: u.Current.Reported}}
		y.wrote("to-device", "update", id, out.Version)
		return out, nil
	case writeDelete:
		v, e, cause := s.shadows.deleteIf(id, local.Version, func(v int64) {
			s.accepted(nil, id, "/delete/accepted", DeleteResponse(v, s.shadows.Now(), "", false))
		})
		switch {
		case e == nil:
		case e.Code == 404:
			return view{Version: local.Version}, nil
		case e.Code == 409:
			y.m.conflicts.Inc()
			return local, errLocalConflict
		default:
			return local, fmt.Errorf("local delete of %s: %w (%v)", id.key(), e, cause)
		}
		y.wrote("to-device", "delete", id, v)
		return view{Version: v}, nil
	}
	return local, nil
}

// errCloudRefused is a refusal by the upstream's shadow service other than 409.
var errCloudRefused = errors.New("the upstream's shadow service refused")

// writeCloud applies w to the upstream's shadow, under the optimistic lock of the version cloud has,
// and returns the cloud side after it.
func (y *syncer) writeCloud(ctx context.Context, id ID, cloud view, w write) (view, error) {
	switch w.kind {
	case writeUpdate:
		patch := patchFor(cloud.State, w.to)
		if patch == nil && cloud.Exists {
			return cloud, nil
		}
		if patch == nil {
			patch = map[string]any{}
		}
		doc := map[string]any{"state": patch}
		if cloud.Exists {
			doc["version"] = cloud.Version
		}
		a, err := y.request(ctx, id, "update", doc)
		if err != nil {
			return cloud, err
		}
		if !a.accepted {
			if a.code() == 409 {
				return cloud, errCloudConflict
			}
			return cloud, fmt.Errorf("%w the update of %s: %d %v", errCloudRefused, id.key(), a.code(), a.body["message"])
		}
		out := view{Exists: true, Version: versionOf(a.body), State: w.to}
		y.wrote("to-cloud", "update", id, out.Version)
		return out, nil
	case writeDelete:
		a, err := y.request(ctx, id, "delete", map[string]any{})
		if err != nil {
			return cloud, err
		}
		if !a.accepted {
			if a.code() == 404 {
				return view{Version: cloud.Version}, nil
			}
			return cloud, fmt.Errorf("%w the delete of %s: %d %v", errCloudRefused, id.key(), a.code(), a.body["message"])
		}
		out := view{Version: versionOf(a.body)}
		y.wrote("to-cloud", "delete", id, out.Version)
		return out, nil
	}
	return cloud, nil
}

// get reads the upstream's shadow; a 404 is a shadow that does not exist, with the version the record
// last saw.
func (y *syncer) get(ctx context.Context, id ID, rec *syncRecord) (view, error) {
	a, err := y.request(ctx, id, "get", map[string]any{})
	if err != nil {
		return view{}, err
	}
	if a.accepted {
		return viewOfCloud(a.body), nil
	}
	if a.code() == 404 {
		v := view{}
		if rec != nil {
			v.Version = rec.Cloud.Version
		}
		return v, nil
	}
	return view{}, fmt.Errorf("%w the get of %s: %d %v", errCloudRefused, id.key(), a.code(), a.body["message"])
}

// request publishes one request to the upstream's shadow service with a clientToken of the sync's and
// waits for its accepted or rejected answer, at most syncRequestTimeout, paced by
// rateLimits.maxOutboundSyncUpdatesPerSecond.
func (y *syncer) request(ctx context.Context, id ID, op string, doc map[string]any) (answer, error) {
	if d := y.set.interval - time.Since(y.lastRequest); d > 0 {
		time.Sleep(d)
	}
	y.lastRequest = time.Now()
	tok := y.tokenPrefix + strconv.FormatUint(y.tokens.Add(1), 10)
	doc["clientToken"] = tok
	p := &pendingRequest{op: op, ch: make(chan answer, 1)}
	y.mu.Lock()
	if !y.connected {
		y.mu.Unlock()
		return answer{}, errSyncNotConnected
	}
	y.pending[tok] = p
	session := y.session
	y.mu.Unlock()
	defer func() {
		y.mu.Lock()
		delete(y.pending, tok)
		y.mu.Unlock()
	}()
	rctx, cancel := context.WithTimeout(ctx, syncRequestTimeout)
	defer cancel()
	if err := y.up.Publish(rctx, service.Message{Topic: id.Prefix() + "/" + op, Payload: marshal(doc), QoS: 1}); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return answer{}, errSyncTimeout
		}
		return answer{}, err
	}
	select {
	case a := <-p.ch:
		return a, nil
	case <-session:
		return answer{}, errSyncNotConnected
	case <-rctx.Done():
		if ctx.Err() != nil {
			return answer{}, ctx.Err()
		}
		return answer{}, errSyncTimeout
	}
}

// syncWrite is one write of the sync, to be recorded.
type syncWrite struct {
	direction, op string
	id            ID
	version       int64
}

// wrote notes one write of the sync; flushWritten records and counts the notes, once reconcile has
// stored the sync record.
func (y *syncer) wrote(direction, op string, id ID, version int64) {
	y.written = append(y.written, syncWrite{direction, op, id, version})
}

func (y *syncer) flushWritten() {
	for _, w := range y.written {
		y.m.writes.WithLabelValues(w.direction, w.op).Inc()
		y.log.Info("shadow synced", zap.String("direction", w.direction), zap.String("operation", w.op),
			zap.String("deviceShadowName", w.id.Thing), zap.String("shadowName", w.id.Name), zap.Int64("version", w.version))
	}
	y.written = y.written[:0]
}

// syncMetrics are the sync's collectors.
type syncMetrics struct {
	writes    *prometheus.CounterVec
	failures  *prometheus.CounterVec
	full      prometheus.Counter
	conflicts prometheus.Counter
	retrying  prometheus.Gauge
}

func newSyncMetrics(reg prometheus.Registerer) (*syncMetrics, error) {
	m := &syncMetrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ggbroker_shadow_sync_writes_total",
			Help: "Shadow writes of the sync, by direction (to-cloud: the upstream's shadow; to-device: the local one) and operation (update, delete).",
		}, []string{"direction", "operation"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ggbroker_shadow_sync_failures_total",
			Help: "Shadow reconciliations that failed and will be retried, by reason (not-connected, timeout, conflict, refused, error).",
		}, []string{"reason"}),
		full: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ggbroker_shadow_sync_full_total",
			Help: "Full syncs of one shadow (both sides read): on every upstream session, after a conflict, on retries, each period.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ggbroker_shadow_sync_conflicts_total",
			Help: "Version conflicts (409) the sync met, on either side; each leads to one fresh read, not a loop.",
		}),
		retrying: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ggbroker_shadow_sync_retrying",
			Help: "Synced shadows waiting for a retry after a failure.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.writes, m.failures, m.full, m.conflicts, m.retrying} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("shadow sync metrics: %w", err)
		}
	}
	return m, nil
}
