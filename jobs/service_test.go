package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/service"
)

func (f *fixture) create(id string, things ...string) {
	f.t.Helper()
	if _, err := f.svc.CreateJob(CreateJobInput{JobID: id, Document: `{"op":"` + id + `"}`, Things: things}); err != nil {
		f.t.Fatal(err)
	}
}

// request publishes payload on the jobs topic suffix as t1's device and returns what the service sent.
func (f *fixture) request(suffix, payload string) ([]sent, error) {
	f.t.Helper()
	f.host.take()
	err := f.host.publish(context.Background(), &service.Message{Topic: "$aws/things/t1/jobs/" + suffix, Payload: []byte(payload), QoS: 1, From: f.dev})
	return f.host.take(), err
}

// answer is the one SendTo reply among out, decoded.
func answer(t *testing.T, out []sent, topic string) map[string]any {
	t.Helper()
	for _, s := range out {
		if s.to != nil && s.msg.Topic == topic {
			var v map[string]any
			if err := json.Unmarshal(s.msg.Payload, &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no answer on %s in %v", topic, out)
	return nil
}

func published(out []sent) []string {
	var topics []string
	for _, s := range out {
		if s.to == nil {
			topics = append(topics, s.msg.Topic)
		}
	}
	return topics
}

// TestStepTimeoutWithClock: the step timer runs on the service's clock; expiry is TIMED_OUT with
// notify and notify-next, and the job's in-progress timeout acts the same.
func TestStepTimeoutWithClock(t *testing.T) {
	f := startFixture(t, newMemStore(), nil)
	f.create("J1", "t1")
	if out, err := f.request("J1/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":2}`); err != service.Consumed || answer(t, out, "$aws/things/t1/jobs/J1/update/accepted") == nil {
		t.Fatalf("update: %v %v", err, out)
	}
	f.clock.add(119 * time.Second)
	f.svc.expire()
	if x, _ := f.svc.engine.Execution("t1", "J1", 0); x.Status != InProgress {
		t.Fatalf("before the deadline: %s", x.Status)
	}
	f.host.take()
	f.clock.add(time.Second)
	f.svc.expire()
	x, _ := f.svc.engine.Execution("t1", "J1", 0)
	if x.Status != TimedOut || x.VersionNumber != 3 {
		t.Fatalf("after the deadline: %s v%d", x.Status, x.VersionNumber)
	}
	if got := published(f.host.take()); strings.Join(got, ",") != "$aws/things/t1/jobs/notify,$aws/things/t1/jobs/notify-next" {
		t.Fatalf("events %v", got)
	}
	if j, _ := f.svc.engine.Job("J1"); j.Status != JobCompleted {
		t.Fatalf("job %s after its only execution timed out", j.Status)
	}

	// timeoutConfig.inProgressTimeoutInMinutes counts from startedAt, independent of the step timer.
	if _, err := f.svc.CreateJob(CreateJobInput{JobID: "J2", Document: `{}`, Things: []string{"t1"}, Timeout: &TimeoutConfig{InProgressTimeoutInMinutes: 1}}); err != nil {
		t.Fatal(err)
	}
	f.request("start-next", `{"stepTimeoutInMinutes":10}`)
	if d := f.svc.engine.NextDeadline(); !d.Equal(f.clock.now().Add(time.Minute)) {
		t.Fatalf("next deadline %v, want the in-progress timeout", d)
	}
	f.clock.add(time.Minute)
	f.svc.expire()
	if x, _ := f.svc.engine.Execution("t1", "J2", 0); x.Status != TimedOut {
		t.Fatalf("in-progress timeout: %s", x.Status)
	}
}

// TestRestartKeepsTimers: deadlines are stored; a restarted service expires one that passed while it
// was down, at Start.
func TestRestartKeepsTimers(t *testing.T) {
	store := newMemStore()
	clk := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	f := startFixture(t, store, clk)
	f.create("J1", "t1")
	f.create("J2", "t1")
	f.request("J1/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":1,"statusDetails":{"p":"1"}}`)
	f.cancel()
	_ = f.svc.Stop()

	clk.add(time.Hour)
	g := startFixture(t, store, clk)
	x, err := g.svc.engine.Execution("t1", "J1", 0)
	if err != nil || x.Status != TimedOut || x.StatusDetails["p"] != "1" {
		t.Fatalf("after restart: %+v %v", x, err)
	}
	if got := published(g.host.take()); len(got) != 2 {
		t.Fatalf("events at start %v, want notify and notify-next", got)
	}
	if next, _ := g.svc.engine.Describe("t1", NextJob, 0); next == nil || next.Execution.JobID != "J2" {
		t.Fatalf("next after restart: %+v", next)
	}
}

// TestFailedWriteRefuses: when the store cannot write, the device gets InternalError, the publish is
// refused (not acknowledged), nothing changes, and the same update succeeds once the disk is back.
func TestFailedWriteRefuses(t *testing.T) {
	store := newMemStore()
	f := startFixture(t, store, nil)
	f.create("J1", "t1")
	store.mu.Lock()
	store.fail = true
	store.mu.Unlock()
	out, err := f.request("J1/update", `{"status":"SUCCEEDED","clientToken":"k"}`)
	if err == nil || errors.Is(err, service.Consumed) {
		t.Fatalf("handler error %v, want a refusal", err)
	}
	if r := answer(t, out, "$aws/things/t1/jobs/J1/update/rejected"); r["code"] != "InternalError" || r["clientToken"] != "k" {
		t.Fatalf("rejection %v", r)
	}
	if len(published(out)) != 0 {
		t.Fatalf("events published for an unstored change: %v", out)
	}
	if x, _ := f.svc.engine.Execution("t1", "J1", 0); x.Status != Queued || x.VersionNumber != 1 {
		t.Fatalf("unstored change applied: %s v%d", x.Status, x.VersionNumber)
	}
	if _, err := f.svc.CreateJob(CreateJobInput{JobID: "J2", Document: `{}`, Things: []string{"t1"}}); err == nil {
		t.Fatal("CreateJob succeeded without a disk")
	}
	if _, err := f.svc.engine.Job("J2"); err == nil {
		t.Fatal("unstored job exists in memory")
	}
	store.mu.Lock()
	store.fail = false
	store.mu.Unlock()
	if out, err := f.request("J1/update", `{"status":"SUCCEEDED","expectedVersion":1}`); err != service.Consumed || answer(t, out, "$aws/things/t1/jobs/J1/update/accepted") == nil {
		t.Fatalf("retry: %v %v", err, out)
	}
}

// TestRetryAndAbort: jobExecutionsRetryConfig requeues a failed execution as the next executionNumber;
// abortConfig cancels the job's queued executions once the failure threshold is reached.
func TestRetryAndAbort(t *testing.T) {
	f := startFixture(t, newMemStore(), nil)
	_, err := f.svc.CreateJob(CreateJobInput{JobID: "R", Document: `{}`, Things: []string{"t1"},
		Retry: &RetryConfig{CriteriaList: []RetryCriteria{{FailureType: "FAILED", NumberOfRetries: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	f.request("R/update", `{"status":"FAILED"}`)
	x, _ := f.svc.engine.Execution("t1", "R", 0)
	if x.ExecutionNumber != 2 || x.Status != Queued || x.RetryAttempt != 1 || x.VersionNumber != 1 {
		t.Fatalf("retry %+v", x)
	}
	if first, _ := f.svc.engine.Execution("t1", "R", 1); first.Status != Failed {
		t.Fatalf("first execution %+v", first)
	}
	f.request("R/update", `{"status":"FAILED"}`)
	if x, _ = f.svc.engine.Execution("t1", "R", 0); x.ExecutionNumber != 2 || x.Status != Failed {
		t.Fatalf("after the last retry %+v", x)
	}
	if j, _ := f.svc.engine.Job("R"); j.Status != JobCompleted {
		t.Fatalf("job %s", j.Status)
	}

	_, err = f.svc.CreateJob(CreateJobInput{JobID: "A", Document: `{}`, Things: []string{"t1", "t2", "t3"},
		Abort: &AbortConfig{CriteriaList: []AbortCriteria{{Action: "CANCEL", FailureType: "REJECTED", MinNumberOfExecutedThings: 1, ThresholdPercentage: 100}}}})
	if err != nil {
		t.Fatal(err)
	}
	f.request("A/update", `{"status":"REJECTED"}`)
	j, _ := f.svc.engine.Job("A")
	if j.Status != JobCanceled || j.ReasonCode != "ABORTED" {
		t.Fatalf("aborted job %+v", j)
	}
	for _, th := range []string{"t2", "t3"} {
		if x, _ := f.svc.engine.Execution(th, "A", 0); x.Status != Canceled {
			t.Fatalf("%s after abort: %s", th, x.Status)
		}
	}
}

// TestContinuousNeverCompletes: a CONTINUOUS job stays IN_PROGRESS when every execution ended.
func TestContinuousNeverCompletes(t *testing.T) {
	f := startFixture(t, newMemStore(), nil)
	if _, err := f.svc.CreateJob(CreateJobInput{JobID: "C", Document: `{}`, Things: []string{"t1"}, TargetSelection: Continuous}); err != nil {
		t.Fatal(err)
	}
	f.request("C/update", `{"status":"SUCCEEDED"}`)
	if j, _ := f.svc.engine.Job("C"); j.Status != JobInProgress {
		t.Fatalf("continuous job %s", j.Status)
	}
}

// TestMetrics: executions by status on the registerer the host gave.
func TestMetrics(t *testing.T) {
	f := startFixture(t, newMemStore(), nil)
	f.create("J1", "t1", "t2")
	f.request("J1/update", `{"status":"IN_PROGRESS"}`)
	mfs, err := f.host.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				got[key] = g.GetValue()
			} else if c := m.GetCounter(); c != nil {
				got[key] = c.GetValue()
			}
		}
	}
	want := map[string]float64{
		"ggbroker_jobs_executions,QUEUED": 1, "ggbroker_jobs_executions,IN_PROGRESS": 1, "ggbroker_jobs_executions,SUCCEEDED": 0,
		"ggbroker_jobs_jobs,IN_PROGRESS": 1, "ggbroker_jobs_requests_total," + apiUpdate + ",MQTT,Success": 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

// TestHTTPRoutes: the routes are registered on the right signing names and answer AWS error shapes;
// a device the policy denies gets 403.
func TestHTTPRoutes(t *testing.T) {
	f := startFixture(t, newMemStore(), nil)
	f.create("J1", "t1")
	cases := []struct {
		name, signing, method, path string
		status                      int
		errType                     string
	}{
		{"describe job", "iot", "GET", "/jobs/J1", 200, ""},
		{"no such job", "iot", "GET", "/jobs/none", 404, "ResourceNotFoundException"},
		{"list jobs bad maxResults", "iot", "GET", "/jobs?maxResults=0", 400, "InvalidRequestException"},
		{"pending over SigV4", "iot-jobs-data", "GET", "/things/t1/jobs", 200, ""},
		{"PUT a job ID", "iot-jobs-data", "PUT", "/things/t1/jobs/J1", 404, "ResourceNotFoundException"},
		{"bad thing", "iot-jobs-data", "GET", "/things/bad%20name/jobs", 400, "InvalidRequestException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			f.host.api[tc.signing].ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status || rec.Header().Get("x-amzn-ErrorType") != tc.errType {
				t.Fatalf("%d %q %s", rec.Code, rec.Header().Get("x-amzn-ErrorType"), rec.Body)
			}
			if tc.errType != "" {
				var v map[string]any
				if json.Unmarshal(rec.Body.Bytes(), &v) != nil || v["message"] == "" {
					t.Fatalf("error body %s", rec.Body)
				}
			}
		})
	}
	f.host.deny = func(c *service.Client, action, resource string) bool {
		return action != "iotjobsdata:GetPendingJobExecutions" || resource != "thing/"+c.ThingName
	}
	for _, tc := range []struct {
		path   string
		status int
	}{{"/things/t1/jobs", 200}, {"/things/t2/jobs", 403}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", tc.path, nil)
		f.host.device.ServeHTTP(rec, req.WithContext(service.WithDevice(req.Context(), f.dev)))
		if rec.Code != tc.status {
			t.Fatalf("device GET %s: %d %s, want %d", tc.path, rec.Code, rec.Body, tc.status)
		}
	}
	_ = http.StatusOK
}
