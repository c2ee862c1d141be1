package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what one scenario measured. Fields that do not apply to a scenario's kind stay zero and
// are left out of the JSON.
type Result struct {
	Scenario  string `json:"scenario"`
	Kind      string `json:"kind"` // pubsub, connect, handshake, idle
	Transport string `json:"transport"`

	// pubsub
	Shape              string   `json:"shape,omitempty"`
	Publishers         int      `json:"publishers,omitempty"`
	Subscribers        int      `json:"subscribers,omitempty"`
	QoS                int      `json:"qos"`
	PayloadBytes       int      `json:"payloadBytes,omitempty"`
	TopicsPerPublisher int      `json:"topicsPerPublisher,omitempty"`
	Sent               int64    `json:"sent,omitempty"`
	Expected           int64    `json:"expected,omitempty"`
	Received           int64    `json:"received,omitempty"`
	SentPerSec         float64  `json:"sentPerSec,omitempty"`
	RecvPerSec         float64  `json:"recvPerSec,omitempty"`
	LossPct            float64  `json:"lossPct"`
	Latency            *Latency `json:"latencyMs,omitempty"`

	// connect, handshake, idle
	Attempts    int     `json:"attempts,omitempty"`
	Succeeded   int     `json:"succeeded,omitempty"`
	Failed      int     `json:"failed,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	PerSec      float64 `json:"perSec,omitempty"`

	// broker memory (with --pid): before the scenario, at its peak load, and per idle connection
	RSSBeforeKiB  int64    `json:"rssBeforeKiB,omitempty"`
	RSSKiB        int64    `json:"rssKiB,omitempty"`
	BytesPerConn  float64  `json:"bytesPerConn,omitempty"`
	ElapsedSec    float64  `json:"elapsedSec"`
	TimedOut      bool     `json:"timedOut,omitempty"`
	Errors        int      `json:"errors,omitempty"`
	ErrorExamples []string `json:"errorExamples,omitempty"`
}

// Latency summarises end-to-end latencies (publish call to delivery, from the payload's timestamp).
type Latency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50"`
	P95     float64 `json:"p95"`
	P99     float64 `json:"p99"`
	Max     float64 `json:"max"`
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the nearest-rank method: the
// smallest value such that at least p% of the samples are less than or equal to it. Empty input
// gives 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summarize sorts samples in place and returns their percentiles in milliseconds, nil for none.
func Summarize(samples []time.Duration) *Latency {
	if len(samples) == 0 {
		return nil
	}
	slices.Sort(samples)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	return &Latency{
		Samples: len(samples),
		P50:     ms(Percentile(samples, 50)),
		P95:     ms(Percentile(samples, 95)),
		P99:     ms(Percentile(samples, 99)),
		Max:     ms(samples[len(samples)-1]),
	}
}

// LossPct is the share of expected deliveries that did not arrive, never negative (duplicates of
// QoS 1 can make received exceed expected).
func LossPct(expected, received int64) float64 {
	if expected <= 0 || received >= expected {
		return 0
	}
	return round2(100 * float64(expected-received) / float64(expected))
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// errorLog keeps a count of errors and the first few messages.
type errorLog struct {
	n        int
	examples []string
}

func (e *errorLog) add(err error) {
	e.n++
	if len(e.examples) < 5 {
		e.examples = append(e.examples, err.Error())
	}
}

func (e *errorLog) fill(r *Result) {
	r.Errors, r.ErrorExamples = e.n, e.examples
}

// Report is the whole output of a ggbench run: the machine, a label for the broker and the results.
type Report struct {
	Label   string   `json:"label,omitempty"`
	Target  string   `json:"target"`
	Machine Machine  `json:"machine"`
	Started string   `json:"started"`
	Results []Result `json:"results"`
}

// Machine identifies where the figures were measured.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
}

func thisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table a person reads.
func (r *Report) WriteTable(w io.Writer) {
	if r.Label != "" {
		fmt.Fprintf(w, "%s (%s)\n", r.Label, r.Target)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\ttransport\tclients\tsent/s\trecv/s\tloss %\tp50 ms\tp95 ms\tp99 ms\tconn/s\tRSS MiB\tB/conn\terrors\t")
	for _, x := range r.Results {
		clients := ""
		switch x.Kind {
		case "pubsub":
			clients = fmt.Sprintf("%d->%d q%d", x.Publishers, x.Subscribers, x.QoS)
		default:
			clients = fmt.Sprintf("%d/%d", x.Succeeded, x.Attempts)
		}
		lat := [3]string{"", "", ""}
		if x.Latency != nil {
			lat = [3]string{f2(x.Latency.P50), f2(x.Latency.P95), f2(x.Latency.P99)}
		}
		loss := ""
		if x.Kind == "pubsub" {
			loss = f2(x.LossPct)
		}
		errs := fmt.Sprint(x.Errors)
		if x.TimedOut {
			errs += " (timed out)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Scenario, x.Transport, clients,
			f0(x.SentPerSec), f0(x.RecvPerSec), loss, lat[0], lat[1], lat[2], f0(x.PerSec),
			mib(x.RSSKiB), f0(x.BytesPerConn), errs)
	}
	tw.Flush()
	for _, x := range r.Results {
		for _, e := range x.ErrorExamples {
			fmt.Fprintf(w, "  %s: %s\n", x.Scenario, e)
		}
	}
}

func f0(v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f", v)
}

func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

func mib(kib int64) string {
	if kib == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

// Metric is one comparable figure of a result.
type Metric struct {
	Name         string
	Value        float64
	HigherBetter bool
}

// Headlines are the figures of a result that comparisons are made on.
func (r *Result) Headlines() []Metric {
	switch r.Kind {
	case "pubsub":
		m := []Metric{{"recv msgs/s", r.RecvPerSec, true}, {"sent msgs/s", r.SentPerSec, true}, {"delivered %", 100 - r.LossPct, true}}
		if r.Latency != nil {
			m = append(m, Metric{"p50 ms", r.Latency.P50, false}, Metric{"p99 ms", r.Latency.P99, false})
		}
		return m
	case "connect":
		return []Metric{{"connects/s", r.PerSec, true}}
	case "handshake":
		return []Metric{{"TLS handshakes/s", r.PerSec, true}}
	case "idle":
		return []Metric{{"RSS MiB", float64(r.RSSKiB) / 1024, false}, {"bytes/conn", r.BytesPerConn, false}}
	}
	return nil
}

// Compare writes, for each scenario and headline metric of a, a's value, b's value and a/b.
func Compare(w io.Writer, a, b *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tmetric\t%s\t%s\t%s / %s\t\n", a.Label, b.Label, a.Label, b.Label)
	for i := range a.Results {
		ra := &a.Results[i]
		rb := b.find(ra.Scenario)
		if rb == nil {
			continue
		}
		mb := rb.Headlines()
		for j, m := range ra.Headlines() {
			ratio := "n/a"
			if mb[j].Value > 0 && m.Value > 0 {
				ratio = fmt.Sprintf("%.2f", m.Value/mb[j].Value)
				if !m.HigherBetter {
					ratio += " (lower is better)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", ra.Scenario, m.Name, num(m.Value), num(mb[j].Value), ratio)
		}
	}
	tw.Flush()
}

// Derived writes the ratios inside one report that the goals name: MQTT connects/s over bare TLS
// handshakes/s on the same listener.
func Derived(w io.Writer, r *Report) {
	c, h := r.find("connect-burst"), r.find("tls-handshake")
	if c != nil && h != nil && h.PerSec > 0 {
		fmt.Fprintf(w, "%s: mTLS MQTT connects/s / bare TLS handshakes/s = %.0f / %.0f = %.2f\n", r.Label, c.PerSec, h.PerSec, c.PerSec/h.PerSec)
	}
}

func (r *Report) find(scenario string) *Result {
	for i := range r.Results {
		if r.Results[i].Scenario == scenario {
			return &r.Results[i]
		}
	}
	return nil
}

func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
