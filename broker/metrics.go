package broker

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/ggbroker/ggbroker/authz"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the broker's Prometheus view. Counters the hooks report through Events are atomics in
// maps that only grow (a handful of reasons and actions), so the hot path takes no lock; what mochi
// already counts (clients, messages, bytes, queue drops) is read from its server.Info at scrape time.
type metrics struct {
	b   *Broker
	reg *prometheus.Registry

	connects  atomic.Int64
	rotations atomic.Int64
	refusals  counterSet // reason
	disconns  counterSet // AWS disconnectReason
	// decisions counts the actions the hooks decide for every message in fixed counters (a map key
	// built per message would allocate on the hot path); other actions go to otherDecisions.
	decisions      [len(hotActions)][2]atomic.Int64 // [action][denied=0, allowed=1]
	otherDecisions counterSet                       // action + "\x00" + result
	dropped        counterSet                       // reason
	handshakes     counterSet                       // failed TLS handshakes, by kind (listener.go)
}

// counterSet is a set of named counters, safe for concurrent use without locks once a name exists.
type counterSet struct{ m sync.Map }

func (c *counterSet) inc(name string) {
	v, ok := c.m.Load(name)
	if !ok {
		v, _ = c.m.LoadOrStore(name, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

func (c *counterSet) each(f func(name string, n int64)) {
	c.m.Range(func(k, v any) bool { f(k.(string), v.(*atomic.Int64).Load()); return true })
}

var _ Events = (*metrics)(nil)

func (m *metrics) Connected()              { m.connects.Add(1) }
func (m *metrics) Refused(reason string)   { m.refusals.inc(reason) }
func (m *metrics) Disconnected(why string) { m.disconns.inc(why) }
func (m *metrics) Dropped(reason string)   { m.dropped.inc(reason) }

// hotActions are the actions decided per message or per request.
var hotActions = [...]string{"iot:Publish", "iot:Receive", "iot:Subscribe", "iot:Connect"}

func (m *metrics) Decision(action string, allowed bool) {
	result := 0
	if allowed {
		result = 1
	}
	for i, a := range hotActions {
		if a == action {
			m.decisions[i][result].Add(1)
			return
		}
	}
	m.otherDecisions.inc(action + "\x00" + [...]string{"denied", "allowed"}[result])
}

// handshakeFailed counts a failed TLS handshake on the MQTT listener by kind (probe, timeout ...).
func (m *metrics) handshakeFailed(kind string) { m.handshakes.inc(kind) }

// rotated counts a server certificate rotation (onRotate).
func (m *metrics) rotated() { m.rotations.Add(1) }

func newMetrics(b *Broker) *metrics {
	m := &metrics{b: b, reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

const ns = "ggbroker_"

var (
	descConnected   = prometheus.NewDesc(ns+"connected_clients", "MQTT clients connected now.", nil, nil)
	descSessions    = prometheus.NewDesc(ns+"sessions", "MQTT sessions held, connected or not (persistent sessions of offline clients included).", nil, nil)
	descConnects    = prometheus.NewDesc(ns+"connects_total", "CONNECTs accepted.", nil, nil)
	descRefusals    = prometheus.NewDesc(ns+"connect_refusals_total", "CONNECTs refused, by reason (CERTIFICATE_REVOKED, AUTHORIZATION_FAILURE ...).", []string{"reason"}, nil)
	descDisconnects = prometheus.NewDesc(ns+"disconnects_total", "Connections ended, by AWS IoT disconnectReason.", []string{"reason"}, nil)
	descMsgIn       = prometheus.NewDesc(ns+"messages_received_total", "PUBLISH packets received from clients.", nil, nil)
	descMsgOut      = prometheus.NewDesc(ns+"messages_sent_total", "PUBLISH packets sent to clients.", nil, nil)
	descBytesIn     = prometheus.NewDesc(ns+"received_bytes_total", "Bytes received from MQTT clients.", nil, nil)
	descBytesOut    = prometheus.NewDesc(ns+"sent_bytes_total", "Bytes sent to MQTT clients.", nil, nil)
	descDecisions   = prometheus.NewDesc(ns+"policy_decisions_total", "Authorization decisions, by action (iot:Publish ...) and result (allowed, denied).", []string{"action", "result"}, nil)
	descDropped     = prometheus.NewDesc(ns+"messages_dropped_total", "Messages not accepted or not delivered, by reason: not-authorized; slow-subscriber (the client's pending writes were full: limits.maxPendingWrites); inflight-full (the session's stored QoS 1/2 messages were full: limits.maxInflight); and the behaviour profile's reasons.", []string{"reason"}, nil)
	descInflight    = prometheus.NewDesc(ns+"inflight_messages", "QoS 1/2 messages stored and not yet acknowledged, all sessions.", nil, nil)
	descRetained    = prometheus.NewDesc(ns+"retained_messages", "Retained messages held, not counting the broker's own $SYS topics.", nil, nil)
	descCertExpiry  = prometheus.NewDesc(ns+"server_certificate_expiry_timestamp_seconds", "When the MQTT server certificate in use expires (Unix time).", nil, nil)
	descCAExpiry    = prometheus.NewDesc(ns+"core_ca_expiry_timestamp_seconds", "When the core device CA expires (Unix time).", nil, nil)
	descRotations   = prometheus.NewDesc(ns+"server_certificate_rotations_total", "Server certificates issued since start, the first one excluded.", nil, nil)
	descPolicyVer   = prometheus.NewDesc(ns+"policy_version", "Version of the policies in force: 0 at start, +1 for each reload that was applied.", nil, nil)
	descPolicyFail  = prometheus.NewDesc(ns+"policy_reload_failures_total", "Policy reloads refused (a broken policy file, registry or deviceGroups edit): the last good policies stay in force.", nil, nil)
	descHandshakes  = prometheus.NewDesc(ns+"tls_handshake_failures_total", "Failed TLS handshakes on the MQTT listener, by kind: probe (closed before the handshake: health checks, port scans), server-certificate-not-trusted, no-client-certificate, client-certificate-refused, timeout, other.", []string{"kind"}, nil)
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descSessions, descConnects, descRefusals, descDisconnects, descMsgIn, descMsgOut,
		descBytesIn, descBytesOut, descDecisions, descDropped, descInflight, descRetained, descCertExpiry, descCAExpiry, descRotations,
		descPolicyVer, descPolicyFail, descHandshakes} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	counter(descConnects, float64(m.connects.Load()))
	counter(descRotations, float64(m.rotations.Load()))
	m.refusals.each(func(r string, n int64) { counter(descRefusals, float64(n), r) })
	m.disconns.each(func(r string, n int64) { counter(descDisconnects, float64(n), r) })
	m.handshakes.each(func(k string, n int64) { counter(descHandshakes, float64(n), k) })
	for i, a := range hotActions {
		for result, name := range [...]string{"denied", "allowed"} {
			if n := m.decisions[i][result].Load(); n > 0 {
				counter(descDecisions, float64(n), a, name)
			}
		}
	}
	m.otherDecisions.each(func(k string, n int64) {
		for i := range len(k) {
			if k[i] == 0 {
				counter(descDecisions, float64(n), k[:i], k[i+1:])
				return
			}
		}
	})
	var slow, inflightFull int64
	if s := m.b.server; s != nil {
		info := s.Info
		gauge(descConnected, float64(atomic.LoadInt64(&info.ClientsConnected)))
		gauge(descSessions, float64(s.Clients.Len()))
		counter(descMsgIn, float64(atomic.LoadInt64(&info.MessagesReceived)))
		counter(descMsgOut, float64(atomic.LoadInt64(&info.MessagesSent)))
		counter(descBytesIn, float64(atomic.LoadInt64(&info.BytesReceived)))
		counter(descBytesOut, float64(atomic.LoadInt64(&info.BytesSent)))
		gauge(descInflight, float64(atomic.LoadInt64(&info.Inflight)))
		// mochi's count includes the $SYS topics it publishes retained (about twenty); the metric
		// counts what clients retained.
		gauge(descRetained, float64(s.Topics.Retained.Len()-len(s.Topics.Messages("$SYS/#"))))
		slow, inflightFull = atomic.LoadInt64(&info.MessagesDropped), atomic.LoadInt64(&info.InflightDropped)
	}
	counter(descDropped, float64(slow), "slow-subscriber")
	counter(descDropped, float64(inflightFull), "inflight-full")
	m.dropped.each(func(r string, n int64) {
		if r != "slow-subscriber" && r != "inflight-full" {
			counter(descDropped, float64(n), r)
		}
	})
	if c := m.b.rotator.Current(); c != nil {
		gauge(descCertExpiry, float64(c.NotAfter.Unix()))
	}
	gauge(descCAExpiry, float64(m.b.state.CoreCA.Cert.NotAfter.Unix()))
	if pa, ok := m.b.authz.(*authz.PolicyAuthorizer); ok {
		version, failures := pa.Reloads()
		gauge(descPolicyVer, float64(version))
		counter(descPolicyFail, float64(failures))
	}
}
