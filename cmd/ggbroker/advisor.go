package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/advisor"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/jobs"
	"github.com/ggbroker/ggbroker/service"
	"github.com/ggbroker/ggbroker/shadow"
	"github.com/ggbroker/ggbroker/state"
)

func newAdvisorCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "advisor",
		Short: "Grade a device's firmware the way AWS IoT Device Advisor does, offline",
		Long: `Run AWS IoT Device Advisor's test cases against one device: ggbroker opens a test endpoint that plays
the adversarial broker (unknown, wrongly named, expired and oversized server certificates; withheld CONNACK,
PUBACK, SUBACK and PINGRESP; dropped connections) and grades the device with Device Advisor's test IDs and
criteria. See advisor/README.md.`,
	}
	cmd.AddCommand(newAdvisorRunCommand(g), newAdvisorTestsCommand())
	return cmd
}

type advisorFlags struct {
	thing, suite, tests, suiteFile, listen, junit string
	json                                          bool
	serverNames, set                              []string
	grace, timeout, stable, settle                time.Duration
}

func newAdvisorRunCommand(g *globalFlags) *cobra.Command {
	var f advisorFlags
	cmd := &cobra.Command{
		Use:   "run --thing THING [--suite qualification | --tests ID,ID... | --suite-file FILE.json]",
		Short: "Run a suite against the device under test and report PASS, PASS_WITH_WARNINGS, FAIL or ERROR per test",
		Long: `Open the test endpoint on --listen and run the suite's test cases one after the other, in declared
order, against the device registered as --thing (it must connect with one of its ACTIVE certificates and
trust the core device CA, as it trusts the broker). Point the device at the endpoint and let it retry: before
each case the endpoint refuses TLS for --grace, as Device Advisor does, so a device that retries moves on by
itself.

--suite qualification (the default) is AWS' current qualification suite of 11 tests; --tests runs the given
test IDs; --suite-file reads a Device Advisor suite definition (a rootGroup, or a SuiteDefinitionConfiguration
with suiteDefinitionName and rootGroup), so a suite made for AWS runs unchanged. --timeout replaces the
default EXECUTION_TIMEOUT of every case whose configuration sets none.

The shadow and jobs cases (Shadow_Publish_Reported_State, Shadow_Update_Reported_State, Job_Execution) run
ggbroker's shadow and jobs services on this state directory's services.db, so what they set and what the
device reports stays in the thing's shadow and jobs; while 'ggbroker serve' runs on the same state directory
they are ERROR.

Exit status: 0 when no case FAILed or ERRORed, 1 when one did, 2 when the suite could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdvisor(cmd, g, &f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.thing, "thing", "", "thing name of the device under test (required)")
	fs.StringVar(&f.suite, "suite", "", "built-in suite: qualification")
	fs.StringVar(&f.tests, "tests", "", "comma-separated test IDs to run, in order")
	fs.StringVar(&f.suiteFile, "suite-file", "", "Device Advisor suite definition JSON file")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8884", "test endpoint listen address")
	fs.StringVar(&f.junit, "junit", "", "write a JUnit XML report (as AWS IoT Device Tester writes) to this file")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON on stdout (the live lines go to stderr)")
	fs.StringArrayVar(&f.set, "set", nil, "KEY=VALUE suite-level configuration, e.g. TRIGGER_TOPIC=my/topic (repeatable; a JSON array or object value is decoded)")
	fs.StringSliceVar(&f.serverNames, "server-name", []string{"localhost"}, "DNS name or IP the device dials, put in the endpoint's certificate (repeatable)")
	fs.DurationVar(&f.grace, "grace", 5*time.Second, "how long the endpoint refuses TLS before each test case")
	fs.DurationVar(&f.timeout, "timeout", 0, "EXECUTION_TIMEOUT for cases whose configuration sets none (default: each case's own, mostly 300s)")
	fs.DurationVar(&f.stable, "stable-connection", 30*time.Second, "how long the backoff cases keep a connection up before dropping it, so the device's backoff resets")
	fs.DurationVar(&f.settle, "settle", 2*time.Second, "how long a case watches for a packet that must not come (a resubscription)")
	return cmd
}

func (f *advisorFlags) loadSuite() (advisor.Suite, error) {
	s, err := f.baseSuite()
	if err != nil || len(f.set) == 0 {
		return s, err
	}
	if s.Configuration == nil {
		s.Configuration = advisor.Config{}
	}
	for _, kv := range f.set {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return advisor.Suite{}, fmt.Errorf("--set %q: want KEY=VALUE", kv)
		}
		var decoded any
		if t := strings.TrimSpace(v); (strings.HasPrefix(t, "[") || strings.HasPrefix(t, "{")) && json.Unmarshal([]byte(t), &decoded) == nil {
			s.Configuration[k] = decoded
		} else {
			s.Configuration[k] = v
		}
	}
	return s, s.Validate()
}

func (f *advisorFlags) baseSuite() (advisor.Suite, error) {
	set := 0
	for _, s := range []string{f.suite, f.tests, f.suiteFile} {
		if s != "" {
			set++
		}
	}
	switch {
	case set > 1:
		return advisor.Suite{}, errors.New("give one of --suite, --tests and --suite-file")
	case f.tests != "":
		s, err := advisor.TestsSuite("tests", strings.Split(f.tests, ","))
		if err != nil || len(f.set) > 0 {
			return s, err // validated once --set is applied
		}
		return s, s.Validate()
	case f.suiteFile != "":
		raw, err := os.ReadFile(f.suiteFile)
		if err != nil {
			return advisor.Suite{}, err
		}
		name := strings.TrimSuffix(filepath.Base(f.suiteFile), ".json")
		s, err := advisor.ParseSuiteDefinition(name, raw)
		if err != nil {
			return advisor.Suite{}, fmt.Errorf("%s: %w", f.suiteFile, err)
		}
		return s, nil
	case f.suite == "" || f.suite == "qualification":
		return advisor.QualificationSuite(), nil
	}
	return advisor.Suite{}, fmt.Errorf("--suite %q: the built-in suite is qualification", f.suite)
}

func runAdvisor(cmd *cobra.Command, g *globalFlags, f *advisorFlags) error {
	usage := func(err error) error { return &exitError{code: 2, err: err} }
	if f.thing == "" {
		return usage(errors.New("--thing is required"))
	}
	suite, err := f.loadSuite()
	if err != nil {
		return usage(err)
	}
	st, _, err := openState(g)
	if err != nil {
		return usage(err)
	}
	cfg, err := g.load()
	if err != nil {
		return usage(err)
	}
	hosted, err := hostedServices(cfg, st)
	if err != nil {
		return usage(err)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return usage(fmt.Errorf("--listen: %w", err))
	}
	defer ln.Close()
	out := cmd.OutOrStdout()
	liveOut := out
	if f.json {
		liveOut = cmd.ErrOrStderr()
	}
	live := newLiveLine(liveOut)
	fmt.Fprintf(liveOut, "advisor: test endpoint on %s for thing %q, suite %s; point the device at it (it must trust %s)\n",
		ln.Addr(), f.thing, suite.Name, st.CoreCAPath)
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := advisor.Run(ctx, suite, advisor.Options{
		Thing: f.thing, Registry: st.Registry, CoreCA: st.CoreCA, PolicyDir: st.PolicyDir, Listener: ln,
		ServerNames: f.serverNames, Grace: f.grace, Timeout: f.timeout, StableConnection: f.stable, Settle: f.settle,
		Services: hosted.Cases(), Progress: live.progress,
	})
	live.stop()
	if err != nil {
		return usage(err)
	}
	if f.junit != "" {
		var buf bytes.Buffer
		if err := rep.WriteJUnit(&buf); err != nil {
			return err
		}
		if err := certs.WriteFileAtomic(f.junit, buf.Bytes(), 0o644); err != nil {
			return usage(fmt.Errorf("--junit: %w", err))
		}
	}
	if f.json {
		err = rep.WriteJSON(out)
	} else {
		fmt.Fprintln(out)
		err = rep.WriteTable(out)
	}
	if err != nil {
		return err
	}
	if !rep.Passed() {
		return &exitError{code: 1, err: errors.New("")}
	}
	return nil
}

// hostedServices gives the shadow and jobs cases the services `ggbroker serve` runs (shadow.New and
// jobs.New, as app.Services lists them) on the state directory's services.db, so a case reads and
// leaves the thing's shadow and jobs where the broker will find them. services.db is opened for one
// case at a time, holding the serve lock meanwhile: with a broker serving the same state directory
// those cases are ERROR, naming it, and the others run. The services log warnings and errors only,
// so that their records do not bury the live lines.
func hostedServices(cfg *config.Config, st *state.State) (advisor.HostedServices, error) {
	log, err := newLogger(cfg)
	if err != nil {
		return advisor.HostedServices{}, err
	}
	log = log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	deps := service.Deps{Config: cfg, State: st, Log: log}
	return advisor.HostedServices{
		Shadow: func() (service.Service, error) { return shadow.New(deps) },
		Jobs:   func() (service.Service, error) { return jobs.New(deps) },
		OpenStore: func(bucket string) (service.Store, func() error, error) {
			lock, err := state.LockServe(cfg.StateDir)
			if err != nil {
				return nil, nil, fmt.Errorf("%w (the shadow and jobs cases use its services.db)", err)
			}
			store, closeDB, err := broker.OpenServiceStore(cfg.StateDir, bucket)
			if err != nil {
				lock.Release()
				return nil, nil, err
			}
			return store, func() error { defer lock.Release(); return closeDB() }, nil
		},
		Region: cfg.Core.Region, AccountID: cfg.Core.AccountID, Log: log,
	}, nil
}

// liveLine prints one line per test case: on a terminal it is rewritten in place while the case
// runs (elapsed time) and ends with the verdict; elsewhere a line at the start and one at the end.
type liveLine struct {
	w        io.Writer
	terminal bool

	mu      sync.Mutex
	current *advisor.Progress
	done    chan struct{}
}

func newLiveLine(w io.Writer) *liveLine {
	l := &liveLine{w: w, done: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			l.terminal = true
			go l.tick()
		}
	}
	return l
}

func (l *liveLine) tick() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.mu.Lock()
			if l.current != nil {
				l.print(*l.current, time.Since(l.current.Result.StartTime))
			}
			l.mu.Unlock()
		}
	}
}

func (l *liveLine) print(p advisor.Progress, elapsed time.Duration) {
	line := fmt.Sprintf("[%d/%d] %-55s %-18s %6.1fs", p.Index, p.Total, p.Result.Name, p.Result.Status, elapsed.Seconds())
	if p.Result.Status != advisor.StatusRunning && p.Result.Status != advisor.StatusPass && p.Result.Reason() != "" {
		line += "  " + p.Result.Reason()
	}
	if l.terminal {
		fmt.Fprintf(l.w, "\r\x1b[K%s", line)
		if p.Result.Status != advisor.StatusRunning {
			fmt.Fprintln(l.w)
		}
		return
	}
	fmt.Fprintln(l.w, line)
}

func (l *liveLine) progress(p advisor.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.Result.Status == advisor.StatusRunning {
		l.current = &p
		l.print(p, 0)
		return
	}
	l.current = nil
	l.print(p, p.Result.Elapsed())
}

func (l *liveLine) stop() { close(l.done) }

func newAdvisorTestsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "tests",
		Short: "List the test cases, their configuration keys and defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TEST ID\tCATEGORY\tTIMEOUT\tCONFIGURATION")
			for _, c := range advisor.Catalogue() {
				var ks []string
				for _, k := range c.Keys {
					s := k.Name
					switch {
					case k.Required:
						s += " (required)"
					case k.Name == "EXECUTION_TIMEOUT":
						s += fmt.Sprintf(" (default %d)", int(c.Timeout.Seconds()))
					case k.Default != "":
						s += " (default " + k.Default + ")"
					}
					ks = append(ks, s)
				}
				cat := c.Category
				if c.Service != "" {
					cat += " (needs the " + c.Service + " service)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%ds\t%s\n", c.ID, cat, int(c.Timeout.Seconds()), strings.Join(ks, ", "))
			}
			return tw.Flush()
		},
	}
}
