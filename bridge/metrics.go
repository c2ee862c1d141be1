package bridge

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of the bridge's metrics.
const (
	dirToUpstream   = "to-upstream"   // LocalMqtt -> IotCore, counted when the upstream acknowledged
	dirFromUpstream = "from-upstream" // IotCore -> LocalMqtt, counted per mapping delivered
	dirLocal        = "local"         // LocalMqtt -> LocalMqtt

	dropSpoolFull = "spool-full"          // oldest dropped to make room (bridge.spool limits)
	dropExpired   = "expired"             // MQTT 5 message expiry passed while spooled
	dropRefused   = "refused-by-upstream" // PUBACK with a failure reason code
	dropTooLarge  = "too-large"           // larger than bridge.spool.maxBytes; refused to the device
)

// metrics are the bridge's collectors on the broker's /metrics.
type metrics struct {
	connected prometheus.Gauge
	forwarded *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	failures  *prometheus.CounterVec

	// The same counts for the status file.
	toUpstream, fromUpstream, local, drops atomic.Int64
}

// forward counts n messages forwarded in direction dir.
func (m *metrics) forward(dir string, n int) {
	m.forwarded.WithLabelValues(dir).Add(float64(n))
	switch dir {
	case dirToUpstream:
		m.toUpstream.Add(int64(n))
	case dirFromUpstream:
		m.fromUpstream.Add(int64(n))
	case dirLocal:
		m.local.Add(int64(n))
	}
}

// drop counts n messages dropped for reason.
func (m *metrics) drop(reason string, n int) {
	m.dropped.WithLabelValues(reason).Add(float64(n))
	m.drops.Add(int64(n))
}

func newMetrics(reg prometheus.Registerer, b *Bridge) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ggbroker_bridge_upstream_connected",
			Help: "1 while the bridge has a session with the upstream (core.iotDataEndpoint), else 0.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ggbroker_bridge_messages_forwarded_total",
			Help: "Messages the bridge forwarded, by direction: to-upstream (acknowledged by the upstream), from-upstream, local.",
		}, []string{"direction"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ggbroker_bridge_messages_dropped_total",
			Help: "Messages on their way upstream that the bridge dropped, by reason.",
		}, []string{"reason"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ggbroker_bridge_connect_failures_total",
			Help: "Failed connection attempts to the upstream, by reason.",
		}, []string{"reason"}),
	}
	for _, d := range []string{dirToUpstream, dirFromUpstream, dirLocal} {
		m.forwarded.WithLabelValues(d)
	}
	for _, r := range []string{dropSpoolFull, dropExpired, dropRefused, dropTooLarge} {
		m.dropped.WithLabelValues(r)
	}
	spoolStat := func(bytes bool) func() float64 {
		return func() float64 {
			sp := b.spool
			if sp == nil {
				return 0
			}
			n, size := sp.stats()
			if bytes {
				return float64(size)
			}
			return float64(n)
		}
	}
	cs := []prometheus.Collector{
		m.connected, m.forwarded, m.dropped, m.failures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ggbroker_bridge_spool_messages",
			Help: "Messages in the bridge's on-disk spool, waiting for the upstream's acknowledgement.",
		}, spoolStat(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ggbroker_bridge_spool_bytes",
			Help: "Bytes of the messages in the bridge's spool (counted against bridge.spool.maxBytes).",
		}, spoolStat(true)),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
