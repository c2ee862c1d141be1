package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/advisor"
	"github.com/ggbroker/ggbroker/advisor/refdevice"
	"github.com/ggbroker/ggbroker/auth"
)

// advisorPolicy scopes the device under test to its own client ID and the reference devices' topics,
// so Security_Device_Policies passes.
const advisorPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/ref/*"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/ref/*"}]}`

// advisorRun is a running `ggbroker advisor run`.
type advisorRun struct {
	cmd      *exec.Cmd
	endpoint string
	stdout   *lockedBuffer // stdout only
	all      *lockedBuffer // stdout and stderr
	exited   chan error
}

// startAdvisor creates thing dut with the scoped policy in a fresh state directory, starts
// `ggbroker advisor run` with fast timings on 127.0.0.1 port 0 and returns once the endpoint is open.
func startAdvisor(t *testing.T, dir string, args ...string) *advisorRun {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "scoped.json"), []byte(advisorPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "policy", "create", "scoped", "scoped.json")
	run(t, dir, "device", "create", "dut", "--out", "devices/dut", "--policy", "scoped")
	args = append([]string{"advisor", "run", "--thing", "dut", "--listen", "127.0.0.1:0", "--grace", "100ms", "--timeout", "4s",
		"--stable-connection", "300ms", "--settle", "300ms"}, args...)
	cmd := exec.Command(ggbrokerBinary(t), args...)
	cmd.Dir = dir
	pr, pw := io.Pipe()
	a := &advisorRun{cmd: cmd, stdout: &lockedBuffer{}, all: &lockedBuffer{}, exited: make(chan error, 1)}
	cmd.Stdout = io.MultiWriter(pw, a.stdout, a.all)
	cmd.Stderr = io.MultiWriter(pw, a.all)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`test endpoint on (\S+) `)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a.endpoint = <-addr:
	case err := <-a.exited:
		t.Fatalf("advisor run exited: %v\n%s", err, a.all.String())
	case <-time.After(waitFor):
		t.Fatalf("advisor run did not open its endpoint:\n%s", a.all.String())
	}
	return a
}

// wait waits for the command to exit and returns its exit code.
func (a *advisorRun) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case err := <-a.exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(limit):
		t.Fatalf("advisor run did not finish in %s:\n%s", limit, a.all.String())
	}
	return -1
}

// deviceFiles loads what `device create` wrote for dut.
func deviceFiles(t *testing.T, dir string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	d := filepath.Join(dir, "devices/dut")
	cert, err := tls.LoadX509KeyPair(filepath.Join(d, auth.DeviceCertFile), filepath.Join(d, auth.DeviceKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(d, auth.CoreCAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return cert, pool
}

// TestAdvisorCommandGradesReferenceDevices runs `ggbroker advisor run` with every test case against
// the well-behaved reference device over real TLS, then checks the exit code, the table and the
// JUnit file parsed back; then the qualification suite against the naive device.
func TestAdvisorCommandGradesReferenceDevices(t *testing.T) {
	t.Parallel()
	t.Run("well-behaved device, every case", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		var ids []string
		for _, c := range advisor.Catalogue() {
			if c.Service == "" {
				ids = append(ids, c.ID)
			}
		}
		suite := map[string]any{"configuration": map[string]any{"TRIGGER_TOPIC": "ref/trigger"}, "tests": []any{}}
		group := map[string]any{"name": "offline", "configuration": map[string]any{}, "tests": []any{}}
		for _, id := range ids {
			cfg := map[string]any{}
			if id == "MQTT_Connect_Jitter_Backoff_Retries" {
				cfg["EXECUTION_TIMEOUT"] = "10" // two cycles of a 1 s backoff
			}
			group["tests"] = append(group["tests"].([]any), map[string]any{"name": id, "configuration": cfg, "test": map[string]any{"id": id, "version": "0.0.0"}})
		}
		suite["tests"] = []any{group}
		raw, _ := json.Marshal(suite)
		if err := os.WriteFile(filepath.Join(dir, "suite.json"), raw, 0o600); err != nil {
			t.Fatal(err)
		}
		a := startAdvisor(t, dir, "--suite-file", "suite.json", "--junit", "report.xml")
		cert, pool := deviceFiles(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		dev := &refdevice.Device{Addr: a.endpoint, ServerName: "localhost", RootCAs: pool, Cert: cert, ClientID: "dut",
			B: refdevice.WellBehaved(20*time.Millisecond, 600*time.Millisecond)}
		go dev.Run(ctx)
		if code := a.wait(t, 2*time.Minute); code != 0 {
			t.Fatalf("exit %d, want 0:\n%s", code, a.stdout.String())
		}
		out := a.stdout.String()
		for _, id := range ids {
			if !regexp.MustCompile(`(?m)^` + id + `\s+PASS\s`).MatchString(out) {
				t.Errorf("table has no PASS row for %s", id)
			}
		}
		raw, err := os.ReadFile(filepath.Join(dir, "report.xml"))
		if err != nil {
			t.Fatal(err)
		}
		var doc advisor.JUnitSuites
		if err := xml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("JUnit: %v", err)
		}
		if doc.Tests != len(ids) || doc.Failures != 0 || doc.Errors != 0 || len(doc.Suites) != 1 || doc.Suites[0].Name != "offline" || doc.Name != "suite results" {
			t.Errorf("JUnit totals: %+v", doc)
		}
	})
	t.Run("naive device, qualification suite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		a := startAdvisor(t, dir, "--suite", "qualification", "--json", "--junit", "report.xml")
		cert, pool := deviceFiles(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		dev := &refdevice.Device{Addr: a.endpoint, ServerName: "localhost", RootCAs: pool, Cert: cert, ClientID: "dut", B: refdevice.Naive(50 * time.Millisecond)}
		go dev.Run(ctx)
		if code := a.wait(t, 2*time.Minute); code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, a.all.String())
		}
		out := a.stdout.String()
		var rep advisor.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("--json report: %v\n%s", err, out)
		}
		want := map[string]advisor.Status{
			"TLS_Connect": advisor.StatusPass, "TLS_Incorrect_Subject_Name_Server_Cert": advisor.StatusFail, "TLS_Unsecure_Server_Cert": advisor.StatusFail,
			"TLS_Support_AWS_IoT_Cipher_Suites": advisor.StatusPassWithWarnings, "TLS_Receive_Maximum_Size_Fragments": advisor.StatusFail,
			"TLS_Expired_Server_Cert": advisor.StatusFail, "TLS_Large_Size_Server_Cert": advisor.StatusPass, "MQTT_Connect": advisor.StatusPass,
			"MQTT_Subscribe": advisor.StatusPass, "MQTT_Publish": advisor.StatusPass, "MQTT_Connect_Jitter_Backoff_Retries": advisor.StatusFail,
		}
		if len(rep.Results) != 11 || rep.Status != advisor.StatusFail {
			t.Fatalf("%d results, suite %s", len(rep.Results), rep.Status)
		}
		for _, r := range rep.Results {
			if r.Status != want[r.TestID] {
				t.Errorf("%s: %s (%s), want %s", r.TestID, r.Status, r.Reason(), want[r.TestID])
			}
		}
		raw, err := os.ReadFile(filepath.Join(dir, "report.xml"))
		if err != nil {
			t.Fatal(err)
		}
		var doc advisor.JUnitSuites
		if err := xml.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Name != "qualification results" || doc.Tests != 11 || doc.Failures != 5 || doc.Errors != 0 {
			t.Errorf("JUnit totals: name %q tests %d failures %d errors %d", doc.Name, doc.Tests, doc.Failures, doc.Errors)
		}
	})
}

// TestAdvisorMQTT311Device grades a real MQTT 3.1.1 client (paho.mqtt.golang: most AWS IoT firmware
// speaks 3.1.1) through the MQTT cases a well-configured library passes.
func TestAdvisorMQTT311Device(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ids := []string{"MQTT_Connect", "MQTT_Subscribe", "MQTT_Publish", "MQTT_Client_Puback_QoS1", "MQTT_Expired_Persistent_Session"}
	a := startAdvisor(t, dir, "--tests", strings.Join(ids, ","), "--set", "TRIGGER_TOPIC=ref/trigger", "--set", "TOPIC_FOR_PUBLISH_VALIDATION=ref/data",
		"--set", `TOPIC_LIST_FOR_SUBSCRIPTION_VALIDATION_ID=["ref/trigger"]`)
	cert, pool := deviceFiles(t, dir)
	opts := pahov3.NewClientOptions().AddBroker("ssl://" + a.endpoint).SetClientID("dut").SetCleanSession(false).
		SetTLSConfig(&tls.Config{ServerName: "localhost", RootCAs: pool, Certificates: []tls.Certificate{cert}}).
		SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).SetAutoReconnect(true).
		SetMaxReconnectInterval(100 * time.Millisecond).SetResumeSubs(false).SetConnectTimeout(time.Second)
	opts.SetOnConnectHandler(func(c pahov3.Client) {
		go func() {
			c.Subscribe("ref/trigger", 1, func(pahov3.Client, pahov3.Message) {})
			c.Publish("ref/data", 0, false, "hello")
		}()
	})
	c := pahov3.NewClient(opts)
	c.Connect()
	defer c.Disconnect(0)
	if code := a.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, a.stdout.String())
	}
	for _, id := range ids {
		if !regexp.MustCompile(`(?m)^` + id + `\s+PASS\s`).MatchString(a.stdout.String()) {
			t.Errorf("no PASS row for %s:\n%s", id, a.stdout.String())
		}
	}
}

// startServiceDevice runs firmware that uses its shadow and its jobs as the AWS IoT Device SDK
// samples do, with paho.mqtt.golang over MQTT 3.1.1, against the advisor's endpoint. On every
// connection it reports its state to its named shadow "cfg", subscribes to its classic shadow's delta
// and to its jobs' notify-next; it reports a delta's state back, and runs a job it is notified of:
// get, IN_PROGRESS, then SUCCEEDED. A bad device reports to the classic shadow instead of "cfg",
// reports led "off" whatever the delta says, and fails its jobs.
func startServiceDevice(t *testing.T, endpoint string, cert tls.Certificate, pool *x509.CertPool, good bool) {
	t.Helper()
	const prefix = "$aws/things/dut/"
	reportTopic, led, final := prefix+"shadow/name/cfg/update", "", "SUCCEEDED"
	if !good {
		reportTopic, led, final = prefix+"shadow/update", "off", "FAILED"
	}
	var mu sync.Mutex
	seen := map[string]bool{} // jobs already run
	pub := func(c pahov3.Client, topic, payload string) {
		go c.Publish(topic, 1, false, payload).WaitTimeout(waitFor)
	}
	onDelta := func(c pahov3.Client, m pahov3.Message) {
		var d struct {
			State map[string]any `json:"state"`
		}
		if json.Unmarshal(m.Payload(), &d) != nil {
			return
		}
		if led != "" {
			d.State["led"] = led
		}
		raw, _ := json.Marshal(map[string]any{"state": map[string]any{"reported": d.State}})
		pub(c, prefix+"shadow/update", string(raw))
	}
	onNotifyNext := func(c pahov3.Client, m pahov3.Message) {
		var n struct {
			Execution *struct {
				JobID string `json:"jobId"`
			} `json:"execution"`
		}
		if json.Unmarshal(m.Payload(), &n) != nil || n.Execution == nil {
			return
		}
		mu.Lock()
		again := seen[n.Execution.JobID]
		seen[n.Execution.JobID] = true
		mu.Unlock()
		if again {
			return
		}
		job := prefix + "jobs/" + n.Execution.JobID
		go func() {
			for _, step := range [][2]string{{job + "/get", `{}`}, {job + "/update", `{"status":"IN_PROGRESS"}`}, {job + "/update", `{"status":"` + final + `"}`}} {
				c.Publish(step[0], 1, false, step[1]).WaitTimeout(waitFor)
			}
		}()
	}
	opts := pahov3.NewClientOptions().AddBroker("ssl://" + endpoint).SetClientID("dut").SetCleanSession(true).
		SetTLSConfig(&tls.Config{ServerName: "localhost", RootCAs: pool, Certificates: []tls.Certificate{cert}}).
		SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).SetAutoReconnect(true).
		SetMaxReconnectInterval(100 * time.Millisecond).SetConnectTimeout(time.Second).
		SetDefaultPublishHandler(func(pahov3.Client, pahov3.Message) {}) // the jobs service's answers
	opts.SetOnConnectHandler(func(c pahov3.Client) {
		go func() {
			c.Publish(reportTopic, 1, false, `{"state":{"reported":{"fw":"1.0","led":"off"}}}`).WaitTimeout(waitFor)
			c.Subscribe(prefix+"shadow/update/delta", 1, onDelta).WaitTimeout(waitFor)
			c.Subscribe(prefix+"jobs/notify-next", 1, onNotifyNext).WaitTimeout(waitFor)
		}()
	})
	c := pahov3.NewClient(opts)
	c.Connect()
	t.Cleanup(func() { c.Disconnect(0) })
}

// TestAdvisorShadowAndJobCases runs `ggbroker advisor run` with the shadow and jobs cases, on the
// real shadow and jobs services over the state directory's services.db: a device that reports to
// the shadow SHADOW_NAME names, syncs DESIRED_STATE and completes its job PASSes all three
// (acceptance cases 18 to 20), and what it left is in the state directory, as `ggbroker shadow get`
// and `ggbroker job list` show; a device that reports elsewhere, reports the wrong state and fails
// its job FAILs each, with the reason.
func TestAdvisorShadowAndJobCases(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		good    bool
		code    int
		reasons map[string]string // test ID -> part of the FAIL reason
	}{
		{"well-behaved device", true, 0, nil},
		{"device that does not sync", false, 1, map[string]string{
			"Shadow_Publish_Reported_State": "published to $aws/things/dut/shadow/update, not $aws/things/dut/shadow/name/cfg/update",
			"Shadow_Update_Reported_State":  `report DESIRED_STATE {"led":"on"} on $aws/things/dut/shadow/update (the device last reported {"led":"off"})`,
			"Job_Execution":                 "took job advisor-job-1's execution to FAILED, not SUCCEEDED",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			suite := map[string]any{"configuration": map[string]any{}, "tests": []any{map[string]any{
				"name": "services", "configuration": map[string]any{}, "tests": []any{
					map[string]any{"name": "report", "configuration": map[string]any{"SHADOW_NAME": "cfg"}, "test": map[string]any{"id": "Shadow_Publish_Reported_State"}},
					map[string]any{"name": "sync", "configuration": map[string]any{"DESIRED_STATE": map[string]any{"led": "on"}}, "test": map[string]any{"id": "Shadow_Update_Reported_State"}},
					map[string]any{"name": "job", "configuration": map[string]any{"JOB_DOCUMENT": `{"operation":"reboot"}`, "JOB_JOBID": "advisor-job-1"}, "test": map[string]any{"id": "Job_Execution"}},
				}}}}
			raw, _ := json.Marshal(suite)
			if err := os.WriteFile(filepath.Join(dir, "suite.json"), raw, 0o600); err != nil {
				t.Fatal(err)
			}
			a := startAdvisor(t, dir, "--suite-file", "suite.json", "--json")
			cert, pool := deviceFiles(t, dir)
			startServiceDevice(t, a.endpoint, cert, pool, tc.good)
			if code := a.wait(t, time.Minute); code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, a.all.String())
			}
			var rep advisor.Report
			if err := json.Unmarshal([]byte(a.stdout.String()), &rep); err != nil {
				t.Fatalf("--json report: %v\n%s", err, a.stdout.String())
			}
			if len(rep.Results) != 3 {
				t.Fatalf("%d results:\n%s", len(rep.Results), a.all.String())
			}
			for _, r := range rep.Results {
				want, status := tc.reasons[r.TestID], advisor.StatusFail
				if tc.good {
					status = advisor.StatusPass
				}
				if r.Status != status || !strings.Contains(r.Reason(), want) {
					t.Errorf("%s: %s %q, want %s with %q; details %q", r.TestID, r.Status, r.Reason(), status, want, r.Details)
				}
			}
			// The cases ran on the state directory's shadows and jobs.
			shadowOut := run(t, dir, "shadow", "get", "dut")
			wantLED := `"led":"on"`
			if !tc.good {
				wantLED = `"led":"off"`
			}
			if !strings.Contains(strings.ReplaceAll(shadowOut, " ", ""), `"reported":{`) || !strings.Contains(strings.ReplaceAll(shadowOut, " ", ""), wantLED) {
				t.Errorf("shadow get dut after the run:\n%s", shadowOut)
			}
			if jobsOut := run(t, dir, "job", "list"); !strings.Contains(jobsOut, "advisor-job-1") {
				t.Errorf("job list after the run:\n%s", jobsOut)
			}
		})
	}
}

// TestAdvisorServiceCasesWithABrokerServing: while `ggbroker serve` holds the state directory, the
// shadow and jobs cases cannot use its services.db: they are ERROR at once, naming the running
// broker, never PASS, and the exit code says so.
func TestAdvisorServiceCasesWithABrokerServing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run(t, dir, "device", "create", "dut")
	serve(t, dir)
	code, out := exitCode(t, dir, "advisor", "run", "--thing", "dut", "--listen", "127.0.0.1:0", "--grace", "10ms", "--timeout", "20s",
		"--tests", "Shadow_Publish_Reported_State,Job_Execution", "--set", "JOB_JOBID=advisor-job")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, id := range []string{"Shadow_Publish_Reported_State", "Job_Execution"} {
		if !regexp.MustCompile(`(?m)^` + id + `\s+ERROR\s.*in use by another ggbroker serve`).MatchString(out) {
			t.Errorf("no ERROR row naming the running broker for %s:\n%s", id, out)
		}
	}
}

// TestAdvisorCommandRefusesBadSuites: a suite Device Advisor would refuse exits 2 before the endpoint
// opens, naming the case and the key.
func TestAdvisorCommandRefusesBadSuites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run(t, dir, "device", "create", "dut")
	cases := []struct {
		args   []string
		reason string
	}{
		{[]string{"--tests", "MQTT_Persistent_Session_Happy_Case"}, "TRIGGER_TOPIC is required"},
		{[]string{"--tests", "MQTT_Client_Puback_QoS1", "--set", "PAYLOAD_SIZE=129"}, "PAYLOAD_SIZE: 129 KB is outside 0 to 128"},
		{[]string{"--tests", "MQTT_Connect", "--set", "nokey"}, `--set "nokey": want KEY=VALUE`},
		{[]string{"--tests", "MQTT_Publish_Retained_Messages"}, `unknown test "MQTT_Publish_Retained_Messages"`},
		{[]string{"--suite", "qualification", "--tests", "MQTT_Connect"}, "give one of --suite, --tests and --suite-file"},
		{[]string{"--thing", "nobody"}, `thing "nobody" is not in the registry`},
	}
	for _, c := range cases {
		args := append([]string{"advisor", "run", "--listen", "127.0.0.1:0"}, c.args...)
		if !slicesContains(c.args, "--thing") {
			args = append(args, "--thing", "dut")
		}
		cmd := exec.Command(ggbrokerBinary(t), args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), c.reason) {
			t.Errorf("%v: %v, output %q; want exit 2 naming %q", c.args, err, out, c.reason)
		}
	}
}

func slicesContains(xs []string, x string) bool {
	for _, e := range xs {
		if e == x {
			return true
		}
	}
	return false
}
