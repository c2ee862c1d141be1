package iotapi

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics count what the service did, by operation and result, on the admin listener's /metrics.
type metrics struct {
	operations *prometheus.CounterVec // API operations
	fleet      *prometheus.CounterVec // fleet provisioning requests over MQTT
	justInTime *prometheus.CounterVec // JITR/JITP outcomes
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ggbroker_iotapi_operations_total",
			Help: "AWS IoT and Greengrass API operations served, by operation and result (success or the AWS error type)."}, []string{"operation", "result"}),
		fleet: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ggbroker_fleet_provisioning_requests_total",
			Help: "Fleet provisioning requests over MQTT, by request (create, create-from-csr, provision) and result (accepted or the errorCode)."}, []string{"request", "result"}),
		justInTime: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ggbroker_just_in_time_total",
			Help: "Just-in-time registrations and provisionings, by result (registered, provisioned, failed)."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.operations, m.fleet, m.justInTime} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register iotapi metrics: %w", err)
		}
	}
	return m, nil
}
