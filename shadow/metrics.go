package shadow

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts shadow requests by operation, protocol and result, and times them.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ggbroker_shadow_requests_total",
			Help: "Device Shadow requests, by operation (get, update, delete, list, publish), protocol (MQTT, HTTP), result (accepted, rejected) and code (200, 400, 404, 409, 413, 429, 500 ...).",
		}, []string{"operation", "protocol", "result", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ggbroker_shadow_request_duration_seconds",
			Help:    "Time from a Device Shadow request's arrival to its answer, by operation and protocol.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"operation", "protocol"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("shadow metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(op Operation, protocol string, code int, d time.Duration) {
	result := "accepted"
	if code >= 300 {
		result = "rejected"
	}
	m.requests.WithLabelValues(string(op), protocol, result, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(string(op), protocol).Observe(d.Seconds())
}
