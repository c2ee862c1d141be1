// Package shadow is the Device Shadow service: classic and named shadows over MQTT
// ($aws/things/THING/shadow/...) and over the iot-data HTTPS API, answered the way AWS IoT Core answers
// them (reference/services/shadow.md), stored durably in the state directory's service database.
//
// The document rules (merge, metadata, delta, versions, limits, errors) are pure functions in
// document.go; Shadows (shadows.go) applies them to the store one shadow at a time; this file is the MQTT
// front end and http.go the HTTPS one.
package shadow

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/internal/ids"
	"github.com/ggbroker/ggbroker/service"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// Section is the shadow block of the configuration, with its documented defaults.
var Section = config.Section{Key: "shadow", Defaults: defaultsYAML}

// Config is the shadow block.
type Config struct {
	Enabled                bool `mapstructure:"enabled"`
	DocumentSizeLimitBytes int  `mapstructure:"documentSizeLimitBytes"`
	MaxInFlightRequests    int  `mapstructure:"maxInFlightRequests"`
	// AcceptedToAllSubscribers publishes update/accepted and delete/accepted to every subscriber, as
	// AWS does; false answers the requester only.
	AcceptedToAllSubscribers bool `mapstructure:"acceptedToAllSubscribers"`

	// The Greengrass shadow manager's sync keys, verbatim (syncconfig.go): off unless synchronize names
	// shadows.
	Synchronize SyncConfig     `mapstructure:"synchronize"`
	Strategy    SyncStrategy   `mapstructure:"strategy"`
	RateLimits  SyncRateLimits `mapstructure:"rateLimits"`
}

// maxDocumentSizeLimit is the Greengrass shadow manager's upper bound (services/shadow.md §7).
const maxDocumentSizeLimit = 30720

// DecodeConfig reads the shadow block over its defaults and checks it, naming the key at fault.
func DecodeConfig(c *config.Config) (Config, error) {
	cfg := Config{Enabled: true, DocumentSizeLimitBytes: DefaultLimits.DocumentSize, MaxInFlightRequests: 10, AcceptedToAllSubscribers: true,
		RateLimits: SyncRateLimits{MaxOutboundSyncUpdatesPerSecond: 100}}
	if err := c.Decode(Section.Key, &cfg); err != nil {
		return cfg, err
	}
	if cfg.DocumentSizeLimitBytes < 1 || cfg.DocumentSizeLimitBytes > maxDocumentSizeLimit {
		return cfg, fmt.Errorf("config %s: shadow.documentSizeLimitBytes: %d is not between 1 and %d", c.Source, cfg.DocumentSizeLimitBytes, maxDocumentSizeLimit)
	}
	if cfg.MaxInFlightRequests < 1 {
		return cfg, fmt.Errorf("config %s: shadow.maxInFlightRequests: %d is not a positive number", c.Source, cfg.MaxInFlightRequests)
	}
	return cfg, nil
}

// Service is the Device Shadow service inside the broker.
type Service struct {
	cfg       Config
	log       *zap.Logger
	accountID string
	now       func() time.Time

	host    service.Host
	shadows *Shadows
	metrics *metrics

	syncSet *syncSettings
	sync    *syncer // nil when no shadow is synced or there is no upstream

	// inflight counts each connection's unanswered requests; queues holds them in arrival order, one
	// goroutine per connection draining its queue while it is not empty, and for drainLinger after.
	mu     sync.Mutex
	queues map[string]*queue
	wg     sync.WaitGroup
	// stopping is closed by Stop: lingering drain goroutines end at once.
	stopping  chan struct{}
	closeOnce sync.Once
}

type queue struct {
	pending []*request
	running bool
	// idle is set while the drain goroutine waits for more work; wake (capacity 1) tells it of some.
	idle bool
	wake chan struct{}
	// inflight counts the queued requests and the one being served.
	inflight int
}

// drainLinger is how long a connection's drain goroutine waits for its next request before it ends.
// A new goroutine starts on a small stack and grows it, copy by copy, while it serves its first
// request (JSON, bbolt, mochi's publish path): a tenth of an update's CPU when every request had a
// goroutine of its own. A device that sends its next request within this time is served by the
// goroutine that has grown already. A variable for the tests.
var drainLinger = 100 * time.Millisecond

// request is one MQTT shadow request.
type request struct {
	id      ID
	op      Operation
	topic   string
	payload []byte
	from    *service.Client
	start   time.Time
	// served, when not nil, hears once the request is answered: nil, or the failure (500) that left it
	// undone. The device's PUBACK of a consumed request waits for it (see handle).
	served chan error
	failed *Error
}

// subscriptions is the part of the host that tells whether a publish to a topic could reach anyone: a
// subscription, or another service's handler (the broker's host has it; with a host without it every
// request is delivered and every answer published as usual).
type subscriptions interface {
	HasSubscribers(topic string) bool
}

// New is the service's constructor for the app.
func New(deps service.Deps) (service.Service, error) {
	cfg, err := DecodeConfig(deps.Config)
	if err != nil {
		return nil, err
	}
	ss, err := loadSync(deps.Config, cfg)
	if err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = zap.NewNop()
	}
	for _, w := range ss.warnings {
		log.Warn("shadow sync configuration", zap.String("details", w))
	}
	return &Service{cfg: cfg, log: log, accountID: deps.Config.Core.AccountID, now: time.Now, queues: map[string]*queue{}, syncSet: ss,
		stopping: make(chan struct{})}, nil
}

// Name is "shadow".
func (s *Service) Name() string { return "shadow" }

// Start opens the shadow bucket and registers the request topics and the HTTPS routes.
func (s *Service) Start(ctx context.Context, host service.Host) error {
	if !s.cfg.Enabled {
		return nil
	}
	s.host = host
	if l := host.Log(); l != nil {
		s.log = l
	}
	store, err := host.Store(Bucket)
	if err != nil {
		return fmt.Errorf("shadow store: %w", err)
	}
	s.shadows = NewShadows(store, Limits{DocumentSize: s.cfg.DocumentSizeLimitBytes}, s.now)
	if s.metrics, err = newMetrics(host.Metrics()); err != nil {
		return err
	}
	for _, f := range requestFilters {
		if err := host.Handle(f, s.handle); err != nil {
			return fmt.Errorf("shadow: handle %s: %w", f, err)
		}
	}
	if err := s.registerHTTP(host); err != nil {
		return err
	}
	return s.startSync(ctx)
}

// Stop waits for the requests in flight to be answered and the sync to stop.
func (s *Service) Stop() error {
	s.closeOnce.Do(func() { close(s.stopping) })
	s.wg.Wait()
	if s.sync != nil {
		s.sync.wait()
	}
	return nil
}

// handle takes a request a device published (the broker has authorized the publish). It queues it on
// the device's connection and returns at once: the message is also delivered to the request topic's
// subscribers, as AWS does (aws-iot-core/reserved-topics.md: the request topics are Publish/Subscribe).
// A request published by a service (the HTTP Publish API) has nobody to answer and is served here.
//
// A QoS 1 request that no subscription matches (the usual case: devices subscribe to the answer
// topics) is consumed instead: delivered to nobody, as it would have been, and acknowledged once it
// has been served (service.AckAfter): after the update is on disk and accepted is sent, or after the
// rejection. The broker then does not write it to the session store's publish log before its PUBACK,
// which protects only the copies for subscribers, here none: one fsynced commit per update instead of
// two. A failed write (500) leaves the request unacknowledged, so that the device sends it again.
func (s *Service) handle(ctx context.Context, m *service.Message) error {
	id, op, ok := ParseRequestTopic(m.Topic)
	if !ok || m.Origin == s.Name() {
		return nil // not a request, or our own HTTP Publish, which httpPublish serves
	}
	r := &request{id: id, op: op, topic: m.Topic, payload: append([]byte(nil), m.Payload...), from: m.From, start: time.Now()}
	if r.from == nil {
		s.serve(r)
		return nil
	}
	consume := false
	if m.QoS == 1 && !m.Retain && !s.mayReach(m.Topic) {
		r.served = make(chan error, 1)
		consume = service.AckAfter(ctx, func() error { return <-r.served })
	}
	done := func() error {
		if consume {
			return service.Consumed
		}
		return nil
	}
	key := r.from.ClientID
	s.mu.Lock()
	q := s.queues[key]
	if q == nil {
		q = &queue{wake: make(chan struct{}, 1)}
		s.queues[key] = q
	}
	if q.inflight >= s.cfg.MaxInFlightRequests {
		s.mu.Unlock()
		tok, has := tokenOf(r)
		s.refuse(r, errTooManyRequests, nil, tok, has)
		r.answered()
		return done()
	}
	q.pending = append(q.pending, r)
	q.inflight++
	switch {
	case !q.running:
		q.running = true
		s.wg.Add(1)
		go s.drain(key, q)
	case q.idle:
		q.idle = false
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	return done()
}

// answered tells a consumed request's PUBACK that the request has been served.
func (r *request) answered() {
	if r.served == nil {
		return
	}
	if r.failed != nil {
		r.served <- r.failed
		return
	}
	r.served <- nil
}

// drain serves one connection's requests in order; once its queue is empty it waits up to
// drainLinger for the next one (see drainLinger), then ends.
func (s *Service) drain(key string, q *queue) {
	defer s.wg.Done()
	var linger *time.Timer
	for {
		s.mu.Lock()
		if len(q.pending) == 0 {
			if !s.waitForWork(q, &linger) {
				q.running = false
				if s.queues[key] == q {
					delete(s.queues, key)
				}
				s.mu.Unlock()
				return
			}
			continue // s.mu is not held
		}
		r := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		s.mu.Unlock()
		s.serve(r)
		r.answered()
		s.mu.Lock()
		q.inflight--
		s.mu.Unlock()
	}
}

// waitForWork waits, with s.mu held on entry, for a request on q's empty queue. It reports false, with
// s.mu held and the queue still empty, when none came within drainLinger or the service stops; true,
// with s.mu released, when one came.
func (s *Service) waitForWork(q *queue, linger **time.Timer) bool {
	select {
	case <-s.stopping:
		return false
	default:
	}
	q.idle = true
	s.mu.Unlock()
	if *linger == nil {
		*linger = time.NewTimer(drainLinger)
	} else {
		(*linger).Reset(drainLinger)
	}
	select {
	case <-q.wake:
		return true
	case <-(*linger).C:
	case <-s.stopping:
	}
	s.mu.Lock()
	q.idle = false
	if len(q.pending) > 0 {
		// A request came as the wait ended; handle may have signalled wake too: drain it, so that
		// the next wait does not return on a stale signal.
		select {
		case <-q.wake:
		default:
		}
		s.mu.Unlock()
		return true
	}
	return false
}

// tokenOf reads a request's clientToken for a refusal made before the request is parsed.
func tokenOf(r *request) (string, bool) {
	if r.op == OpUpdate {
		req, _ := ParseUpdate(r.payload)
		return req.Token, req.HasToken
	}
	t, has, _ := ParseTokenOnly(r.payload)
	return t, has
}

// serve answers one request on its accepted or rejected topic.
func (s *Service) serve(r *request) {
	switch r.op {
	case OpGet:
		tok, has, e := ParseTokenOnly(r.payload)
		if e == nil {
			e = r.id.Validate()
		}
		if e != nil {
			s.refuse(r, e, nil, tok, has)
			return
		}
		d, e, cause := s.shadows.Get(r.id)
		if e != nil {
			s.refuse(r, e, cause, tok, has)
			return
		}
		s.answer(r, "/get/accepted", GetResponse(d, s.shadows.Now(), tok, has))
	case OpDelete:
		// "The content of the message is ignored" (aws-iot-core/device-shadow-mqtt.md, /delete), but for
		// the clientToken the SDKs correlate on: a payload that is not JSON deletes all the same.
		tok, has, e := ParseTokenOnly(r.payload)
		if e == errInvalidJSON || e == errEncoding {
			tok, has, e = "", false, nil
		}
		if e == nil {
			e = r.id.Validate()
		}
		if e != nil {
			s.refuse(r, e, nil, tok, has)
			return
		}
		_, e, cause := s.shadows.Delete(r.id, func(v int64) {
			s.accepted(r, r.id, "/delete/accepted", DeleteResponse(v, s.shadows.Now(), tok, has))
		})
		if e != nil {
			s.refuse(r, e, cause, tok, has)
			return
		}
		s.record(r.op, "MQTT", r.id, r.topic, r.from, nil, nil, r.start)
	case OpUpdate:
		req, e := ParseUpdate(r.payload)
		if e == nil {
			e = r.id.Validate()
		}
		if e != nil {
			s.refuse(r, e, nil, req.Token, req.HasToken)
			return
		}
		_, e, cause := s.shadows.Update(r.id, req, func(u *Update) {
			s.accepted(r, r.id, "/update/accepted", u.Accepted)
			s.publishUpdate(r.id, u)
		})
		if e != nil {
			s.refuse(r, e, cause, req.Token, req.HasToken)
			return
		}
		s.record(r.op, "MQTT", r.id, r.topic, r.from, nil, nil, r.start)
	}
}

// accepted tells of an accepted update or delete. AWS publishes update/accepted and delete/accepted to
// every subscriber of the topic, not only to the requester: its reference architecture has applications
// subscribe to a device's update/accepted to follow the device's changes (IoT Atlas, "Device State
// Replica"), and other clients of a thing receive its update/accepted (aws/aws-sdk-ios#620; the v1 JS
// SDK's foreignStateChange). With acceptedToAllSubscribers off, only the requester is answered. r is
// nil for an HTTP request.
func (s *Service) accepted(r *request, id ID, suffix string, payload []byte) {
	if !s.cfg.AcceptedToAllSubscribers {
		if r != nil {
			s.sendTo(r, suffix, payload)
		}
		return
	}
	topic := id.Prefix() + suffix
	if err := s.host.Publish(service.Message{Topic: topic, Payload: payload, QoS: 1}); err != nil {
		s.log.Warn("shadow: publish", zap.String("topicName", topic), zap.Error(err))
	}
}

// publishUpdate publishes an accepted update's documents and delta to every subscriber allowed to
// receive them: AWS publishes these to all MQTT subscribers, also after an HTTP update
// (aws-iot-core/device-shadow-data-flow.md, "Updating a shadow"). update/documents is written and
// published only when a subscription (or another service) can receive it: a publish to nobody
// reaches nobody, and devices seldom follow update/documents.
func (s *Service) publishUpdate(id ID, u *Update) {
	prefix := id.Prefix()
	if docs := prefix + "/update/documents"; s.mayReach(docs) {
		if err := s.host.Publish(service.Message{Topic: docs, Payload: u.Documents(), QoS: 1}); err != nil {
			s.log.Warn("shadow: publish update/documents", zap.String("topicName", docs), zap.Error(err))
		}
	}
	if u.Delta != nil {
		if err := s.host.Publish(service.Message{Topic: prefix + "/update/delta", Payload: u.Delta, QoS: 1}); err != nil {
			s.log.Warn("shadow: publish update/delta", zap.String("topicName", prefix+"/update/delta"), zap.Error(err))
		}
	}
}

// mayReach reports whether a publish to topic could reach anyone: true unless the host says that no
// subscription and no other service's handler matches it.
func (s *Service) mayReach(topic string) bool {
	subs, ok := s.host.(subscriptions)
	return !ok || subs.HasSubscribers(topic)
}

// answer sends an accepted answer to the requester and records the request.
func (s *Service) answer(r *request, suffix string, payload []byte) {
	s.sendTo(r, suffix, payload)
	s.record(r.op, "MQTT", r.id, r.topic, r.from, nil, nil, r.start)
}

// refuse sends the rejected answer to the requester and records the refusal. The token is echoed when
// the request had a valid one.
func (s *Service) refuse(r *request, e *Error, cause error, tok string, has bool) {
	if e.Code >= 500 {
		r.failed = e
	}
	s.sendTo(r, "/"+string(r.op)+"/rejected", ErrorResponse(e, s.now().Unix(), tok, has))
	s.record(r.op, "MQTT", r.id, r.topic, r.from, e, cause, r.start)
}

// sendTo answers the requester only, and only on a subscription it holds and may receive on: the
// Device Shadow service's rule (service.SendOptions.RequireSubscription). A request without a requester
// (published by a service) gets no answer.
func (s *Service) sendTo(r *request, suffix string, payload []byte) {
	if r.from == nil {
		return
	}
	topic := r.id.Prefix() + suffix
	err := s.host.SendTo(r.from, service.Message{Topic: topic, Payload: payload, QoS: 1}, service.SendOptions{RequireSubscription: true})
	if err != nil {
		s.log.Debug("shadow: answer not delivered", zap.String("clientId", r.from.ClientID), zap.String("topicName", topic), zap.Error(err))
	}
}

// record logs one shadow request as AWS' Device Shadow log entries do (aws-iot-core/cwl-format.md:
// eventType GetThingShadow, UpdateThingShadow or DeleteThingShadow, deviceShadowName, protocol,
// topicName), with the requester's identity, and counts it.
func (s *Service) record(op Operation, protocol string, id ID, topic string, from *service.Client, e *Error, cause error, start time.Time) {
	code := 200
	if e != nil {
		code = e.Code
	}
	s.metrics.observe(op, protocol, code, time.Since(start))
	// A refusal is the device's business (a get of a shadow not made yet is how SDKs start): Info like
	// a success, with status Failure; only the service's own failure (500) is an error.
	status, level := "Success", zap.InfoLevel
	if e != nil {
		status = "Failure"
		if e.Code >= 500 {
			level = zap.ErrorLevel
		}
	}
	ce := s.log.Check(level, op.EventType())
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("traceId", ids.TraceID()), zap.String("accountId", s.accountID),
		zap.String("eventType", op.EventType()), zap.String("status", status), zap.String("protocol", protocol),
		zap.String("deviceShadowName", id.Thing),
	}
	if id.Name != "" {
		fields = append(fields, zap.String("shadowName", id.Name))
	}
	if topic != "" {
		fields = append(fields, zap.String("topicName", topic))
	}
	if from != nil {
		fields = append(fields, zap.String("clientId", from.ClientID), zap.String("thingName", from.ThingName),
			zap.String("principalId", from.CertificateID), zap.String("sourceIp", from.SourceIP.String()),
			zap.Int("sourcePort", from.SourcePort))
	}
	if e != nil {
		fields = append(fields, zap.String("reason", strconv.Itoa(e.Code)), zap.String("details", e.Message))
	}
	if cause != nil {
		fields = append(fields, zap.Error(cause))
	}
	ce.Write(fields...)
}
