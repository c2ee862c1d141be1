package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// ggbrokerBinary builds cmd/ggbroker once for the package's tests.
func ggbrokerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ggbroker-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ggbroker")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/ggbroker").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// run runs the binary in dir and returns stdout, failing the test on a non-zero exit.
func run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(ggbrokerBinary(t), args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ggbroker %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// createCrossDevice runs `ggbroker device create NAME ARGS...` in dir with crossDevicePolicy attached
// instead of the default device policy, for tests whose devices talk across each other's topics (the
// default allows a device its own NAME/... topics only). The policy is stored with `ggbroker policy
// create --force`, as a user widening the default would.
func createCrossDevice(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	doc := filepath.Join(dir, crossDevicePolicy+".json")
	if err := os.WriteFile(doc, []byte(crossDevicePolicyDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "policy", "create", crossDevicePolicy, doc, "--force")
	run(t, dir, append([]string{"device", "create", name, "--policy", crossDevicePolicy}, args...)...)
}

// served is a `ggbroker serve` process.
type served struct {
	cmd     *exec.Cmd
	mqtt    string
	admin   string
	serving map[string]any // the "ggbroker serving" record
	stderr  *lockedBuffer
	stopped chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serve starts `ggbroker serve` on 127.0.0.1 port 0 in dir and waits for its "serving" record.
func serve(t *testing.T, dir string, args ...string) *served {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--discovery-listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(ggbrokerBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GGBROKER_CONNECTIVITY_DETECTIPV4ADDRESSES=false", "GGBROKER_CONTROLPLANE_LISTEN=127.0.0.1:0")
	pr, pw := io.Pipe()
	s := &served{cmd: cmd, stderr: &lockedBuffer{}, stopped: make(chan error, 1)}
	cmd.Stderr = io.MultiWriter(pw, s.stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.stopped <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.stopped
	})
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "ggbroker serving" {
				ready <- rec
			}
		}
	}()
	select {
	case rec := <-ready:
		s.serving = rec
		s.mqtt, _ = rec["mqtt"].(string)
		s.admin, _ = rec["admin"].(string)
	case err := <-s.stopped:
		t.Fatalf("serve exited: %v\n%s", err, s.stderr.String())
	case <-time.After(waitFor):
		t.Fatalf("serve not ready:\n%s", s.stderr.String())
	}
	return s
}

// waitLog waits for the serve process to log a record containing text.
func (s *served) waitLog(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !strings.Contains(s.stderr.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no record with %s:\n%s", text, s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// terminate sends SIGTERM and expects a clean exit.
func (s *served) terminate(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.stopped:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM\n%s", err, s.stderr.String())
		}
	case <-time.After(waitFor):
		t.Fatal("serve did not stop on SIGTERM")
	}
	s.stopped <- nil // for the cleanup
	if !strings.Contains(s.stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("no shutdown record:\n%s", s.stderr.String())
	}
}

// TestBinaryDeviceCommands: the CLI's registry commands, as a user runs them.
func TestBinaryDeviceCommands(t *testing.T) {
	dir := t.TempDir()
	out := run(t, dir, "device", "create", "sensor-1", "--out", "devices/sensor-1", "--attr", "floor=2", "--type", "TempSensor")
	if !strings.Contains(out, "created thing sensor-1") {
		t.Fatalf("create said %q", out)
	}
	for name, mode := range map[string]os.FileMode{auth.DeviceCertFile: 0o644, auth.DeviceKeyFile: 0o600, auth.CoreCAFile: 0o644} {
		if got := fileMode(t, filepath.Join(dir, "devices/sensor-1", name)); got != mode {
			t.Errorf("%s mode %o, want %o", name, got, mode)
		}
	}
	caPEM := run(t, dir, "ca", "show")
	written, err := os.ReadFile(filepath.Join(dir, "devices/sensor-1", auth.CoreCAFile))
	if err != nil {
		t.Fatal(err)
	}
	if caPEM != string(written) {
		t.Fatal("`ca show` and the device's core-ca.pem differ")
	}
	if _, err := certs.ParseCertsPEM([]byte(caPEM)); err != nil {
		t.Fatalf("`ca show` printed no certificate: %v", err)
	}

	list := run(t, dir, "device", "list")
	if !strings.Contains(list, "sensor-1") || !strings.Contains(list, "TempSensor") || !strings.Contains(list, "ACTIVE") || !strings.Contains(list, "floor=2") {
		t.Fatalf("list:\n%s", list)
	}
	run(t, dir, "device", "deactivate", "sensor-1")
	if list := run(t, dir, "device", "list", "--json"); !strings.Contains(list, `"status": "INACTIVE"`) {
		t.Fatalf("list --json after deactivate:\n%s", list)
	}
	run(t, dir, "device", "revoke", "sensor-1")
	if list := run(t, dir, "device", "list"); !strings.Contains(list, "REVOKED") {
		t.Fatalf("list after revoke:\n%s", list)
	}
	if v := run(t, dir, "version"); !strings.HasPrefix(v, "ggbroker ") {
		t.Fatalf("version: %q", v)
	}

	bad := exec.Command(ggbrokerBinary(t), "device", "create", "bad name")
	bad.Dir = dir
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "thing name") {
		t.Fatalf("bad thing name: err %v, output %s", err, out)
	}
}

// TestBinaryRefusesBadConfig: a malformed config file stops serve with the file and key named.
func TestBinaryRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(cfg, []byte("clientDeviceAuth:\n  certificates:\n    rotationMode: weekly\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ggbrokerBinary(t), "serve", "--config", cfg)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("serve started with a bad config")
	}
	for _, want := range []string{cfg, "clientDeviceAuth.certificates.rotationMode", "weekly"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("error output does not name %q:\n%s", want, out)
		}
	}
}

// TestQuickStartWithMosquitto is the README's quick start, run as written: the commands of its
// "Quick start" section, read from README.md, in the README's order, with the built binary for `go run
// ./cmd/ggbroker` and the Mosquitto command-line clients a newcomer would use. Only the port is the
// test broker's. The broker runs first, as the README's set-up says.
func TestQuickStartWithMosquitto(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		t.Skip("mosquitto_sub/mosquitto_pub not installed (apt-get install mosquitto-clients; .ci/run installs them): skipping the quick-start test with Mosquitto clients")
	}
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		t.Skip("mosquitto_pub not installed: skipping the quick-start test")
	}
	cmds := readmeSection(t, "## Quick start")
	if len(cmds) < 3 {
		t.Fatalf("the README's quick start has %d commands: %q", len(cmds), cmds)
	}
	dir := t.TempDir()
	// The README's commands run from the repository root: its examples/ (the quick start's policy
	// file) is there too.
	examples, err := filepath.Abs(filepath.Join("..", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(examples, filepath.Join(dir, "examples")); err != nil {
		t.Fatal(err)
	}
	s := serve(t, dir)
	port := s.mqtt[strings.LastIndex(s.mqtt, ":")+1:]
	withPort := func(words []string) []string {
		out := append([]string(nil), words[1:]...)
		for i := 0; i+1 < len(out); i++ {
			if out[i] == "-p" {
				out[i+1] = port
			}
		}
		return out
	}

	mosquitto := func(words []string) *exec.Cmd {
		c := exec.Command(words[0], withPort(words)...)
		c.Dir = dir // the README's relative paths: devices/sensor-1/...
		return c
	}
	var subOut *lockedBuffer
	var want string // what the subscriber must print
	var pubIDs []string
	for _, words := range cmds {
		switch {
		case len(words) > 2 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/ggbroker":
			run(t, dir, words[3:]...)
		case words[0] == "mosquitto_sub":
			if subOut != nil {
				t.Fatal("the quick start has two subscribers; this test follows one")
			}
			sub := mosquitto(words)
			subOut = &lockedBuffer{}
			sub.Stdout, sub.Stderr = subOut, subOut
			if err := sub.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Process.Kill(); _ = sub.Wait() })
			// The README's reader starts the publisher after the subscriber is up: wait for the
			// broker's Subscribe record of that client, not for a time.
			s.waitLog(t, `"eventType":"Subscribe","status":"Success","protocol":"MQTT","clientId":"`+flagValue(words, "-i")+`"`)
			if flagValue(words, "-i") == "" {
				t.Fatal("the README's mosquitto_sub sets no client ID")
			}
			if slices.Contains(words, "-v") {
				want = "%topic% "
			}
		case words[0] == "mosquitto_pub":
			if out, err := mosquitto(words).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s\n%s", strings.Join(words, " "), err, out, s.stderr.String())
			}
			want = strings.ReplaceAll(want, "%topic%", flagValue(words, "-t")) + flagValue(words, "-m")
			pubIDs = append(pubIDs, flagValue(words, "-i"))
		default:
			t.Fatalf("the quick start runs %q, which this test does not know how to run", words[0])
		}
	}
	if subOut == nil || want == "" {
		t.Fatal("the quick start has no subscriber and publisher")
	}
	deadline := time.Now().Add(waitFor)
	for !strings.Contains(subOut.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber printed %q, want %q\n%s", subOut.String(), want, s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(s.stderr.String(), "DUPLICATE_CLIENT") {
		t.Fatalf("the quick start's clients took over each other's sessions:\n%s", s.stderr.String())
	}

	// Revoked while the broker runs: refused from the next connect on.
	last := cmds[len(cmds)-1]
	run(t, dir, "device", "revoke", pubIDs[len(pubIDs)-1])
	if out, err := mosquitto(last).CombinedOutput(); err == nil {
		t.Fatalf("revoked device published: %s", out)
	}
	s.waitLog(t, `"reason":"CERTIFICATE_REVOKED"`)
	s.terminate(t)
}

// TestBinaryRotateOnSignal: SIGUSR1 rotates the server certificate of a running broker.
func TestBinaryRotateOnSignal(t *testing.T) {
	dir := t.TempDir()
	s := serve(t, dir)
	if err := s.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, `"reason":"forced"`)
	s.terminate(t)
}

// exitCode runs the binary and returns its exit status and combined output.
func exitCode(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(ggbrokerBinary(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		t.Fatalf("ggbroker %v: %v", args, err)
		return -1, ""
	}
}

// TestBinaryPolicyCommands: create, attach, detach and check policies as a user does; `policy check`
// answers like TestAuthorization, with exit 0 on ALLOWED, 1 on a deny and 2 on bad input.
func TestBinaryPolicyCommands(t *testing.T) {
	dir := t.TempDir()
	run(t, dir, "device", "create", "sensor-1", "--attr", "room=kitchen")
	doc := filepath.Join(dir, "kitchen.json")
	if err := os.WriteFile(doc, []byte(`{"Version": "2012-10-17", "Statement": [
	  {"Sid": "KitchenOnly", "Effect": "Allow", "Action": "iot:Publish",
	   "Resource": "arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.Attributes[room]}/*"},
	  {"Sid": "NoAlarms", "Effect": "Deny", "Action": "iot:Publish", "Resource": "arn:aws:iot:*:*:topic/*/alarm"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "policy", "create", "kitchen", doc)
	run(t, dir, "policy", "detach", "ggbroker-default-device-policy", "sensor-1")
	run(t, dir, "policy", "attach", "kitchen", "sensor-1")
	if list := run(t, dir, "policy", "list"); !strings.Contains(list, "kitchen") || !strings.Contains(list, "sensor-1") {
		t.Fatalf("policy list:\n%s", list)
	}

	cases := []struct {
		name     string
		args     []string
		code     int
		decision string
	}{
		{"allowed by a thing attribute variable", []string{"--action", "iot:Publish", "--resource", "topic/kitchen/temp", "--client-id", "sensor-1"}, 0, "ALLOWED"},
		{"explicit deny wins", []string{"--action", "iot:publish", "--resource", "topic/kitchen/alarm", "--client-id", "sensor-1"}, 1, "EXPLICIT_DENY"},
		{"nothing allows it", []string{"--action", "iot:Subscribe", "--resource", "topicfilter/kitchen/#", "--client-id", "sensor-1"}, 1, "IMPLICIT_DENY"},
		{"full ARN", []string{"--action", "iot:Publish", "--resource", "arn:aws:iot:us-east-1:123456789012:topic/kitchen/x", "--client-id", "sensor-1"}, 0, "ALLOWED"},
		{"thing attribute from the flag", []string{"--action", "iot:Publish", "--resource", "topic/garage/x", "--client-id", "sensor-1", "--thing-attr", "room=garage"}, 0, "ALLOWED"},
		{"document from a file", []string{"--action", "iot:Publish", "--resource", "topic/kitchen/x", "--client-id", "other", "--policy", doc, "--thing", "other", "--thing-attr", "room=kitchen"}, 0, "ALLOWED"},
		{"bad resource", []string{"--action", "iot:Publish", "--resource", "nonsense", "--client-id", "sensor-1"}, 2, ""},
		{"no client ID and no policies to evaluate", []string{"--action", "iot:Publish", "--resource", "topic/a"}, 2, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := exitCode(t, dir, append([]string{"policy", "check", "--json"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			if tc.decision == "" {
				return
			}
			var res struct {
				Decision, Policy, Sid string
			}
			if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
				t.Fatalf("--json output: %v\n%s", err, out)
			}
			if res.Decision != tc.decision {
				t.Fatalf("decision %s, want %s", res.Decision, tc.decision)
			}
			if tc.decision == "EXPLICIT_DENY" && res.Sid != "NoAlarms" {
				t.Fatalf("deny not attributed to its statement: %+v", res)
			}
		})
	}

	run(t, dir, "policy", "detach", "kitchen", "sensor-1")
	if code, _ := exitCode(t, dir, "policy", "check", "--action", "iot:Publish", "--resource", "topic/kitchen/temp", "--client-id", "sensor-1"); code != 1 {
		t.Fatalf("after detach: exit %d, want 1", code)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": "*"}, {"Effect": "Perhaps"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := exitCode(t, dir, "policy", "create", "bad", bad); code == 0 || !strings.Contains(out, "statement 1") {
		t.Fatalf("a malformed policy was stored, or the error does not name the statement: %d %s", code, out)
	}
}

// TestBinaryProfileFlag: serve --profile iot-core selects AWS IoT Core's rules (what they do is tested
// in behaviour_test.go).
func TestBinaryProfileFlag(t *testing.T) {
	dir := t.TempDir()
	s := serve(t, dir, "--profile", "iot-core")
	if got := s.serving["behaviourProfile"]; got != "iot-core" {
		t.Fatalf("serve --profile iot-core: behaviourProfile %v", got)
	}
	s.terminate(t)
}
