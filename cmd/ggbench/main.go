// Command ggbench is ggbroker's load tool: it drives an MQTT broker on loopback over mutual TLS (or
// plain TCP) with publishers and subscribers, bursts of connections and idle connections, and
// reports throughput, loss, latency, connects/s and the broker's memory, as a table and as JSON.
//
// It makes its device certificates in a ggbroker state directory (--state-dir) with the project's
// own CA code, or takes certificate files (--cert-dir, --ca) so it can drive any broker, such as
// Mosquitto with require_certificate and use_identity_as_username. Every scenario is bounded in time
// and closes its connections.
//
//	ggbench suite     the standard scenarios (bench/compare.sh runs it against each broker)
//	ggbench pubsub    one publish/subscribe scenario (fan-in, fan-out, pairs; QoS 0 or 1)
//	ggbench connect   a burst of new MQTT connections
//	ggbench handshake a burst of bare TLS handshakes (dial, handshake, close; no MQTT)
//	ggbench idle      K idle connections, and the broker's RSS per connection
//	ggbench compare   ratios between two JSON reports
//	ggbench provision create and register devices in a state directory
//	ggbench serve     run ggbroker in this process, with a CPU profile
//	ggbench freeport  print a free loopback TCP port
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "suite":
		err = cmdSuite(ctx, args)
	case "pubsub", "connect", "handshake", "idle":
		err = cmdScenario(ctx, cmd, args)
	case "compare":
		err = cmdCompare(args)
	case "provision":
		err = cmdProvision(args)
	case "serve":
		err = cmdServe(ctx, args)
	case "freeport":
		err = cmdFreePort()
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "ggbench: unknown command %q\n", cmd)
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ggbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: ggbench COMMAND [flags]

  suite      run the standard scenarios against one broker (--quick for a short run)
  pubsub     publishers and subscribers: --shape fanin|fanout|pairs --pubs N --subs M --qos 0|1 ...
  connect    a burst of --count new MQTT connections
  handshake  a burst of --count bare TLS handshakes against the same listener (no MQTT)
  idle       --count idle MQTT connections; the broker's RSS (--pid) and bytes per connection
  compare    A.json B.json: ratios A/B of the headline figures
  provision  --state-dir DIR --count N: create and register devices
  serve      --config FILE [--cpuprofile F]: run ggbroker in this process, with a CPU profile
  freeport   print a free TCP port on 127.0.0.1

Run 'ggbench COMMAND -h' for the flags of a command.
`)
}

// target is where the load goes and with which identities.
type target struct {
	addr        string
	plain       bool
	raw         bool
	stateDir    string
	certDir     string
	caFile      string
	serverName  string
	keyType     string
	policy      string
	prefix      string
	pid         int
	timeout     time.Duration
	maxDuration time.Duration
}

func (t *target) flags(fs *flag.FlagSet) {
	fs.StringVar(&t.addr, "addr", "127.0.0.1:8883", "broker address host:port (loopback)")
	fs.BoolVar(&t.plain, "plain", false, "plain TCP instead of mutual TLS (a baseline, where the broker offers it)")
	fs.BoolVar(&t.raw, "raw", false, "pub/sub clients that write raw MQTT 3.1.1 packets in batches instead of paho: cheap enough to find the broker's limit, not the load tool's")
	fs.StringVar(&t.stateDir, "state-dir", "", "ggbroker state directory: create and register the devices there, trust its core CA")
	fs.StringVar(&t.certDir, "cert-dir", "", "device directories (DIR/NAME/device.pem.crt, private.pem.key); default STATE/ggbench-devices")
	fs.StringVar(&t.caFile, "ca", "", "CA that verifies the server certificate (default: the state's core CA, or core-ca.pem of the first device)")
	fs.StringVar(&t.serverName, "server-name", "localhost", "name to verify in the server certificate")
	fs.StringVar(&t.keyType, "key-type", "ECDSA_P256", "key type of devices created in --state-dir: ECDSA_P256 or RSA_2048")
	fs.StringVar(&t.policy, "policy", "ggbench", "AWS IoT policy (comma-separated) attached to devices created in --state-dir")
	fs.StringVar(&t.prefix, "device-prefix", "ggbench-", "name prefix of devices created in --state-dir (thing names PREFIX00000, ...)")
	fs.IntVar(&t.pid, "pid", 0, "broker process ID, to report its RSS")
	fs.DurationVar(&t.timeout, "timeout", 10*time.Second, "timeout of each connect, subscribe and acknowledgement")
	fs.DurationVar(&t.maxDuration, "max-duration", 90*time.Second, "longest any one scenario may run")
}

func (t *target) check() error {
	host, _, err := net.SplitHostPort(t.addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", t.addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--addr %q: ggbench only loads loopback addresses", t.addr)
	}
	if t.timeout <= 0 || t.maxDuration <= 0 {
		return fmt.Errorf("--timeout and --max-duration must be positive")
	}
	return nil
}

func (t *target) transport() string {
	if t.plain {
		return "tcp"
	}
	return "mtls"
}

func (t *target) rss() int64 { return readRSS(t.pid) }

// output is how results are written.
type output struct {
	label    string
	jsonFile string
	jsonOnly bool
}

func (o *output) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.label, "label", "", "name of the broker in the report")
	fs.StringVar(&o.jsonFile, "json-file", "", "also write the JSON report to this file")
	fs.BoolVar(&o.jsonOnly, "json", false, "write the JSON report on stdout instead of the table")
}

func (o *output) write(rep *Report) error {
	if o.jsonFile != "" {
		f, err := os.Create(o.jsonFile)
		if err != nil {
			return err
		}
		if err := rep.WriteJSON(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if o.jsonOnly {
		return rep.WriteJSON(os.Stdout)
	}
	rep.WriteTable(os.Stdout)
	Derived(os.Stdout, rep)
	return nil
}

func newReport(label string, t *target) *Report {
	return &Report{Label: label, Target: t.transport() + "://" + t.addr, Machine: thisMachine(), Started: time.Now().UTC().Format(time.RFC3339)}
}

// cmdScenario runs one scenario with the flags it is given.
func cmdScenario(ctx context.Context, kind string, args []string) error {
	fs := flag.NewFlagSet(kind, flag.ExitOnError)
	var t target
	var out output
	t.flags(fs)
	out.flags(fs)
	ps := pubsubOptions{}
	co := connOptions{}
	var scenario string
	var qos int
	fs.StringVar(&scenario, "name", kind, "scenario name in the report")
	switch kind {
	case "pubsub":
		fs.StringVar(&ps.shape, "shape", shapeFanIn, "fanin (N publishers -> M subscribers of all), fanout (same, defaults 1 -> 20) or pairs (publisher i -> subscriber i)")
		fs.IntVar(&ps.publishers, "pubs", 0, "publishers (default: fanin 20, fanout 1, pairs 10)")
		fs.IntVar(&ps.subscribers, "subs", 0, "subscribers (default: fanin 1, fanout 20, pairs = pubs)")
		fs.IntVar(&qos, "qos", 0, "QoS of publishes and subscriptions: 0 or 1")
		fs.IntVar(&ps.size, "size", 64, "payload bytes (at least 24: the header with the timestamp)")
		fs.IntVar(&ps.topics, "topics", 1, "topics per publisher (bench/THING/t0..)")
		fs.DurationVar(&ps.duration, "duration", 10*time.Second, "how long to publish")
		fs.IntVar(&ps.count, "count", 0, "messages per publisher instead of a duration (bounded by --max-duration)")
		fs.Float64Var(&ps.rate, "rate", 0, "messages/s per publisher (0: as fast as the broker takes them)")
		fs.IntVar(&ps.inflight, "inflight", 64, "publishes in flight per publisher")
		fs.DurationVar(&ps.drain, "drain", 5*time.Second, "longest wait for deliveries after publishing stops")
		fs.IntVar(&ps.maxSamples, "samples", 200000, "latency samples kept per subscriber")
	default:
		fs.IntVar(&co.count, "count", 1000, "connections")
		fs.IntVar(&co.concurrency, "concurrency", 32, "connections in progress at once")
		fs.DurationVar(&co.settle, "settle", 3*time.Second, "idle: wait after the last connect before reading RSS")
	}
	_ = fs.Parse(args)
	if err := t.check(); err != nil {
		return err
	}
	rep := newReport(out.label, &t)
	var r Result
	switch kind {
	case "pubsub":
		ps.qos = byte(qos)
		if err := ps.defaults(); err != nil {
			return err
		}
		creds, err := t.loadCredentials(ps.publishers + ps.subscribers)
		if err != nil {
			return err
		}
		r = runPubSub(ctx, &t, creds, scenario, ps)
	default:
		creds, err := t.loadCredentials(co.count)
		if err != nil {
			return err
		}
		co.keepAlive = 600
		r = runConnections(ctx, &t, creds, kind, scenario, co)
	}
	rep.Results = append(rep.Results, r)
	return out.write(rep)
}

func (o *pubsubOptions) defaults() error {
	if o.qos > 1 {
		return fmt.Errorf("--qos %d: 0 or 1", o.qos)
	}
	switch o.shape {
	case shapeFanIn:
		o.publishers, o.subscribers = or(o.publishers, 20), or(o.subscribers, 1)
	case shapeFanOut:
		o.publishers, o.subscribers = or(o.publishers, 1), or(o.subscribers, 20)
	case shapePairs:
		o.publishers = or(o.publishers, 10)
		o.subscribers = or(o.subscribers, o.publishers)
	default:
		return fmt.Errorf("--shape %q: fanin, fanout or pairs", o.shape)
	}
	if o.duration <= 0 && o.count <= 0 {
		return fmt.Errorf("give a positive --duration or --count")
	}
	o.inflight = max(o.inflight, 1)
	o.maxSamples = max(o.maxSamples, 1000)
	return nil
}

func or(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// cmdSuite runs the standard scenarios against one broker, in an order that keeps the idle RSS
// figure clean: idle connections first, on a broker that has done nothing else.
func cmdSuite(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("suite", flag.ExitOnError)
	var t target
	var out output
	t.flags(fs)
	out.flags(fs)
	quick := fs.Bool("quick", false, "shorter runs and 2,000 idle clients instead of 10,000")
	tcpAddr := fs.String("tcp-addr", "", "a plain TCP listener of the same broker, for the TCP baseline scenarios")
	only := fs.String("only", "", "comma-separated scenario names to run (default all)")
	skip := fs.String("skip", "", "comma-separated scenario names to skip")
	idleN := fs.Int("idle", 0, "idle clients (default 10000, --quick 2000)")
	dur := fs.Duration("duration", 0, "publish duration of the pubsub scenarios (default 10s, --quick 3s)")
	atRate := fs.Float64("at-rate", 0, "total msgs/s of the fanin-qos0-at-rate scenario (0: the scenario is skipped)")
	_ = fs.Parse(args)
	if err := t.check(); err != nil {
		return err
	}
	d, idle, drain := 10*time.Second, 10000, 5*time.Second
	if *quick {
		d, idle, drain = 3*time.Second, 2000, 3*time.Second
	}
	d, idle = durOr(*dur, d), or(*idleN, idle)

	pub := func(shape string, pubs, subs int, qos byte) pubsubOptions {
		return pubsubOptions{shape: shape, publishers: pubs, subscribers: subs, qos: qos, size: 64, topics: 1,
			duration: d, inflight: 64, drain: drain, maxSamples: 200000}
	}
	type scenario struct {
		name string
		kind string
		tcp  bool
		ps   pubsubOptions
		co   connOptions
	}
	scenarios := []scenario{
		{name: "idle", kind: "idle", co: connOptions{count: idle, concurrency: 32, keepAlive: 600, settle: 3 * time.Second}},
		{name: "connect-burst", kind: "connect", co: connOptions{count: 1000, concurrency: 32, keepAlive: 600}},
		{name: "tls-handshake", kind: "handshake", co: connOptions{count: 1000, concurrency: 32}},
		{name: "fanin-qos0", kind: "pubsub", ps: pub(shapeFanIn, 20, 1, 0)},
		{name: "fanin-qos1", kind: "pubsub", ps: pub(shapeFanIn, 20, 1, 1)},
		{name: "fanout-qos0", kind: "pubsub", ps: pub(shapeFanOut, 1, 50, 0)},
		{name: "fanout-qos1", kind: "pubsub", ps: pub(shapeFanOut, 1, 50, 1)},
		// The same at a fixed offered load the brokers carry, for latencies without queueing.
		{name: "fanin-qos0-10k", kind: "pubsub", ps: rated(pub(shapeFanIn, 20, 1, 0), 500)},
		{name: "fanin-qos1-5k", kind: "pubsub", ps: rated(pub(shapeFanIn, 20, 1, 1), 250)},
		// Latency at a fixed total rate that compare.sh sets to half of Mosquitto's top QoS 0 fan-in rate.
		{name: "fanin-qos0-at-rate", kind: "pubsub", ps: rated(pub(shapeFanIn, 20, 1, 0), *atRate/20)},
		{name: "fanin-qos0-tcp", kind: "pubsub", tcp: true, ps: pub(shapeFanIn, 20, 1, 0)},
		{name: "connect-burst-tcp", kind: "connect", tcp: true, co: connOptions{count: 1000, concurrency: 32, keepAlive: 600}},
	}
	want := func(name string) bool {
		if *quick && (name == "fanout-qos1" || name == "fanin-qos0-10k") {
			return false
		}
		if name == "fanin-qos0-at-rate" && *atRate <= 0 {
			return false
		}
		if *only != "" && !contains(*only, name) {
			return false
		}
		return !contains(*skip, name)
	}
	need := 0
	for _, s := range scenarios {
		if want(s.name) {
			need = max(need, s.co.count, s.ps.publishers+s.ps.subscribers)
		}
	}
	creds, err := t.loadCredentials(need)
	if err != nil {
		return err
	}
	rep := newReport(out.label, &t)
	for _, s := range scenarios {
		if !want(s.name) || ctx.Err() != nil {
			continue
		}
		st := t
		if s.tcp {
			if *tcpAddr == "" {
				continue
			}
			st.addr, st.plain = *tcpAddr, true
			if err := st.check(); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "ggbench: %s: %s ...\n", out.label, s.name)
		var r Result
		if s.kind == "pubsub" {
			r = runPubSub(ctx, &st, creds, s.name, s.ps)
		} else {
			r = runConnections(ctx, &st, creds, s.kind, s.name, s.co)
		}
		rep.Results = append(rep.Results, r)
		// Let the broker finish with this scenario before the next one starts; after connections,
		// past ggbroker's memory trim (limits.trimMemoryAfterConnects), which runs 1-2 s after a burst.
		if s.kind == "pubsub" {
			t.settle(500 * time.Millisecond)
		} else {
			t.settle(2500 * time.Millisecond)
		}
	}
	return out.write(rep)
}

// rated sets a publish rate per publisher.
func rated(o pubsubOptions, perPublisher float64) pubsubOptions {
	o.rate = perPublisher
	return o
}

func durOr(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

func contains(list, name string) bool {
	for _, x := range strings.Split(list, ",") {
		if strings.TrimSpace(x) == name {
			return true
		}
	}
	return false
}

// cmdCompare prints the ratios A/B of two JSON reports.
func cmdCompare(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: ggbench compare A.json B.json")
	}
	var reps [2]*Report
	for i, p := range args {
		rep, err := readReport(p)
		if err != nil {
			return err
		}
		reps[i] = rep
	}
	Compare(os.Stdout, reps[0], reps[1])
	return nil
}

func readReport(path string) (*Report, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rep.Label == "" {
		rep.Label = path
	}
	return &rep, nil
}

// cmdProvision creates and registers devices in a state directory.
func cmdProvision(args []string) error {
	fs := flag.NewFlagSet("provision", flag.ExitOnError)
	var t target
	t.flags(fs)
	n := fs.Int("count", 100, "devices")
	_ = fs.Parse(args)
	if t.stateDir == "" {
		return fmt.Errorf("--state-dir is required")
	}
	_, err := t.loadCredentials(*n)
	return err
}

// cmdFreePort prints a TCP port that is free on 127.0.0.1 now.
func cmdFreePort() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}
