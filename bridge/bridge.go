// Package bridge relays MQTT messages between the client devices of this broker and an upstream broker
// (AWS IoT Core, or any MQTT broker), as Greengrass' MQTT bridge component does
// (greengrass-v2/mqtt-bridge-component.md, services/bridge.md), and loses nothing it acknowledged:
// a device's message bound upstream is on disk before its PUBACK and stays there until the upstream
// acknowledges it.
//
// The service registers a handler for every LocalMqtt-source mapping's topic filter, spools what
// matches (spool.go), and one goroutine keeps a connection to the upstream (session.go) over which the
// pump sends the spool in order and subscriptions for IotCore-source mappings deliver messages to local
// subscribers through the broker.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/service"
)

// Name is the service's name, and the Origin of every message it publishes locally.
const Name = "bridge"

// Files in the state directory.
const (
	SpoolFile  = "bridge-spool.db"
	SpoolDir   = "bridge-spool"
	StatusFile = "bridge-status.json"
)

// Unacknowledged PUBLISHes upstream. AWS IoT Core allows 100 in-flight QoS 1 messages per connection
// (aws-iot-core quotas), whatever its CONNACK says; another broker says what it takes in its MQTT 5
// CONNACK (Receive Maximum), up to maxInflightOther here, and an MQTT 3.1.1 one says nothing, so it
// gets AWS' figure. A wider window matters when each PUBACK waits for the upstream's disk: the window
// divided by that wait is the bridge's rate.
const (
	maxInflightAWS   = 100
	maxInflightOther = 1024
)

// window is the pump's bound on unacknowledged PUBLISHes for this session.
func (b *Bridge) window(s *session) int {
	limit := maxInflightOther
	if s.version == mqtt311 || isAWSEndpoint(b.set.Upstream.Host) {
		limit = maxInflightAWS
	}
	return min(limit, max(s.receiveMax, 1))
}

// isAWSEndpoint: AWS IoT Core's data endpoints (ACCOUNT-ats.iot.REGION.amazonaws.com, and the .cn
// partition's amazonaws.com.cn).
func isAWSEndpoint(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return strings.HasSuffix(h, ".amazonaws.com") || strings.HasSuffix(h, ".amazonaws.com.cn")
}

// stableSession is how long a session must last for the reconnect backoff to start over.
const stableSession = 30 * time.Second

// dropLogEvery spaces the records of a full spool.
const dropLogEvery = 10 * time.Second

// keepAlive for the upstream connection: AWS IoT Core accepts 30..1200 s.
const keepAlive = 60 * time.Second

// Bridge is the bridge service.
type Bridge struct {
	log      *zap.Logger
	set      *settings
	stateDir string

	// Set by Start.
	host      service.Host
	spool     *spool
	m         *metrics
	status    *statusBoard
	wg        sync.WaitGroup
	closeOnce sync.Once

	poison poisonSuspect // only the run goroutine uses it

	dropMu      sync.Mutex
	dropLogged  time.Time
	dropPending int
	// keepAlive and the delays are fields so that tests can shorten them.
	keepAlive time.Duration

	// link shares the upstream connection with other services (upstream.go).
	link *link
}

// New builds the bridge from its config block and the core.* keys; a bad configuration is an error
// naming the key.
func New(deps service.Deps) (service.Service, error) {
	set, err := loadSettings(deps.Config)
	if err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = zap.NewNop()
	}
	for _, w := range set.Warnings {
		log.Warn("bridge configuration", zap.String("details", w))
	}
	dir := deps.Config.StateDir
	if deps.State != nil && deps.State.Dir != "" {
		dir = deps.State.Dir
	}
	return &Bridge{log: log, set: set, stateDir: dir, keepAlive: keepAlive, link: &link{}}, nil
}

// Name implements service.Service.
func (b *Bridge) Name() string { return Name }

// Start registers the handlers of LocalMqtt-source mappings and starts the upstream connection.
func (b *Bridge) Start(ctx context.Context, host service.Host) error {
	b.host = host
	if b.set.Upstream == nil && len(b.set.Routes) == 0 {
		return nil // no bridge configured: nothing to run, no status file
	}
	var err error
	if b.m, err = newMetrics(host.Metrics(), b); err != nil {
		return err
	}
	b.status = newStatusBoard(filepath.Join(b.stateDir, StatusFile), b)
	if up := b.set.Upstream; up != nil {
		b.spool, err = openSpool(b.stateDir, b.set.Spool, b.dropped)
		if err != nil {
			return err
		}
		if n, bytes := b.spool.stats(); n > 0 {
			b.log.Info("bridge spool holds messages from before the restart; they go upstream first",
				zap.Int64("messages", n), zap.Int64("bytes", bytes))
		}
	}
	byFilter := map[string][]route{}
	var filters []string
	for _, r := range b.set.Routes {
		if r.Source != LocalMqtt || (r.Target == IotCore && b.spool == nil) {
			continue
		}
		if _, ok := byFilter[r.Topic]; !ok {
			filters = append(filters, r.Topic)
		}
		byFilter[r.Topic] = append(byFilter[r.Topic], r)
	}
	for _, f := range filters {
		if err := host.Handle(f, b.handler(byFilter[f])); err != nil {
			b.closeSpool()
			return fmt.Errorf("bridge: handle %s: %w", f, err)
		}
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.status.run(ctx)
	}()
	if b.spool != nil {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.run(ctx)
		}()
	}
	return nil
}

// Stop waits for the upstream connection and the status writer to finish and closes the spool.
func (b *Bridge) Stop() error {
	b.wg.Wait()
	return b.closeSpool()
}

func (b *Bridge) closeSpool() error {
	if b.spool == nil {
		return nil
	}
	var err error
	b.closeOnce.Do(func() { err = b.spool.close() })
	return err
}

// handler is the Handler of one topic filter: the routes are the LocalMqtt-source mappings with it.
func (b *Bridge) handler(routes []route) service.Handler {
	return func(ctx context.Context, m *service.Message) error {
		// What the bridge published itself (a message that came down from the upstream, or a
		// LocalMqtt -> LocalMqtt copy) never goes through a mapping again: overlapping mappings, such as
		// Greengrass' shadow recipe with $aws/things/+/shadow/# both ways, cannot loop.
		if m.Origin == Name {
			return nil
		}
		var up []*record
		now := time.Now()
		for _, r := range routes {
			if r.Target == IotCore {
				up = append(up, &record{
					Topic: r.target(m.Topic), Payload: m.Payload, Retain: m.Retain && r.Options.RetainAsPublished, Enqueued: now,
					ContentType: m.ContentType, ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData,
					MessageExpiry: m.MessageExpiry, UserProperties: m.UserProperties,
				})
			}
		}
		// Durable before the device's PUBACK: the broker sends it once the spool's commit is done
		// (service.AckAfter), or after the handler returns when it cannot wait for us. A failed write
		// refuses the message instead (and nothing of it is relayed).
		if len(up) > 0 {
			w, err := b.spool.appendStarted(up...)
			if err != nil {
				return b.refused(m.Topic, len(up), err)
			}
			wait := func() error {
				if err := w.wait(); err != nil {
					return b.refused(m.Topic, len(up), err)
				}
				return nil
			}
			if !service.AckAfter(ctx, wait) {
				if err := wait(); err != nil {
					return err
				}
			}
		}
		for _, r := range routes {
			if r.Target != LocalMqtt {
				continue
			}
			// QoS 1, as Greengrass' bridge publishes to the local broker (services/bridge.md §2).
			out := *m
			out.Topic, out.Retain, out.From, out.QoS = r.target(m.Topic), m.Retain && r.Options.RetainAsPublished, nil, 1
			if err := b.host.Publish(out); err != nil {
				b.log.Error("bridge could not publish locally", zap.String("topicName", out.Topic),
					zap.String("mapping", r.Name), zap.Error(err))
				continue
			}
			b.m.forward(dirLocal, 1)
		}
		return nil
	}
}

// refused logs and counts n records of a message the spool could not take, and returns err (the
// message is refused: MQTT 5 PUBACK 0x80, 3.1.1 no PUBACK).
func (b *Bridge) refused(topic string, n int, err error) error {
	b.log.Error("bridge could not spool a message; refused", zap.String("topicName", topic), zap.Error(err))
	if errors.Is(err, errTooLarge) {
		b.m.drop(dropTooLarge, n)
	}
	return err
}

// dropped is the spool's report of records it dropped to make room.
func (b *Bridge) dropped(n int) {
	b.m.drop(dropSpoolFull, n)
	// One record per dropLogEvery at most: a full spool drops one message per message that arrives.
	b.dropMu.Lock()
	defer b.dropMu.Unlock()
	b.dropPending += n
	if now := time.Now(); now.Sub(b.dropLogged) >= dropLogEvery {
		b.log.Warn("bridge spool full: dropped the oldest messages", zap.Int("dropped", b.dropPending),
			zap.Int("maxMessages", b.set.Spool.MaxMessages), zap.Int64("maxBytes", b.set.Spool.MaxBytes),
			zap.String("reason", "spool-full"))
		b.dropLogged, b.dropPending = now, 0
	}
}

// run keeps a session with the upstream until ctx ends: connect, subscribe, pump, and on failure wait
// with exponential backoff and jitter (bridge.minReconnectDelay .. maxReconnectDelay).
func (b *Bridge) run(ctx context.Context) {
	up := b.set.Upstream
	attempt := 0
	version := mqtt5
	stickToV3 := false
	var subs []subscription
	seen := map[string]bool{}
	for _, r := range b.set.Routes {
		if r.Source == IotCore && !seen[r.Topic] {
			seen[r.Topic] = true
			subs = append(subs, subscription{Filter: r.Topic, RetainAsPublished: r.Options.RetainAsPublished})
		}
	}
	for ctx.Err() == nil {
		s, err := dialSession(ctx, up, version, b.keepAlive, b.deliver)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ref *refusal
			// MQTT 5 refused as such, or no answer at all: try 3.1.1 at once. A refusal naming the
			// protocol means 3.1.1 from now on; silence may be a policy denial, so MQTT 5 is tried again
			// after the next failure.
			if version == mqtt5 && ((errors.As(err, &ref) && ref.protocolRefused()) || errors.Is(err, errNoConnack)) {
				stickToV3 = ref != nil
				b.log.Info("upstream refused MQTT 5; trying MQTT 3.1.1", zap.String("eventType", "Connect"),
					zap.String("clientId", up.ClientID), zap.String("endpoint", up.Address), zap.String("reason", describe(err)))
				version = mqtt311
				continue
			}
			kind := failureKind(err)
			delay := backoff(attempt, b.set.MinBackoff, b.set.MaxBackoff)
			attempt++
			b.m.failures.WithLabelValues(kind).Inc()
			b.status.failed(describe(err))
			b.log.Warn("upstream connection failed", zap.String("eventType", "Connect"), zap.String("status", "Failure"),
				zap.String("clientId", up.ClientID), zap.String("endpoint", up.Address), zap.String("protocol", versionName(version)),
				zap.String("reason", describe(err)), zap.String("details", err.Error()), zap.Duration("retryIn", delay))
			if !stickToV3 {
				version = mqtt5
			}
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		connectedAt := time.Now()
		err = b.serve(ctx, s, subs)
		s.close(err)
		b.link.end(s)
		err = s.cause()
		b.m.connected.Set(0)
		b.status.disconnected(describe(err))
		if ctx.Err() != nil {
			b.log.Info("upstream disconnected: stopping", zap.String("eventType", "Disconnect"), zap.String("clientId", up.ClientID))
			return
		}
		// The backoff starts over only after a session that held (mosquitto.conf's restart_timeout
		// "stable", services/bridge.md §3): an upstream that accepts and then drops the bridge at once
		// is not hammered every minReconnectDelay.
		if time.Since(connectedAt) >= stableSession {
			attempt = 0
		}
		delay := backoff(attempt, b.set.MinBackoff, b.set.MaxBackoff)
		attempt++
		b.log.Warn("upstream disconnected", zap.String("eventType", "Disconnect"), zap.String("clientId", up.ClientID),
			zap.String("endpoint", up.Address), zap.String("reason", describe(err)), zap.Duration("retryIn", delay))
		if !sleep(ctx, delay) {
			return
		}
	}
}

// serve runs one session: subscriptions first (restored after every reconnect: an upstream that lost
// the session has none), then the pump until the session ends.
func (b *Bridge) serve(ctx context.Context, s *session, subs []subscription) error {
	subs = append(subs[:len(subs):len(subs)], b.link.begin(s, subs)...)
	if err := b.unsubscribeStale(ctx, s, subs); err != nil {
		return fmt.Errorf("unsubscribe: %w", err)
	}
	if len(subs) > 0 {
		refused, err := s.subscribe(ctx, subs)
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		var again []subscription
		for _, sub := range subs {
			if code, ok := refused[sub.Filter]; ok {
				again = append(again, sub)
				b.log.Warn("upstream refused a subscription; retrying with backoff", zap.String("topicName", sub.Filter),
					zap.String("clientId", b.set.Upstream.ClientID), zap.String("reason", fmt.Sprintf("SUBACK 0x%02x", code)))
			}
		}
		if len(again) > 0 {
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.resubscribe(ctx, s, again)
			}()
		}
	}
	// Logged once the subscriptions are in place: from here on, the upstream's messages come down.
	up := b.set.Upstream
	b.log.Info("upstream connected", zap.String("eventType", "Connect"), zap.String("status", "Success"),
		zap.String("clientId", up.ClientID), zap.String("endpoint", up.Address), zap.String("protocol", versionName(s.version)),
		zap.Bool("sessionPresent", s.sessionPresent), zap.Uint32("sessionExpiry", s.expiry), zap.Int("subscriptions", len(subs)))
	b.m.connected.Set(1)
	b.status.connected(versionName(s.version))
	b.link.up(s)
	return b.pump(ctx, s)
}

// resubscribe tries refused subscriptions again, with backoff, for as long as the session lives (as
// Greengrass' bridge does: 1 s to 120 s, no limit, services/bridge.md §2): a policy fixed upstream
// takes effect without a restart.
func (b *Bridge) resubscribe(ctx context.Context, s *session, subs []subscription) {
	for n := 0; len(subs) > 0; n++ {
		t := time.NewTimer(backoff(n, b.set.MinBackoff, b.set.MaxBackoff))
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		}
		refused, err := s.subscribe(ctx, subs)
		if err != nil {
			return // the session is ending; the next one subscribes to everything
		}
		var still []subscription
		for _, sub := range subs {
			if _, ok := refused[sub.Filter]; ok {
				still = append(still, sub)
				continue
			}
			b.log.Info("upstream accepted a subscription it had refused", zap.String("topicName", sub.Filter),
				zap.String("clientId", b.set.Upstream.ClientID), zap.Int("attempts", n+2))
		}
		subs = still
	}
}

// unsubscribeStale removes from the upstream's persistent session the filters an earlier run
// subscribed to and no mapping names now: otherwise the upstream keeps sending (and, on AWS IoT Core,
// charging for) messages the bridge can only discard, for as long as the session lives. It then
// records the current filters.
func (b *Bridge) unsubscribeStale(ctx context.Context, s *session, subs []subscription) error {
	up := b.set.Upstream
	key := up.Address + " " + up.ClientID
	old, err := b.spool.subscribed(key)
	if err != nil {
		return err
	}
	current := map[string]bool{}
	var filters []string
	for _, sub := range subs {
		current[sub.Filter] = true
		filters = append(filters, sub.Filter)
	}
	var stale []string
	for _, f := range old {
		if !current[f] {
			stale = append(stale, f)
		}
	}
	if len(stale) > 0 && s.sessionPresent {
		if err := s.unsubscribe(ctx, stale); err != nil {
			return err
		}
		b.log.Info("unsubscribed upstream from filters no mapping names any more", zap.Strings("topicFilters", stale),
			zap.String("clientId", up.ClientID))
	}
	if len(stale) > 0 || len(old) != len(filters) {
		return b.spool.setSubscribed(key, filters)
	}
	return nil
}

// pump sends the spool upstream in order, up to the upstream's receive maximum unacknowledged and at
// most settings.Rate a second, and deletes what the upstream acknowledged. It starts from the oldest
// record each session: what was in flight when the last one broke goes again (QoS 1 is at least once).
func (b *Bridge) pump(ctx context.Context, s *session) error {
	window := b.window(s)
	var interval time.Duration
	if b.set.Rate > 0 {
		interval = time.Second / time.Duration(b.set.Rate)
	}
	inflight := map[uint16]sent{}
	var last uint64
	var done []uint64
	var nextAt time.Time // the rate's next slot
	var pace <-chan time.Time
	// throttled: the upstream answered PUBACK 0x97 (quota exceeded). Sending stops until what is in
	// flight is answered, waits throttleWait, and starts again from the oldest refused record.
	throttled, retryFrom := false, uint64(0)
	var resume <-chan time.Time
	for {
		free := window - len(inflight)
		if throttled {
			free = 0
		}
		if interval > 0 && free > 0 {
			now := time.Now()
			if now.Before(nextAt) {
				free, pace = 0, time.After(nextAt.Sub(now))
			} else {
				free = 1
			}
		}
		if free > 0 {
			recs, err := b.spool.read(last, free)
			if err != nil {
				return err
			}
			if len(recs) > 0 {
				err := s.write(func(w io.Writer) error {
					for _, r := range recs {
						last = r.Seq
						expiry, live := remainingExpiry(r, time.Now())
						if !live {
							done = append(done, r.Seq)
							b.m.drop(dropExpired, 1)
							continue
						}
						if !s.fits(r) {
							// The upstream would close the connection on it, every time.
							done = append(done, r.Seq)
							b.m.drop(dropTooLarge, 1)
							b.log.Warn("message larger than the upstream's maximum packet size; dropped", zap.String("topicName", r.Topic),
								zap.Int("payloadBytes", len(r.Payload)), zap.Uint32("maximumPacketSize", s.maxPacket))
							continue
						}
						id := s.id()
						inflight[id] = sent{r.Seq, r.Topic}
						if err := s.publish(w, id, r, expiry); err != nil {
							return err
						}
						if interval > 0 {
							nextAt = time.Now().Add(interval)
						}
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
		if len(done) > 0 {
			// Not waited for: a delete lost in a crash only sends a message again (QoS 1 is at least
			// once), and deletes share the appends' commits instead of adding fsyncs of their own. The
			// synchronous remove at the session's end orders them before the next session reads.
			b.spool.removeLater(done)
			done = nil
		}
		handle := func(a ack) {
			f, ok := inflight[a.id]
			if !ok {
				return
			}
			delete(inflight, a.id)
			switch {
			case a.code == quotaExceeded:
				if !throttled || f.seq < retryFrom {
					retryFrom = f.seq
				}
				if !throttled {
					b.log.Warn("upstream throttles the bridge: pausing", zap.String("topicName", f.topic),
						zap.String("clientId", b.set.Upstream.ClientID), zap.String("reason", "PUBACK 0x97 quota exceeded"),
						zap.Duration("retryIn", throttleWait))
				}
				throttled = true
				return
			case a.code >= 0x80:
				// Refused for good (not authorized, topic invalid ...): sending it again would refuse it
				// again and hold up everything behind it. 0x10 "no matching subscribers" is a success
				// (services/bridge.md §2, BR-L5).
				b.m.drop(dropRefused, 1)
				b.log.Warn("upstream refused a message; dropped", zap.String("topicName", f.topic),
					zap.String("clientId", b.set.Upstream.ClientID), zap.String("reason", fmt.Sprintf("PUBACK 0x%02x", a.code)))
			default:
				b.m.forward(dirToUpstream, 1)
			}
			done = append(done, f.seq)
		}
		if throttled && len(inflight) == 0 && resume == nil {
			resume = time.After(throttleWait)
		}
		select {
		case a := <-s.acks:
			handle(a)
			for more := true; more; {
				select {
				case a := <-s.acks:
					handle(a)
				default:
					more = false
				}
			}
		case <-b.spool.added:
		case <-pace:
			pace = nil
		case <-resume:
			resume, throttled, last = nil, false, retryFrom-1
		case <-s.done:
			for more := true; more; { // acknowledgements that arrived before the break
				select {
				case a := <-s.acks:
					handle(a)
				default:
					more = false
				}
			}
			_ = b.spool.remove(done)
			b.suspectPoison(s, inflight)
			return s.cause()
		case <-ctx.Done():
			_ = b.spool.remove(done)
			return ctx.Err()
		}
	}
}

// suspectPoison handles what MQTT 3.1.1 cannot say: AWS IoT Core answers a publish the policy denies by
// closing the connection (services/bridge.md §4, mosquitto#1486; the iot-core profile does the same).
// A record that was the oldest in flight when the upstream closed the connection poisonAfter times in
// a row is dropped, logged and counted, instead of holding up the spool forever.
func (b *Bridge) suspectPoison(s *session, inflight map[uint16]sent) {
	closed := errors.Is(s.err, io.EOF) || errors.Is(s.err, io.ErrUnexpectedEOF) || errors.Is(s.err, syscall.ECONNRESET) || errors.Is(s.err, syscall.EPIPE)
	if s.version != mqtt311 || len(inflight) == 0 || !closed {
		b.poison = poisonSuspect{}
		return
	}
	head := uint64(0)
	for _, f := range inflight {
		if head == 0 || f.seq < head {
			head = f.seq
		}
	}
	if b.poison.seq != head {
		b.poison = poisonSuspect{seq: head}
	}
	b.poison.strikes++
	if b.poison.strikes < poisonAfter {
		return
	}
	recs, err := b.spool.read(head-1, 1)
	if err != nil || len(recs) == 0 || recs[0].Seq != head {
		return
	}
	if err := b.spool.remove([]uint64{head}); err != nil {
		return
	}
	b.m.drop(dropRefused, 1)
	b.log.Warn("upstream closed the connection on this message each time; dropped", zap.String("topicName", recs[0].Topic),
		zap.String("clientId", b.set.Upstream.ClientID), zap.Int("attempts", b.poison.strikes),
		zap.String("reason", "MQTT 3.1.1 upstream closes the connection on a publish it refuses (AWS IoT Core: the policy denies iot:Publish)"))
	b.poison = poisonSuspect{}
}

// sent is a record in flight upstream: its sequence number, and its topic for the log records.
type sent struct {
	seq   uint64
	topic string
}

// poisonAfter is how many times in a row the upstream may close the connection on the same message.
const poisonAfter = 3

// poisonSuspect is the record suspectPoison watches.
type poisonSuspect struct {
	seq     uint64
	strikes int
}

// quotaExceeded is the MQTT 5 PUBACK reason code of a throttled publish; throttleWait is how long the
// pump pauses then (AWS IoT Core's publish quota is per second).
const (
	quotaExceeded = 0x97
	throttleWait  = time.Second
)

// remainingExpiry is a spooled message's MQTT 5 message expiry left now (0: none), and whether it is
// still alive: a message that expired in the spool is not sent (MQTT 5 §3.3.2.3.3).
func remainingExpiry(r *record, now time.Time) (uint32, bool) {
	if r.MessageExpiry == 0 {
		return 0, true
	}
	left := time.Duration(r.MessageExpiry)*time.Second - now.Sub(r.Enqueued)
	if left <= 0 {
		return 0, false
	}
	return uint32((left + time.Second - 1) / time.Second), true
}

// deliver publishes a message from the upstream to local subscribers through every IotCore-source
// mapping it matches; iot:Receive is checked per subscriber by the broker. An error leaves the message
// unacknowledged upstream, which sends it again.
func (b *Bridge) deliver(in inbound) error {
	var errs []error
	matched := b.link.dispatch(in.Message)
	for _, r := range b.set.Routes {
		if r.Source != IotCore || !service.TopicMatches(r.Topic, in.Topic) {
			continue
		}
		matched = true
		out := in.Message
		out.Topic, out.QoS, out.Retain = r.target(in.Topic), 1, in.Retain && r.Options.RetainAsPublished
		if err := b.host.Publish(out); err != nil {
			b.log.Error("bridge could not publish an upstream message locally", zap.String("topicName", out.Topic),
				zap.String("mapping", r.Name), zap.Error(err))
			errs = append(errs, err)
			continue
		}
		b.m.forward(dirFromUpstream, 1)
	}
	if !matched {
		b.log.Debug("message from the upstream matches no mapping; discarded", zap.String("topicName", in.Topic))
	}
	return errors.Join(errs...)
}

// backoff is the wait before reconnect attempt n (0-based): exponential from min, capped at max,
// with jitter over [min, ceiling] so that many gateways that lost the upstream together do not
// come back together (AWS IoT Core asks devices for exponential backoff with jitter).
func backoff(n int, lo, hi time.Duration) time.Duration {
	ceil := lo
	for i := 0; i < n && ceil < hi; i++ {
		ceil *= 2
	}
	ceil = min(ceil, hi)
	if ceil <= lo {
		return lo
	}
	return lo + rand.N(ceil-lo+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
