package advisor

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/service"
)

// HostedServices are ggbroker's own device services, for the cases that need one: the shadow and
// jobs cases run the real service (the same code `ggbroker serve` runs, on the same service
// database) on a service.Host whose only client is the device's connection to the test endpoint.
// The advisor does not import the services (a service package never imports another, and the
// advisor plays the broker for them): the process wiring (cmd/ggbroker) hands in their
// constructors.
type HostedServices struct {
	// Shadow and Jobs make a new service each (shadow.New and jobs.New with the process's
	// service.Deps); nil leaves their cases ERROR "service not available".
	Shadow, Jobs func() (service.Service, error)
	// OpenStore opens a bucket of the service database the services keep their state in; close is
	// called when the case ends, so that the database is held only while a case runs.
	OpenStore func(bucket string) (st service.Store, close func() error, err error)
	// Region and AccountID make the ARN of the job Job_Execution creates for the thing (the core.*
	// keys the jobs service resolves target ARNs with).
	Region, AccountID string
	// Log is the services' logger; nil discards.
	Log *zap.Logger
}

// Cases are the entries for Options.Services: Shadow_Publish_Reported_State and
// Shadow_Update_Reported_State when Shadow is set, Job_Execution when Jobs is.
func (h HostedServices) Cases() map[string]ServiceCase {
	out := map[string]ServiceCase{}
	if h.Shadow != nil {
		out["Shadow_Publish_Reported_State"] = h.hosted("shadow", h.Shadow, func(tc *TestContext) hostedCase { return newShadowPublishCase(tc) })
		out["Shadow_Update_Reported_State"] = h.hosted("shadow", h.Shadow, func(tc *TestContext) hostedCase { return newShadowUpdateCase(tc) })
	}
	if h.Jobs != nil {
		out["Job_Execution"] = h.hosted("jobs", h.Jobs, func(tc *TestContext) hostedCase { return newJobCase(tc, h.Region, h.AccountID) })
	}
	return out
}

// hostedCase is one service case's grading: the driver calls it for each event of the device's
// connection and of the service, and the first non-nil verdict ends the case.
type hostedCase interface {
	// onConnect: the device connected (again) and got its CONNACK.
	onConnect(d *driver) *verdict
	// onSubscribe: the device subscribed to these filters (already granted).
	onSubscribe(d *driver, filters []string) *verdict
	// onDevicePublish: the device published; the service has handled the message.
	onDevicePublish(d *driver, topic string, payload []byte) *verdict
	// onServiceMessage: the service published or answered (delivered or not).
	onServiceMessage(d *driver, m sentMessage) *verdict
	// onSettle: Options.Settle passed since the last CONNACK.
	onSettle(d *driver) *verdict
	// waitingFor says what the case was waiting for when EXECUTION_TIMEOUT passed.
	waitingFor() string
}

// hosted is the ServiceCase that runs a new service from newService for one case and grades the
// device with the case mk makes.
func (h HostedServices) hosted(name string, newService func() (service.Service, error), mk func(*TestContext) hostedCase) ServiceCase {
	return func(ctx context.Context, tc *TestContext) (Status, string) {
		c := mk(tc)
		log := h.Log
		if log == nil {
			log = zap.NewNop()
		}
		host := &deviceHost{name: name, log: log.Named(name), open: h.OpenStore, apis: map[string]*http.ServeMux{}, wake: make(chan struct{}, 1)}
		defer host.closeStores()
		// The service starts before the device is waited for, so that a service that cannot run
		// (its database held by a running broker) is an ERROR at once, device or not.
		svc, err := newService()
		if err != nil {
			return StatusError, fmt.Sprintf("the %s service could not be made: %v", name, err)
		}
		sctx, stop := context.WithCancel(ctx)
		if err := svc.Start(sctx, host); err != nil {
			stop()
			return StatusError, fmt.Sprintf("service not available: the %s service did not start: %v", name, err)
		}
		defer func() {
			stop()
			if err := svc.Stop(); err != nil {
				tc.Notef("the %s service stopped with: %v", name, err)
			}
		}()
		if len(host.routes) == 0 {
			return StatusError, fmt.Sprintf("service not available: the %s service is disabled (%s.enabled: false)", name, name)
		}
		sess, err := tc.Accept(ctx)
		if err != nil {
			v := tc.tc.timedOut("waiting for the device to connect")
			return v.status, v.reason
		}
		host.attach(sess)
		d := &driver{tc: tc, host: host, c: c}
		v := d.run(ctx, sess)
		if f, ok := c.(interface{ finish(*driver, verdict) }); ok {
			f.finish(d, v)
		}
		return v.status, v.reason
	}
}

// driver runs one hosted case: it answers the device as a broker does, hands the device's messages
// to the service's handlers (before the PUBACK, as the broker does) and tells the case what happened.
type driver struct {
	tc   *TestContext
	host *deviceHost
	c    hostedCase
}

// inject hands a message to the service's handlers as if a client with no identity (the advisor,
// like Device Advisor's own setup calls) had published it, and returns once they returned.
func (d *driver) inject(topic string, payload []byte) error {
	return d.host.dispatch(&service.Message{Topic: topic, Payload: payload, QoS: 1, Origin: "advisor"})
}

// api calls one of the service's AWS API routes in process (what Device Advisor does with the AWS
// API before a case, such as CreateJob), and returns the status and body.
func (d *driver) api(signingName, method, path, body string) (int, string) {
	return d.host.callAPI(signingName, method, path, body)
}

func (d *driver) run(ctx context.Context, sess *Session) verdict {
	settle := d.tc.tc.run.opts.Settle
	for {
		v, closed := d.serve(ctx, sess, settle)
		if v != nil {
			return *v
		}
		if !closed {
			return d.tc.tc.timedOut(d.c.waitingFor())
		}
		d.tc.Notef("the device closed its connection; waiting for it to connect again")
		d.host.attach(nil)
		var err error
		if sess, err = d.tc.Accept(ctx); err != nil {
			return d.tc.tc.timedOut(d.c.waitingFor())
		}
		d.host.attach(sess)
	}
}

// serve runs one connection until a verdict, the device closing it (closed), or ctx's end.
func (d *driver) serve(ctx context.Context, sess *Session, settle time.Duration) (_ *verdict, closed bool) {
	if v := d.c.onConnect(d); v != nil {
		return v, false
	}
	pkts := make(chan *packets.ControlPacket)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(pkts)
		for {
			cp, err := sess.Next(rctx)
			if err != nil {
				return
			}
			select {
			case pkts <- cp:
			case <-rctx.Done():
				return
			}
		}
	}()
	timer := time.NewTimer(settle)
	defer timer.Stop()
	for {
		if v := d.drain(); v != nil {
			return v, false
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-d.host.wake:
		case <-timer.C:
			if v := d.c.onSettle(d); v != nil {
				return v, false
			}
		case cp, ok := <-pkts:
			if !ok {
				return nil, ctx.Err() == nil
			}
			if v := d.packet(sess, cp); v != nil {
				return v, false
			}
		}
	}
}

// drain tells the case of the service's messages queued since the last call.
func (d *driver) drain() *verdict {
	for _, m := range d.host.takeSent() {
		if v := d.c.onServiceMessage(d, m); v != nil {
			return v
		}
	}
	return nil
}

// packet handles one packet of the device, as the broker would.
func (d *driver) packet(sess *Session, cp *packets.ControlPacket) *verdict {
	switch p := cp.Content.(type) {
	case *packets.Subscribe:
		var filters []string
		for _, o := range p.Subscriptions {
			filters = append(filters, o.Topic)
		}
		d.host.subscribe(filters, p.Subscriptions)
		if err := sess.Answer(cp); err != nil {
			return nil // the connection is gone; the reader sees it
		}
		if v := d.drain(); v != nil {
			return v
		}
		return d.c.onSubscribe(d, filters)
	case *packets.Unsubscribe:
		d.host.unsubscribe(p.Topics)
		_ = sess.Answer(cp)
	case *packets.Publish:
		// The broker hands a device's message to the services before it acknowledges it; a handler's
		// error refuses it (no PUBACK).
		if err := d.host.dispatch(&service.Message{Topic: p.Topic, Payload: p.Payload, QoS: min(p.QoS, 1), Retain: p.Retain, From: d.host.client()}); err != nil {
			d.tc.Notef("the %s service refused the device's message on %s: %v", d.host.name, p.Topic, err)
			return nil
		}
		_ = sess.Answer(cp)
		// The case hears of the message before of the service's answers to it (drained next), which
		// a service serving in its own goroutine may already have queued.
		return d.c.onDevicePublish(d, p.Topic, p.Payload)
	default:
		_ = sess.Answer(cp)
	}
	return nil
}

// sentMessage is a message the service published or sent to the device, and whether the device got
// it (a subscription matched, or the service sends regardless).
type sentMessage struct {
	service.Message
	delivered bool
}

// deviceHost is the service.Host of a hosted case: the device's connection stands for every client
// of the broker. What the service publishes goes to the device when one of its subscriptions
// matches; what it sends to the device goes as SendOptions say. The device's policies are not
// checked here, as no case of the endpoint checks them (Security_Device_Policies reads them).
type deviceHost struct {
	name string
	log  *zap.Logger
	open func(bucket string) (service.Store, func() error, error)

	mu      sync.Mutex // guards what follows; never held while a handler or the device's socket runs
	routes  []hostedRoute
	apis    map[string]*http.ServeMux
	sess    *Session
	cl      *service.Client
	subs    map[string]byte // the device's subscriptions: filter -> QoS
	sent    []sentMessage
	closers []func() error

	wmu  sync.Mutex // one writer at a time: the service answers from its own goroutines
	wake chan struct{}
}

type hostedRoute struct {
	filter string
	h      service.Handler
}

// attach makes sess the host's client (nil: the device is not connected).
func (h *deviceHost) attach(sess *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sess, h.cl, h.subs = sess, nil, map[string]byte{}
	if sess == nil {
		return
	}
	c := service.Client{ClientID: sess.ClientID(), ThingName: sess.ClientID(), ProtocolVersion: 3}
	if sess.s.codec.version == mqtt5 {
		c.ProtocolVersion = 5
	}
	if sess.s.conn != nil {
		if st := sess.s.conn.ConnectionState(); len(st.PeerCertificates) > 0 {
			c.CertificateID = certs.Fingerprint(st.PeerCertificates[0])
		}
		if ap, err := netip.ParseAddrPort(sess.s.conn.RemoteAddr().String()); err == nil {
			c.SourceIP, c.SourcePort = ap.Addr().Unmap(), int(ap.Port())
		}
	}
	h.cl = service.NewClient(c, sess)
}

func (h *deviceHost) client() *service.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cl
}

func (h *deviceHost) subscribe(filters []string, opts []packets.SubOptions) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, f := range filters {
		h.subs[f] = min(opts[i].QoS, 1)
	}
}

func (h *deviceHost) unsubscribe(filters []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range filters {
		delete(h.subs, f)
	}
}

// subscribed is the highest QoS of the device's subscriptions that match topic.
func (h *deviceHost) subscribed(topic string) (qos byte, ok bool) {
	for f, q := range h.subs {
		if service.TopicMatches(f, topic) && (!ok || q > qos) {
			qos, ok = q, true
		}
	}
	return qos, ok
}

// dispatch calls every handler whose filter matches, in registration order, as the broker does.
func (h *deviceHost) dispatch(m *service.Message) error {
	h.mu.Lock()
	routes := append([]hostedRoute(nil), h.routes...)
	h.mu.Unlock()
	for _, r := range routes {
		if !service.TopicMatches(r.filter, m.Topic) {
			continue
		}
		if err := r.h(context.Background(), m); err != nil && !errors.Is(err, service.Consumed) {
			return err
		}
	}
	return nil
}

// deliver sends m to the device at qos and queues it for the case.
func (h *deviceHost) deliver(m service.Message, deliver bool, qos byte) error {
	h.mu.Lock()
	sess := h.sess
	h.mu.Unlock()
	var err error
	if deliver && sess != nil {
		h.wmu.Lock()
		_, err = sess.Publish(m.Topic, min(m.QoS, qos), m.Payload)
		h.wmu.Unlock()
	}
	h.mu.Lock()
	h.sent = append(h.sent, sentMessage{Message: m, delivered: deliver && sess != nil && err == nil})
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	if err != nil {
		return fmt.Errorf("send to %s: %w", sess.ClientID(), err)
	}
	return nil
}

func (h *deviceHost) takeSent() []sentMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.sent
	h.sent = nil
	return out
}

func (h *deviceHost) callAPI(signingName, method, path, body string) (int, string) {
	h.mu.Lock()
	mux := h.apis[signingName]
	h.mu.Unlock()
	if mux == nil {
		return http.StatusNotFound, "the " + h.name + " service serves no " + signingName + " API"
	}
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func (h *deviceHost) closeStores() {
	h.mu.Lock()
	cs := h.closers
	h.closers = nil
	h.mu.Unlock()
	for _, c := range cs {
		if err := c(); err != nil {
			h.log.Warn("advisor: closing the service database", zap.Error(err))
		}
	}
}

// Handle implements service.Host.
func (h *deviceHost) Handle(filter string, handler service.Handler) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.routes = append(h.routes, hostedRoute{filter, handler})
	return nil
}

// Publish implements service.Host: the device gets m when one of its subscriptions matches.
func (h *deviceHost) Publish(m service.Message) error {
	m.Origin = h.name
	h.mu.Lock()
	qos, ok := h.subscribed(m.Topic)
	h.mu.Unlock()
	return h.deliver(m, ok, qos)
}

// SendTo implements service.Host.
func (h *deviceHost) SendTo(to *service.Client, m service.Message, opts service.SendOptions) error {
	h.mu.Lock()
	cl := h.cl
	qos, ok := h.subscribed(m.Topic)
	h.mu.Unlock()
	if to == nil || cl == nil || to.ClientID != cl.ClientID {
		return service.ErrNotConnected
	}
	m.Origin = h.name
	if !opts.RequireSubscription {
		qos, ok = 1, true
	}
	return h.deliver(m, ok, qos)
}

// Authorize implements service.Host: the account (nil) may do anything; the endpoint serves the
// device no HTTPS API, so nothing asks for the device.
func (h *deviceHost) Authorize(c *service.Client, action, resource string) authz.Verdict {
	if c == nil {
		return authz.Allow
	}
	return authz.Verdict{Action: action, Resource: resource, Decision: policy.ImplicitDeny, Reason: "the advisor's test endpoint serves no HTTPS API"}
}

// Store implements service.Host.
func (h *deviceHost) Store(bucket string) (service.Store, error) {
	if h.open == nil {
		return nil, errors.New("no service database (HostedServices.OpenStore is not set)")
	}
	st, closeFn, err := h.open(bucket)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.closers = append(h.closers, closeFn)
	h.mu.Unlock()
	return st, nil
}

// HandleAPI implements service.Host: the routes are called in process by the cases' setup.
func (h *deviceHost) HandleAPI(signingName, pattern string, handler http.Handler) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	mux := h.apis[signingName]
	if mux == nil {
		mux = http.NewServeMux()
		h.apis[signingName] = mux
	}
	mux.Handle(pattern, handler)
	return nil
}

// HandleDevice implements service.Host: the endpoint has no device HTTPS listener.
func (h *deviceHost) HandleDevice(string, http.Handler) error { return nil }

// OnUnknownCertificate: the test endpoint registers nothing just in time (the device under test is
// registered before the run).
func (h *deviceHost) OnUnknownCertificate(func(chain []*x509.Certificate)) {}

// Upstream: a test case has no upstream; a service that needs one (the shadow sync) is not run here.
func (h *deviceHost) Upstream() service.Upstream { return nil }

// Clients implements service.Host.
func (h *deviceHost) Clients() []*service.Client {
	if c := h.client(); c != nil {
		return []*service.Client{c}
	}
	return nil
}

// Disconnect implements service.Host.
func (h *deviceHost) Disconnect(c *service.Client, _ string) error {
	h.mu.Lock()
	sess, cl := h.sess, h.cl
	h.mu.Unlock()
	if c == nil || cl == nil || sess == nil || c.ClientID != cl.ClientID {
		return service.ErrNotConnected
	}
	sess.Close()
	return nil
}

// Metrics implements service.Host: a registry of the case's own, never served.
func (h *deviceHost) Metrics() prometheus.Registerer { return prometheus.NewRegistry() }

// Log implements service.Host.
func (h *deviceHost) Log() *zap.Logger { return h.log }

var _ service.Host = (*deviceHost)(nil)
