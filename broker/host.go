package broker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/internal/boltcommit"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/service"
)

// Constructor makes one device service from the process's dependencies (see app.Services).
type Constructor func(service.Deps) (service.Service, error)

// WithServices adds device services. New constructs them once the state directory is open; Run starts
// them before the listeners accept devices and stops them after the last device is gone.
func WithServices(ctors ...Constructor) Option {
	return func(b *Broker) { b.svc.ctors = append(b.svc.ctors, ctors...) }
}

// services is the broker's side of the service seam (service.Host, one per service).
type services struct {
	ctors []Constructor
	list  []service.Service
	hosts []*host

	db     *bbolt.DB // services.db, nil when there are no services
	commit *boltcommit.Committer

	mu      sync.Mutex // guards routes' writers and stores
	routes  atomic.Pointer[routeTable]
	device  *http.ServeMux
	stores  map[string]*bucketStore
	started []service.Service
	// unknownCerts are the OnUnknownCertificate functions, in registration order (under mu).
	unknownCerts []func(chain []*x509.Certificate)
}

// route is one Handle registration.
type route struct {
	filter  string
	handler service.Handler
	service string
}

// routeTable is the routes in registration order, and the first topic levels they can match: most
// messages are devices' telemetry on topics no service handles, and are told so by one map lookup
// instead of a match against every filter.
type routeTable struct {
	routes []route
	firsts map[string]bool // the first level of every filter that starts with a literal level
	wild   bool            // some filter starts with + or #: any topic may match
}

func newRouteTable(routes []route) *routeTable {
	t := &routeTable{routes: routes, firsts: map[string]bool{}}
	for _, r := range routes {
		first, _, _ := strings.Cut(r.filter, "/")
		if first == "+" || first == "#" {
			t.wild = true
		}
		t.firsts[first] = true
	}
	return t
}

// mayMatch reports whether some route's filter may match topic: false means none does.
func (t *routeTable) mayMatch(topic string) bool {
	if t.wild {
		return true
	}
	first, _, _ := strings.Cut(topic, "/")
	return t.firsts[first]
}

// matching calls fn for each route whose filter matches topic, in registration order, until fn
// returns false.
func (t *routeTable) matching(topic string, fn func(r *route) bool) {
	if !t.mayMatch(topic) {
		return
	}
	for i := range t.routes {
		if service.TopicMatches(t.routes[i].filter, topic) && !fn(&t.routes[i]) {
			return
		}
	}
}

// openServices opens the service database and constructs the services.
func (b *Broker) openServices() error {
	if len(b.svc.ctors) == 0 {
		return nil
	}
	db, err := openServiceDB(b.state.Dir)
	if err != nil {
		return err
	}
	b.svc.db, b.svc.commit = db, boltcommit.New(db)
	b.svc.stores = map[string]*bucketStore{}
	b.svc.device = http.NewServeMux()
	deps := service.Deps{Config: b.cfg, State: b.state, Log: b.log}
	for _, ctor := range b.svc.ctors {
		s, err := ctor(deps)
		if err != nil {
			return err
		}
		b.svc.list = append(b.svc.list, s)
	}
	return nil
}

// startServices hands every service its Host and starts it, in order. A failure stops the ones
// started and names the service.
func (b *Broker) startServices(ctx context.Context) error {
	for _, s := range b.svc.list {
		h := &host{b: b, name: s.Name(), log: b.log.Named(s.Name()), reg: b.metrics.reg}
		b.svc.hosts = append(b.svc.hosts, h)
		if err := s.Start(ctx, h); err != nil {
			b.stopServices()
			return fmt.Errorf("start service %s: %w", s.Name(), err)
		}
		b.svc.mu.Lock()
		b.svc.started = append(b.svc.started, s)
		b.svc.mu.Unlock()
	}
	return nil
}

// stopServices stops the started services, last first, then closes the service database.
func (b *Broker) stopServices() {
	b.svc.mu.Lock()
	started := b.svc.started
	b.svc.started = nil
	b.svc.mu.Unlock()
	for i := len(started) - 1; i >= 0; i-- {
		if err := started[i].Stop(); err != nil {
			b.log.Error("service stop failed", zap.String("service", started[i].Name()), zap.Error(err))
		}
	}
}

// closeServiceDB closes the service database (after the services stopped).
func (b *Broker) closeServiceDB() {
	if b.svc.commit != nil {
		b.svc.commit.Close()
		b.svc.commit = nil
	}
	if b.svc.db != nil {
		_ = b.svc.db.Close()
		b.svc.db = nil
	}
}

// serviceHook routes devices' messages to the services' handlers. It runs after the authorization
// hook (only allowed messages reach a service) and before the storage hook (a message a service
// refused is never logged as accepted).
type serviceHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *serviceHook) ID() string { return "ggbroker-services" }

func (h *serviceHook) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish calls every handler whose filter matches. With no route for the topic's first level it costs
// an atomic load and a map lookup.
func (h *serviceHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	rs := h.b.svc.routes.Load()
	if rs == nil || cl.Net.Inline || !rs.mayMatch(pk.TopicName) {
		return pk, nil
	}
	var m *service.Message
	ctx := context.Background()
	consumed, held := false, false
	var refused error
	rs.matching(pk.TopicName, func(r *route) bool {
		if m == nil {
			m = messageOf(pk)
			m.From = h.b.clientOf(cl)
			if pk.FixedHeader.Qos == 1 {
				// mochi's deferred PUBACK (PATCHES.md 43); held: a service keeps the message durably.
				ctx = service.WithAckAfter(ctx, func(wait func() error) { held = true; cl.DeferAck(wait) })
			}
		}
		err := r.handler(ctx, m)
		switch {
		case err == nil:
		case errors.Is(err, service.Consumed):
			consumed = true
		default:
			h.b.log.Error("message refused by a service", zap.String("service", r.service), zap.String("clientId", cl.ID),
				zap.String("topicName", pk.TopicName), zap.String("eventType", "Publish-In"), zap.String("status", "Failure"),
				zap.String("reason", "SERVICE_ERROR"), zap.Error(err))
			h.b.events.Dropped("service-error")
			refused = err
			return false
		}
		return true
	})
	if refused != nil {
		if cl.Properties.ProtocolVersion == 5 {
			if pk.FixedHeader.Qos > 0 {
				return pk, packets.ErrUnspecifiedError // PUBACK 0x80
			}
			return pk, packets.ErrRejectPacket
		}
		cl.Stop(packets.ErrUnspecifiedError) // MQTT 3.1.1 cannot say no: no PUBACK, the connection closes
		return pk, packets.ErrRejectPacket
	}
	// A message a service keeps durably (the bridge's spool) and no subscription matches has nobody
	// to be delivered to, so the session store's publish log, which replays a message to the
	// subscribers a crash kept it from, would be a second commit for nothing: it is passed on as
	// consumed, its PUBACK waiting for the service's write alone. Retained messages go on as they
	// are (they are kept for later subscribers).
	if consumed || (held && !pk.FixedHeader.Retain && !h.b.server.Topics.HasSubscribers(pk.TopicName)) {
		return pk, packets.CodeSuccessIgnore // acknowledged, delivered to no subscriber
	}
	return pk, nil
}

// clientOf is the seam's view of a connected MQTT client, nil when it has no session.
func (b *Broker) clientOf(cl *mqtt.Client) *service.Client {
	e, ok := b.hook.entry(cl)
	if !ok {
		return nil
	}
	return sessionClient(cl.ID, e.session)
}

func sessionClient(clientID string, s *authz.Session) *service.Client {
	c := service.Client{ClientID: clientID, SourceIP: s.SourceIP, SourcePort: s.SourcePort, ProtocolVersion: s.ProtocolVersion}
	if c.ProtocolVersion == 4 {
		c.ProtocolVersion = 3
	}
	if id := s.Identity; id != nil {
		c.CertificateID = id.CertificateID
		c.ThingName = id.ThingName()
	}
	return service.NewClient(c, s)
}

func messageOf(pk packets.Packet) *service.Message {
	m := &service.Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, Retain: pk.FixedHeader.Retain,
		ResponseTopic: pk.Properties.ResponseTopic, CorrelationData: pk.Properties.CorrelationData,
		ContentType: pk.Properties.ContentType, MessageExpiry: pk.Properties.MessageExpiryInterval}
	for _, u := range pk.Properties.User {
		m.UserProperties = append(m.UserProperties, service.UserProperty{Key: u.Key, Value: u.Val})
	}
	return m
}

func packetOf(m service.Message) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic, Payload: m.Payload, Created: time.Now().Unix(),
		Properties: packets.Properties{ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData,
			ContentType: m.ContentType, MessageExpiryInterval: m.MessageExpiry},
	}
	for _, u := range m.UserProperties {
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: u.Key, Val: u.Value})
	}
	return pk
}

// host is the Host one service gets.
type host struct {
	b    *Broker
	name string
	log  *zap.Logger
	reg  prometheus.Registerer
}

func (h *host) Log() *zap.Logger               { return h.log }
func (h *host) Metrics() prometheus.Registerer { return h.reg }

func (h *host) Handle(filter string, handler service.Handler) error {
	if !mqtt.IsValidFilter(filter, false) {
		return fmt.Errorf("service %s: %q is not a valid topic filter", h.name, filter)
	}
	s := &h.b.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	var next []route
	if cur := s.routes.Load(); cur != nil {
		next = append(next, cur.routes...)
	}
	next = append(next, route{filter: filter, handler: handler, service: h.name})
	s.routes.Store(newRouteTable(next))
	return nil
}

// Publish hands the message to the other services' handlers, then publishes it through mochi's inline
// client: every subscriber gets it whose iot:Receive allows it.
func (h *host) Publish(m service.Message) error {
	m.Origin, m.From = h.name, nil
	if rs := h.b.svc.routes.Load(); rs != nil {
		rs.matching(m.Topic, func(r *route) bool {
			if err := r.handler(context.Background(), &m); err != nil && !errors.Is(err, service.Consumed) {
				h.log.Warn("a service refused a service's message", zap.String("service", r.service), zap.String("topicName", m.Topic), zap.Error(err))
			}
			return true
		})
	}
	pk := packetOf(m)
	if pk.FixedHeader.Qos > 0 {
		pk.PacketID = 1 // mochi validates a QoS 1 PUBLISH's ID even from its inline client, which it never acknowledges
	}
	return h.b.server.InjectPacket(h.b.server.InlineClient(), pk)
}

// HasSubscribers reports whether a message on topic could reach anyone besides this service: another
// service's handler, or a subscription (a client's, connected or a stored session's, a shared one or
// an inline one). The shadow service consumes a request, and leaves out an answer, that would reach
// nobody (shadow.Service.handle, publishUpdate).
func (h *host) HasSubscribers(topic string) bool {
	if rs := h.b.svc.routes.Load(); rs != nil {
		other := false
		rs.matching(topic, func(r *route) bool {
			other = r.service != h.name
			return !other
		})
		if other {
			return true
		}
	}
	return h.b.server.Topics.HasSubscribers(topic)
}

// SendTo delivers to one client's session, connected or (persistent session) not.
func (h *host) SendTo(to *service.Client, m service.Message, opts service.SendOptions) error {
	if to == nil || to.ClientID == "" {
		return service.ErrNotConnected
	}
	cl, ok := h.b.server.Clients.Get(to.ClientID)
	if !ok || cl.Net.Inline {
		return service.ErrNotConnected
	}
	if e, ok := h.b.hook.sessions.Load(cl.ID); !ok || e.(*sessionEntry).session.Identity.CertificateID != to.CertificateID {
		return service.ErrNotConnected // the client ID now belongs to another session
	}
	sub := packets.Subscription{Filter: m.Topic, Qos: m.QoS}
	if opts.RequireSubscription {
		best, found := packets.Subscription{}, false
		for _, s := range cl.State.Subscriptions.GetAll() {
			if service.TopicMatches(s.Filter, m.Topic) && (!found || s.Qos > best.Qos) {
				best, found = s, true
			}
		}
		if !found {
			return nil // nobody listens: AWS drops the answer too
		}
		sub = best
	}
	m.Origin = h.name
	pk := packetOf(m)
	if _, err := h.b.server.PublishToClient(cl, sub, pk); err != nil && !errors.Is(err, packets.CodeDisconnect) {
		return fmt.Errorf("send to %s: %w", to.ClientID, err)
	}
	return nil
}

func (h *host) Authorize(c *service.Client, action, resource string) authz.Verdict {
	if c == nil {
		return authz.Allow
	}
	s, ok := c.Session().(*authz.Session)
	if !ok {
		return authz.Verdict{Action: action, Resource: resource, Decision: policy.ImplicitDeny, Reason: "the request has no authenticated identity"}
	}
	return h.b.hook.authz.Decide(s, action, resource)
}

func (h *host) Store(bucket string) (service.Store, error) {
	s := &h.b.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.stores[bucket]; ok {
		return st, nil
	}
	st, err := newBucketStore(s.db, s.commit, bucket)
	if err != nil {
		return nil, err
	}
	s.stores[bucket] = st
	return st, nil
}

func (h *host) HandleAPI(signingName, pattern string, handler http.Handler) error {
	if err := h.b.handleAPI(signingName, pattern, handler); err != nil {
		return fmt.Errorf("service %s: %w", h.name, err)
	}
	return nil
}

func (h *host) OnUnknownCertificate(fn func(chain []*x509.Certificate)) {
	s := &h.b.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unknownCerts = append(s.unknownCerts, fn)
}

// unknownCertificate hands the chain of a connection refused because its certificate is unknown, or
// known but not ACTIVE, to the services that registered for it (Host.OnUnknownCertificate: AWS IoT's
// just-in-time registration and provisioning in the iotapi service).
func (b *Broker) unknownCertificate(cl *mqtt.Client, r *auth.Refusal) {
	switch r.Reason {
	case auth.ReasonUntrustedCertificate, auth.ReasonNotRegistered, auth.ReasonInactive:
	default:
		return
	}
	b.svc.mu.Lock()
	fns := b.svc.unknownCerts
	b.svc.mu.Unlock()
	if len(fns) == 0 {
		return
	}
	tc, ok := cl.Net.Conn.(tlsState)
	if !ok {
		return
	}
	chain := tc.ConnectionState().PeerCertificates
	if len(chain) == 0 {
		return
	}
	for _, fn := range fns {
		fn(chain)
	}
}

func (h *host) HandleDevice(pattern string, handler http.Handler) (err error) {
	s := &h.b.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("service %s: device route %q: %v", h.name, pattern, r)
		}
	}()
	s.device.Handle(pattern, handler)
	return nil
}

// APIHandler is the handler registered for a signing name, nil when no service serves it (for the API
// listener).
func (b *Broker) APIHandler(signingName string) http.Handler {
	if mux := b.api.router.Mux(signingName); mux != nil {
		return mux
	}
	return nil
}

// serveDevice serves a device's HTTPS request to the services, with its identity: the certificate's
// attached thing (the first, if several) and an authorization context built as at CONNECT.
func (b *Broker) serveDevice(w http.ResponseWriter, r *http.Request, cert *auth.Certificate) {
	id := &auth.Identity{CertificateID: cert.ID, Record: cert}
	if len(r.TLS.PeerCertificates) > 0 {
		id.Certificate = r.TLS.PeerCertificates[0]
	}
	if len(cert.Things) > 0 {
		id.ClientID = cert.Things[0]
		if t, ok, _ := b.state.Registry.Thing(cert.Things[0]); ok {
			id.Thing = t
		}
	}
	ip, port := splitRemoteAddr(r.RemoteAddr)
	s := &authz.Session{Identity: id, SourceIP: ip, SourcePort: port, CleanStart: true}
	b.hook.authz.Connect(s) // builds the session's policy context; the verdict is the request's to decide
	c := sessionClient("", s)
	b.svc.device.ServeHTTP(w, r.WithContext(service.WithDevice(r.Context(), c)))
}

func splitRemoteAddr(addr string) (netip.Addr, int) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}, 0
	}
	return ap.Addr().Unmap(), int(ap.Port())
}

func (h *host) Clients() []*service.Client {
	var out []*service.Client
	h.b.hook.conns.Range(func(k, v any) bool {
		cl := k.(*mqtt.Client)
		if !cl.Closed() {
			out = append(out, sessionClient(cl.ID, v.(*authz.Session)))
		}
		return true
	})
	return out
}

func (h *host) Disconnect(c *service.Client, reason string) error {
	var target *mqtt.Client
	h.b.hook.conns.Range(func(k, v any) bool {
		if v == c.Session() {
			target = k.(*mqtt.Client)
			return false
		}
		return true
	})
	if target == nil {
		return service.ErrNotConnected
	}
	return h.b.disconnectForCredentials(target, reason)
}

// disconnectForCredentials closes a connection whose credentials no longer hold (a certificate
// revoked, deactivated or deleted): MQTT 5 gets DISCONNECT 0x87, MQTT 3.1.1 is closed. Its Disconnect
// record says AUTH_ERROR with details.
func (b *Broker) disconnectForCredentials(cl *mqtt.Client, details string) error {
	b.hook.kicked.Store(cl, details)
	if cl.Properties.ProtocolVersion == 5 {
		return b.server.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	cl.Stop(packets.ErrNotAuthorized)
	return nil
}
