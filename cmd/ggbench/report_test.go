package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"median of even is the lower middle", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p100 is the max", ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{"p0 clamps to the min", ms(1, 2, 3, 4), 0, 1 * time.Millisecond},
		{"p95 of 1..100", hundred, 95, 95 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 rounds up", hundred, 99.9, 100 * time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(c.sorted, c.p); got != c.want {
			t.Errorf("%s: Percentile(p%v) = %v, want %v", c.name, c.p, got, c.want)
		}
	}
}

func TestSummarizeSortsAndConvertsToMilliseconds(t *testing.T) {
	samples := []time.Duration{3 * time.Millisecond, 1500 * time.Microsecond, 10 * time.Millisecond, 2 * time.Millisecond}
	l := Summarize(samples)
	if l == nil || l.Samples != 4 || l.P50 != 2 || l.P95 != 10 || l.P99 != 10 || l.Max != 10 {
		t.Fatalf("Summarize = %+v", l)
	}
	if Summarize(nil) != nil {
		t.Fatal("Summarize(nil) should be nil")
	}
}

func TestLossPct(t *testing.T) {
	cases := []struct {
		expected, received int64
		want               float64
	}{
		{0, 0, 0}, {100, 100, 0}, {100, 90, 10}, {3, 1, 66.67}, {100, 105, 0},
	}
	for _, c := range cases {
		if got := LossPct(c.expected, c.received); got != c.want {
			t.Errorf("LossPct(%d, %d) = %v, want %v", c.expected, c.received, got, c.want)
		}
	}
}

func TestParseRSS(t *testing.T) {
	status := "Name:\tmosquitto\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n"
	if got := parseRSS(strings.NewReader(status)); got != 12345 {
		t.Fatalf("parseRSS = %d, want 12345", got)
	}
	if got := parseRSS(strings.NewReader("Name:\tx\n")); got != 0 {
		t.Fatalf("parseRSS without VmRSS = %d, want 0", got)
	}
}

func TestConnectPacket(t *testing.T) {
	got := connectPacket("thing-1", 600)
	want := []byte{0x10, 19, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0x02, 0x58, 0, 7, 't', 'h', 'i', 'n', 'g', '-', '1'}
	if !bytes.Equal(got, want) {
		t.Fatalf("connectPacket = % x, want % x", got, want)
	}
	// A client ID long enough for a two-byte remaining length.
	long := connectPacket(strings.Repeat("a", 200), 0)
	if long[1] != 0x80|(212%128) || long[2] != 212/128 {
		t.Fatalf("remaining length of 212 encoded as % x", long[1:3])
	}
}

func TestCompareAndTable(t *testing.T) {
	a := &Report{Label: "ggbroker", Results: []Result{
		{Scenario: "fanin-qos0", Kind: "pubsub", RecvPerSec: 1200, SentPerSec: 1200, Latency: &Latency{P50: 1, P99: 4}},
		{Scenario: "idle", Kind: "idle", RSSKiB: 2048, BytesPerConn: 100, Succeeded: 10, Attempts: 10},
		{Scenario: "connect-burst", Kind: "connect", PerSec: 900},
		{Scenario: "tls-handshake", Kind: "handshake", PerSec: 1000},
	}}
	b := &Report{Label: "mosquitto", Results: []Result{
		{Scenario: "fanin-qos0", Kind: "pubsub", RecvPerSec: 1000, SentPerSec: 1000, Latency: &Latency{P50: 2, P99: 4}},
		{Scenario: "idle", Kind: "idle", RSSKiB: 1024, BytesPerConn: 50, Succeeded: 10, Attempts: 10},
	}}
	var buf bytes.Buffer
	Compare(&buf, a, b)
	out := buf.String()
	for _, want := range []string{"recv msgs/s", "1.20", "0.50 (lower is better)", "2.00 (lower is better)"} {
		if !strings.Contains(out, want) {
			t.Errorf("Compare output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "connect-burst") {
		t.Errorf("Compare shows a scenario only one report has:\n%s", out)
	}
	buf.Reset()
	Derived(&buf, a)
	if !strings.Contains(buf.String(), "= 0.90") {
		t.Errorf("Derived = %q", buf.String())
	}
	buf.Reset()
	a.WriteTable(&buf)
	if !strings.Contains(buf.String(), "fanin-qos0") || !strings.Contains(buf.String(), "10/10") {
		t.Errorf("table:\n%s", buf.String())
	}
}

func TestParseCPUTicks(t *testing.T) {
	cases := []struct {
		stat string
		want int64
	}{
		{"4242 (ggbroker) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 9 0 1000 0 0", 187},
		{"7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0", 11},
		{"garbage", -1},
		{"1 (x) S 1 2", -1},
	}
	for _, c := range cases {
		if got := parseCPUTicks(c.stat); got != c.want {
			t.Errorf("parseCPUTicks(%q) = %d, want %d", c.stat, got, c.want)
		}
	}
}
