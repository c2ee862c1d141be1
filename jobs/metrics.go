package jobs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's collectors: executions and jobs by status, read from the engine at each
// scrape, and device requests by API, protocol and result.
type metrics struct {
	engine   *Engine
	requests *prometheus.CounterVec
}

var (
	descExecutions = prometheus.NewDesc("ggbroker_jobs_executions", "Job executions (the current one per job and thing), by status.", []string{"status"}, nil)
	descJobs       = prometheus.NewDesc("ggbroker_jobs_jobs", "Jobs, by status.", []string{"status"}, nil)
)

func newMetrics(e *Engine) *metrics {
	return &metrics{engine: e, requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ggbroker_jobs_requests_total",
		Help: "Jobs device API requests, by API (eventType), protocol (MQTT, HTTP) and result (Success or the error code).",
	}, []string{"api", "protocol", "result"})}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descExecutions
	ch <- descJobs
	m.requests.Describe(ch)
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	execs, jobs := m.engine.Counts()
	for _, s := range AllExecutionStatuses {
		ch <- prometheus.MustNewConstMetric(descExecutions, prometheus.GaugeValue, float64(execs[s]), string(s))
	}
	for _, s := range []JobStatus{JobInProgress, JobCompleted, JobCanceled} {
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(jobs[s]), string(s))
	}
	m.requests.Collect(ch)
}
