// Package advisor is an offline Device Advisor: a test endpoint that plays adversarial broker roles
// against one device under test and grades it with AWS IoT Device Advisor's test cases, IDs and
// criteria (reference/services/advisor.md). It runs its own TLS listener and speaks MQTT 3.1.1 and 5
// itself (with paho.golang's packet codec): it is not the broker, and what it serves (expired or
// wrongly named certificates, withheld acknowledgements) never reaches the broker's listeners.
package advisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
)

// Options are what a run needs. Thing, Registry, CoreCA and Listener are required.
type Options struct {
	// Thing is the device under test; its ACTIVE certificates in Registry are the only client
	// certificates the endpoint accepts.
	Thing    string
	Registry *auth.Registry
	// CoreCA signs the endpoint's normal server certificate (devices trust it, as they trust the
	// broker) and the expired, wrongly named and large ones.
	CoreCA *certs.Authority
	// PolicyDir holds the policy documents Security_Device_Policies reads.
	PolicyDir string
	// Listener is the endpoint's TCP listener; Run closes it when it returns.
	Listener net.Listener
	// ServerNames are the DNS names the device dials, put in the normal certificate (with the
	// listener's IP address); default "localhost".
	ServerNames []string
	// Grace is how long the endpoint refuses TLS before each case (DA-TS); default 5 s.
	Grace time.Duration
	// Timeout replaces each case's default EXECUTION_TIMEOUT when its configuration has none.
	Timeout time.Duration
	// HandshakeTimeout bounds one TLS handshake; default 10 s.
	HandshakeTimeout time.Duration
	// StableConnection is how long a backoff case keeps an accepted connection before it drops it,
	// so that a device that resets its backoff only after a connection that lasted (as the AWS
	// IoT Device SDKs do) starts the measured sequence from its first delay; default 30 s.
	StableConnection time.Duration
	// Settle is how long a case watches for a packet that must not come (a resubscription after a
	// present session) once the one it waited for came; default 2 s.
	Settle time.Duration
	// Backoff are the classifier's thresholds; zero means DefaultBackoffThresholds.
	Backoff BackoffThresholds
	// Services run the cases that need one of ggbroker's services, by test ID. A case whose
	// service is missing here is an ERROR "service not available", never a PASS.
	Services map[string]ServiceCase
	// Progress, if set, is told when each case starts and ends (the live line).
	Progress func(Progress)
	// Now is the clock for the certificates; default time.Now.
	Now func() time.Time
}

// ServiceCase runs a test case that needs a ggbroker service (the shadow or jobs service) against
// the device. It is the seam for those services: tc gives it the device's MQTT connections.
type ServiceCase func(ctx context.Context, tc *TestContext) (Status, string)

// TestContext is what a ServiceCase gets: the thing under test, the case's merged configuration
// (validated when the suite was loaded) and the device's connections to the endpoint.
type TestContext struct {
	Thing  string
	Config Config
	tc     *testCtx
}

// Accept waits for the device's next MQTT connection (a completed handshake with the normal
// certificate and a CONNECT) and acknowledges it with session present = 0.
func (t *TestContext) Accept(ctx context.Context) (*Session, error) {
	s, err := t.tc.acceptSession(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.connack(false); err != nil {
		return nil, err
	}
	return &Session{s: s}, nil
}

// Notef adds a line to the case's details.
func (t *TestContext) Notef(format string, args ...any) { t.tc.notef(format, args...) }

// Session is one MQTT connection of the device, as a ServiceCase drives it.
type Session struct{ s *session }

// ClientID is the CONNECT's client ID.
func (s *Session) ClientID() string { return s.s.connect.ClientID }

// Next returns the device's next packet; ErrDeviceClosed once the device closed the connection.
func (s *Session) Next(ctx context.Context) (*packets.ControlPacket, error) { return s.s.next(ctx) }

// Answer replies as a normal broker does: PUBACK, SUBACK, UNSUBACK, PINGRESP.
func (s *Session) Answer(cp *packets.ControlPacket) error { return s.s.answer(cp, blockSet{}) }

// Publish sends a message to the device and returns its packet ID (0 for QoS 0).
func (s *Session) Publish(topic string, qos byte, payload []byte) (uint16, error) {
	return s.s.publish(topic, qos, payload)
}

// Close drops the connection.
func (s *Session) Close() { s.s.close() }

// ErrDeviceClosed is what Session.Next returns once the device closed the connection.
var ErrDeviceClosed = errDeviceClosed

// Progress is one event of a run: a case started (Status RUNNING) or ended.
type Progress struct {
	Index, Total int
	Result       Result
}

// run is one suite run's state.
type run struct {
	opts        Options
	certs       *serverCerts
	endpoint    *endpoint
	deviceCerts []string // IDs of the thing's ACTIVE certificates
}

// testCtx is one case's state.
type testCtx struct {
	run   *run
	def   *testDef
	cfg   Config
	conns <-chan net.Conn

	mu          sync.Mutex
	open        []net.Conn
	details     []string
	lastRefusal string
}

func (tc *testCtx) notef(format string, args ...any) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if len(tc.details) < 50 {
		tc.details = append(tc.details, fmt.Sprintf(format, args...))
	}
}

// verdict is a case's outcome.
type verdict struct {
	status Status
	reason string
}

func pass() verdict { return verdict{status: StatusPass} }
func warn(format string, a ...any) verdict {
	return verdict{StatusPassWithWarnings, fmt.Sprintf(format, a...)}
}
func fail(format string, a ...any) verdict { return verdict{StatusFail, fmt.Sprintf(format, a...)} }
func errVerdict(format string, a ...any) verdict {
	return verdict{StatusError, fmt.Sprintf(format, a...)}
}

// timedOut is the verdict of a case whose EXECUTION_TIMEOUT passed without one: FAIL with what the
// case was waiting for (acceptance case 8).
func (tc *testCtx) timedOut(waitingFor string) verdict {
	msg := fmt.Sprintf("EXECUTION_TIMEOUT %s passed: %s", formatSeconds(tc.timeout()), waitingFor)
	if tc.lastRefusal != "" {
		msg += " (last refused handshake: " + tc.lastRefusal + ")"
	}
	return fail("%s", msg)
}

func (tc *testCtx) timeout() time.Duration {
	if d, ok, _ := tc.cfg.Seconds("EXECUTION_TIMEOUT"); ok {
		return d
	}
	if tc.run.opts.Timeout > 0 {
		return tc.run.opts.Timeout
	}
	return tc.def.timeout
}

func (o *Options) defaults() error {
	if o.Thing == "" || o.Registry == nil || o.CoreCA == nil || o.Listener == nil {
		return errors.New("advisor: Thing, Registry, CoreCA and Listener are required")
	}
	if len(o.ServerNames) == 0 {
		o.ServerNames = []string{"localhost"}
	}
	if o.Grace == 0 {
		o.Grace = 5 * time.Second
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.StableConnection == 0 {
		o.StableConnection = 30 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 2 * time.Second
	}
	if o.Backoff == (BackoffThresholds{}) {
		o.Backoff = DefaultBackoffThresholds
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Run runs the suite against the device and returns the report. It fails before running anything
// when the suite or the options are invalid or the thing has no ACTIVE certificate; a case that
// cannot run is an ERROR in the report, not an error of Run.
func Run(ctx context.Context, suite Suite, opts Options) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := suite.Validate(); err != nil {
		return nil, err
	}
	if _, ok, err := opts.Registry.Thing(opts.Thing); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("thing %q is not in the registry (create it with `ggbroker device create %s`)", opts.Thing, opts.Thing)
	}
	cs, err := opts.Registry.CertificatesOf(opts.Thing)
	if err != nil {
		return nil, err
	}
	r := &run{opts: opts}
	for _, c := range cs {
		if c.Status == auth.StatusActive {
			r.deviceCerts = append(r.deviceCerts, c.ID)
		}
	}
	if len(r.deviceCerts) == 0 {
		return nil, fmt.Errorf("thing %q has no ACTIVE certificate", opts.Thing)
	}
	names, ips := endpointNames(opts.ServerNames, opts.Listener.Addr())
	if r.certs, err = newServerCerts(opts.CoreCA, names, ips, 24*time.Hour, opts.Now()); err != nil {
		return nil, err
	}
	r.endpoint = newEndpoint(opts.Listener)
	defer opts.Listener.Close()
	defer r.endpoint.shut()

	rep := &Report{Suite: suite.Name, Thing: opts.Thing, Endpoint: opts.Listener.Addr().String(), StartTime: time.Now()}
	total := 0
	for _, g := range suite.Groups {
		total += len(g.Cases)
	}
	canceled := false
	for _, g := range suite.Groups {
		for _, c := range g.Cases {
			d, _ := lookup(c.TestID)
			res := Result{Group: g.Name, Name: c.Name, TestID: d.id}
			if canceled || ctx.Err() != nil {
				canceled = true
				res.Status, res.Failure = StatusCanceled, "the run was stopped before this case"
				res.StartTime, res.EndTime = time.Now(), time.Now()
				rep.Results = append(rep.Results, res)
				continue
			}
			rep.Results = append(rep.Results, r.runCase(ctx, d, merge(suite.Configuration, g.Configuration, c.Configuration), res, len(rep.Results)+1, total))
			if ctx.Err() != nil {
				canceled = true
			}
		}
	}
	rep.EndTime = time.Now()
	rep.Refused = r.endpoint.refusedCount()
	rep.finish(canceled)
	return rep, nil
}

// endpointNames are the DNS names and IP addresses of the endpoint's certificates: the server names
// (an IP given as a name goes with the IPs), and the listen address, or every local address when it
// listens on all of them.
func endpointNames(serverNames []string, addr net.Addr) ([]string, []net.IP) {
	var names []string
	var ips []net.IP
	for _, n := range serverNames {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, n)
		}
	}
	ta, ok := addr.(*net.TCPAddr)
	switch {
	case ok && ta.IP != nil && !ta.IP.IsUnspecified():
		ips = append(ips, ta.IP)
	default:
		ips = append(ips, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
		if as, err := net.InterfaceAddrs(); err == nil {
			for _, a := range as {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
					ips = append(ips, n.IP)
				}
			}
		}
	}
	return names, ips
}

// runCase refuses TLS for the grace window, then runs one case with its EXECUTION_TIMEOUT.
func (r *run) runCase(ctx context.Context, d *testDef, cfg Config, res Result, index, total int) Result {
	r.endpoint.shut()
	select {
	case <-time.After(r.opts.Grace):
	case <-ctx.Done():
	}
	tc := &testCtx{run: r, def: d, cfg: cfg}
	res.StartTime = time.Now()
	res.Status = StatusRunning
	if r.opts.Progress != nil {
		r.opts.Progress(Progress{Index: index, Total: total, Result: res})
	}
	tc.conns = r.endpoint.open()
	cctx, cancel := context.WithTimeout(ctx, tc.timeout())
	v := r.dispatch(cctx, tc)
	cancel()
	r.endpoint.shut()
	tc.closeAll()
	res.EndTime = time.Now()
	if ctx.Err() != nil && v.status != StatusPass && v.status != StatusPassWithWarnings {
		v = verdict{StatusCanceled, "the run was stopped during this case"}
	}
	res.Status = v.status
	switch v.status {
	case StatusPassWithWarnings:
		res.Warnings = v.reason
	case StatusFail, StatusError, StatusCanceled:
		res.Failure = v.reason
	}
	res.Details = tc.details
	if r.opts.Progress != nil {
		r.opts.Progress(Progress{Index: index, Total: total, Result: res})
	}
	return res
}

func (r *run) dispatch(ctx context.Context, tc *testCtx) verdict {
	if tc.def.service != "" {
		sc := r.opts.Services[tc.def.id]
		if sc == nil {
			return errVerdict("service not available: the %s service is not part of this ggbroker, so %s cannot run", tc.def.service, tc.def.id)
		}
		st, reason := sc(ctx, &TestContext{Thing: r.opts.Thing, Config: tc.cfg, tc: tc})
		return verdict{st, reason}
	}
	return tc.def.run(ctx, tc)
}
