package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// jobsTopics are what a jobs device subscribes to, as the AWS IoT Device SDK v2 does (JS-JOBS).
func jobsTopics(thing string) []string {
	p := "$aws/things/" + thing + "/jobs/"
	return []string{p + "notify", p + "notify-next", p + "get/+", p + "start-next/+", p + "+/get/+", p + "+/update/+"}
}

// checkTimestamps fails when a device-plane timestamp is not epoch seconds (case 21).
func checkTimestamps(t *testing.T, v any, path string) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if n, ok := e.(json.Number); ok && (k == "timestamp" || strings.HasSuffix(k, "At")) {
				if i, err := n.Int64(); err != nil || i <= 1_000_000_000 || i >= 10_000_000_000 {
					t.Fatalf("%s.%s = %s, want epoch seconds (10 digits)", path, k, n)
				}
			}
			checkTimestamps(t, e, path+"."+k)
		}
	case []any:
		for i, e := range x {
			checkTimestamps(t, e, fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

// TestJobsAcceptance runs the spec's acceptance cases 1-17, 21 and 22 in order against the real broker:
// one device t1 over MQTT 3.1.1 and mutual TLS, jobs created through the control-plane routes.
func TestJobsAcceptance(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("t1")
	dev := h.connectJobs(d)
	dev.subscribe(jobsTopics("t1")...)
	J := "$aws/things/t1/jobs"

	// 1. Nothing pending.
	dev.publish(J+"/get", `{"clientToken":"c1"}`)
	raw := string(dev.expectRaw(J + "/get/accepted"))
	var got map[string]any
	_ = json.Unmarshal([]byte(raw), &got)
	if !strings.HasPrefix(raw, `{`) || fmt.Sprint(got["inProgressJobs"]) != "[]" || fmt.Sprint(got["queuedJobs"]) != "[]" || got["clientToken"] != "c1" {
		t.Fatalf("case 1: %s", raw)
	}
	if ts, _ := got["timestamp"].(float64); ts < 1e9 || ts >= 1e10 {
		t.Fatalf("case 1: timestamp %v is not 10 digits", got["timestamp"])
	}

	// 2. Job1 created: notify with Job1 QUEUED, notify-next with Job1 and its document as an object.
	h.createJob("Job1", `{"ToDo":"Reboot"}`, "t1")
	n := dev.expect(J + "/notify")
	checkTimestamps(t, n, "notify")
	queued, _ := field(n, "jobs", "QUEUED").([]any)
	if len(queued) != 1 || len(field(n, "jobs").(map[string]any)) != 1 {
		t.Fatalf("case 2 notify: %v", n)
	}
	q0 := queued[0].(map[string]any)
	if q0["jobId"] != "Job1" || num(q0, "executionNumber") != 1 || num(q0, "versionNumber") != 1 || num(q0, "queuedAt") != num(q0, "lastUpdatedAt") {
		t.Fatalf("case 2 notify summary: %v", q0)
	}
	nn := dev.expect(J + "/notify-next")
	checkTimestamps(t, nn, "notify-next")
	if field(nn, "execution", "jobId") != "Job1" || field(nn, "execution", "status") != "QUEUED" ||
		field(nn, "execution", "jobDocument", "ToDo") != "Reboot" || num(nn, "execution", "versionNumber") != 1 || num(nn, "execution", "executionNumber") != 1 {
		t.Fatalf("case 2 notify-next: %v", nn)
	}

	// 3. Job2: notify lists both in creation order; no notify-next.
	h.createJob("Job2", `{"ToDo":"Update","url":"https://example.com/a?b=1&c=<2>"}`, "t1")
	n = dev.expect(J + "/notify")
	queued, _ = field(n, "jobs", "QUEUED").([]any)
	if len(queued) != 2 || queued[0].(map[string]any)["jobId"] != "Job1" || queued[1].(map[string]any)["jobId"] != "Job2" {
		t.Fatalf("case 3 notify: %v", n)
	}
	dev.expectNone(J + "/notify-next")

	// 4. start-next starts Job1: version 2, startedAt, document object; no events.
	dev.publish(J+"/start-next", `{"clientToken":"c2"}`)
	a := dev.expect(J + "/start-next/accepted")
	checkTimestamps(t, a, "start-next")
	if field(a, "execution", "jobId") != "Job1" || field(a, "execution", "status") != "IN_PROGRESS" || num(a, "execution", "versionNumber") != 2 ||
		num(a, "execution", "startedAt") <= 0 || field(a, "execution", "jobDocument", "ToDo") != "Reboot" || a["clientToken"] != "c2" {
		t.Fatalf("case 4: %v", a)
	}
	dev.expectNone(J+"/notify", J+"/notify-next")

	// 5. start-next again: the same Job1, version still 2.
	dev.publish(J+"/start-next", `{}`)
	a = dev.expect(J + "/start-next/accepted")
	if field(a, "execution", "jobId") != "Job1" || num(a, "execution", "versionNumber") != 2 {
		t.Fatalf("case 5: %v", a)
	}
	if _, has := a["clientToken"]; has {
		t.Fatalf("case 22: no clientToken sent, but the answer has one: %v", a)
	}

	// 6. get: Job1 in progress, Job2 queued.
	dev.publish(J+"/get", `{}`)
	a = dev.expect(J + "/get/accepted")
	ip, _ := a["inProgressJobs"].([]any)
	qd, _ := a["queuedJobs"].([]any)
	if len(ip) != 1 || ip[0].(map[string]any)["jobId"] != "Job1" || len(qd) != 1 || qd[0].(map[string]any)["jobId"] != "Job2" {
		t.Fatalf("case 6: %v", a)
	}
	checkTimestamps(t, a, "get")

	// 7. Job1 SUCCEEDED: accepted without state or document; notify-next names Job2; notify only Job2.
	dev.publish(J+"/Job1/update", `{"status":"SUCCEEDED","clientToken":"c3"}`)
	a = dev.expect(J + "/Job1/update/accepted")
	if a["clientToken"] != "c3" || a["executionState"] != nil || a["jobDocument"] != nil || len(a) != 2 {
		t.Fatalf("case 7 accepted: %v", a)
	}
	nn = dev.expect(J + "/notify-next")
	if field(nn, "execution", "jobId") != "Job2" || field(nn, "execution", "status") != "QUEUED" {
		t.Fatalf("case 7 notify-next: %v", nn)
	}
	n = dev.expect(J + "/notify")
	queued, _ = field(n, "jobs", "QUEUED").([]any)
	if len(queued) != 1 || queued[0].(map[string]any)["jobId"] != "Job2" || field(n, "jobs", "IN_PROGRESS") != nil {
		t.Fatalf("case 7 notify: %v", n)
	}

	// 8. Update after SUCCEEDED: InvalidStateTransition with the execution state.
	dev.publish(J+"/Job1/update", `{"status":"IN_PROGRESS","clientToken":"c4"}`)
	r := dev.expect(J + "/Job1/update/rejected")
	if r["code"] != "InvalidStateTransition" || field(r, "executionState", "status") != "SUCCEEDED" || num(r, "executionState", "versionNumber") != 3 || r["clientToken"] != "c4" {
		t.Fatalf("case 8: %v", r)
	}
	checkTimestamps(t, r, "rejected")

	// 9. expectedVersion: a number that does not match, then the right one as a string.
	dev.publish(J+"/Job2/update", `{"status":"IN_PROGRESS","expectedVersion":5}`)
	r = dev.expect(J + "/Job2/update/rejected")
	if r["code"] != "VersionMismatch" || num(r, "executionState", "versionNumber") != 1 {
		t.Fatalf("case 9 mismatch: %v", r)
	}
	dev.publish(J+"/Job2/update", `{"status":"IN_PROGRESS","expectedVersion":"1"}`)
	dev.expect(J + "/Job2/update/accepted")

	// 10. includeJobExecutionState and includeJobDocument.
	dev.publish(J+"/Job2/update", `{"status":"IN_PROGRESS","includeJobExecutionState":true,"includeJobDocument":true}`)
	a = dev.expect(J + "/Job2/update/accepted")
	if field(a, "executionState", "status") != "IN_PROGRESS" || num(a, "executionState", "versionNumber") != 3 || field(a, "jobDocument", "ToDo") != "Update" ||
		field(a, "jobDocument", "url") != "https://example.com/a?b=1&c=<2>" {
		t.Fatalf("case 10: %v", a)
	}

	// 11. Job2 FAILED: nothing pending.
	dev.publish(J+"/Job2/update", `{"status":"FAILED"}`)
	dev.expect(J + "/Job2/update/accepted")
	if n = dev.expect(J + "/notify"); len(field(n, "jobs").(map[string]any)) != 0 {
		t.Fatalf("case 11 notify: %v", n)
	}
	if nn = dev.expect(J + "/notify-next"); nn["execution"] != nil || len(nn) != 1 {
		t.Fatalf("case 11 notify-next: %v", nn)
	}

	// 12. start-next with nothing pending: accepted without execution.
	dev.publish(J+"/start-next", `{"clientToken":"c5"}`)
	if a = dev.expect(J + "/start-next/accepted"); a["execution"] != nil || a["clientToken"] != "c5" || len(a) != 2 {
		t.Fatalf("case 12: %v", a)
	}

	// 13. $next/get with Job3 queued, with and without the document.
	h.createJob("Job3", `{"ToDo":"Collect"}`, "t1")
	dev.expect(J + "/notify")
	dev.expect(J + "/notify-next")
	dev.publish(J+"/$next/get", `{}`)
	if a = dev.expect(J + "/$next/get/accepted"); field(a, "execution", "jobId") != "Job3" || field(a, "execution", "jobDocument", "ToDo") != "Collect" {
		t.Fatalf("case 13: %v", a)
	}
	dev.publish(J+"/$next/get", `{"includeJobDocument":false}`)
	if a = dev.expect(J + "/$next/get/accepted"); field(a, "execution", "jobId") != "Job3" || field(a, "execution", "jobDocument") != nil {
		t.Fatalf("case 13 without document: %v", a)
	}

	// 14. Unknown job.
	dev.publish(J+"/NoSuchJob/get", `{"clientToken":"c6"}`)
	if r = dev.expect(J + "/NoSuchJob/get/rejected"); r["code"] != "ResourceNotFound" || r["clientToken"] != "c6" || r["executionState"] != nil {
		t.Fatalf("case 14: %v", r)
	}

	// 15. Invalid updates.
	for _, p := range []string{`{"statusDetails":{"p":"1"}}`, `{"status":"CANCELED"}`, `{"status":"IN_PROGRESS","statusDetails":{"bad key!":"x"}}`} {
		dev.publish(J+"/Job3/update", p)
		if r = dev.expect(J + "/Job3/update/rejected"); r["code"] != "InvalidRequest" {
			t.Fatalf("case 15 %s: %v", p, r)
		}
	}

	// 16. Not JSON.
	dev.publish(J+"/get", `{not json`)
	if r = dev.expect(J + "/get/rejected"); r["code"] != "InvalidJson" {
		t.Fatalf("case 16: %v", r)
	}

	// 17. A jobs topic naming no API.
	dev.publish(J+"/foo/bar/baz", `{}`)
	if r = dev.expect(J + "/foo/bar/baz/rejected"); r["code"] != "InvalidTopic" {
		t.Fatalf("case 17: %v", r)
	}

	// 22. A clientToken comes back byte for byte, escapes included.
	dev.publish(J+"/get", `{"clientToken":"a\u00e9<&>\"b"}`)
	if raw := string(dev.expectRaw(J + "/get/accepted")); !strings.Contains(raw, `"clientToken":"a\u00e9<&>\"b"`) {
		t.Fatalf("case 22: %s", raw)
	}

	// The device requests were logged with AWS' jobs log entry fields.
	h.record(t, "jobs UpdateJobExecution", map[string]string{"eventType": "UpdateJobExecution", "protocol": "MQTT", "clientId": "t1", "jobId": "Job1",
		"topicName": J + "/Job1/update", "clientToken": "c3", "status": "Success", "versionNumber": "3"})
	h.record(t, "jobs ReportFinalJobExecutionCount", map[string]string{"jobId": "Job1"})
}

// TestJobsAnswersOnlyTheRequester is case 19: the answer reaches the requester without a subscription,
// and not another client subscribed to the answer topic.
func TestJobsAnswersOnlyTheRequester(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("t1")
	dev := h.connectJobs(d)
	h.writePolicy("spy-all", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`)
	spy := h.createDevice("spy", "spy-all")
	spyc := h.connectJobs(spy)
	spyc.subscribe("$aws/things/t1/jobs/get/accepted", "$aws/things/t1/jobs/get")

	dev.publish("$aws/things/t1/jobs/get", `{"clientToken":"x"}`)
	if a := dev.expect("$aws/things/t1/jobs/get/accepted"); a["clientToken"] != "x" {
		t.Fatalf("answer %v", a)
	}
	spyc.expectNone("$aws/things/t1/jobs/get/accepted", "$aws/things/t1/jobs/get")
	// Nor can the spy forge an answer to t1.
	spyc.publish("$aws/things/t1/jobs/get/accepted", `{"forged":true}`)
	dev.expectNone("$aws/things/t1/jobs/get/accepted")
}

// TestJobsPolicyOwnThing is case 20: t2, under the default device policy, may not use t1's jobs topics.
func TestJobsPolicyOwnThing(t *testing.T) {
	h := startBroker(t, nil)
	h.createDefaultDevice("t1")
	t2 := h.createDefaultDevice("t2")
	_, c, err := h.connectV5(t2, "t2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rc := publishV5(t, c, "$aws/things/t1/jobs/get", 1, `{}`); rc != 0x87 {
		t.Fatalf("t2 publishing to t1's jobs: PUBACK 0x%02x, want 0x87 (not authorized)", rc)
	}
	if codes := subscribeV5(t, c, "$aws/things/t1/jobs/notify", "$aws/things/t2/jobs/notify"); codes[0] != 0x87 || codes[1] != 1 {
		t.Fatalf("SUBACK %v, want [0x87 1]", codes)
	}
	if rc := publishV5(t, c, "$aws/things/t2/jobs/get", 1, `{}`); rc != 0 {
		t.Fatalf("t2 publishing to its own jobs: PUBACK 0x%02x", rc)
	}
}

// TestJobsStepTimeout is case 18 with one "minute" of 100ms (jobs.timeoutMinute): a step timer expires
// to TIMED_OUT with notify and notify-next; 0 is refused; -1 cancels the timer.
func TestJobsStepTimeout(t *testing.T) {
	t.Setenv("GGBROKER_JOBS_TIMEOUTMINUTE", "100ms")
	h := startBroker(t, nil)
	d := h.createDevice("t1")
	dev := h.connectJobs(d)
	dev.subscribe(jobsTopics("t1")...)
	J := "$aws/things/t1/jobs"
	h.createJob("Job3", `{"a":"b"}`, "t1")
	dev.expect(J + "/notify")
	dev.expect(J + "/notify-next")

	dev.publish(J+"/Job3/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":0}`)
	if r := dev.expect(J + "/Job3/update/rejected"); r["code"] != "InvalidRequest" {
		t.Fatalf("step timeout 0: %v", r)
	}
	dev.publish(J+"/Job3/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":1}`)
	dev.expect(J + "/Job3/update/accepted")
	start := time.Now()
	if n := dev.expect(J + "/notify"); len(field(n, "jobs").(map[string]any)) != 0 {
		t.Fatalf("notify after timeout: %v", n)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("timed out after %v", took)
	}
	if nn := dev.expect(J + "/notify-next"); nn["execution"] != nil {
		t.Fatalf("notify-next after timeout: %v", nn)
	}
	dev.publish(J+"/Job3/get", `{}`)
	if a := dev.expect(J + "/Job3/get/accepted"); field(a, "execution", "status") != "TIMED_OUT" {
		t.Fatalf("after timeout: %v", a)
	}

	// -1 cancels a running timer: Job4's one-"minute" timer is canceled, Job5's three-"minute" timer
	// then expires, and Job4 is still IN_PROGRESS although its deadline passed long before.
	h.createJob("Job4", `{"a":"b"}`, "t1")
	dev.expect(J + "/notify")
	dev.expect(J + "/notify-next")
	dev.publish(J+"/Job4/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":1}`)
	dev.expect(J + "/Job4/update/accepted")
	dev.publish(J+"/Job4/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":-1}`)
	dev.expect(J + "/Job4/update/accepted")
	h.createJob("Job5", `{"a":"b"}`, "t1")
	dev.expect(J + "/notify")
	dev.publish(J+"/Job5/update", `{"status":"IN_PROGRESS","stepTimeoutInMinutes":3}`)
	dev.expect(J + "/Job5/update/accepted")
	n := dev.expect(J + "/notify") // Job5 timed out
	if ip, _ := field(n, "jobs", "IN_PROGRESS").([]any); len(ip) != 1 || ip[0].(map[string]any)["jobId"] != "Job4" {
		t.Fatalf("notify after Job5 timed out: %v", n)
	}
	dev.publish(J+"/Job4/get", `{}`)
	if a := dev.expect(J + "/Job4/get/accepted"); field(a, "execution", "status") != "IN_PROGRESS" {
		t.Fatalf("Job4 after its timer was canceled: %v", a)
	}
	h.record(t, "job execution timed out", map[string]string{"jobId": "Job3", "thingName": "t1"})
}

// TestJobsReconnect: a device that disconnects mid-job gets the job again after it reconnects, with
// the versionNumber it last saw, so it can tell the job from a new one.
func TestJobsReconnect(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("t1")
	dev := h.connectJobs(d)
	dev.subscribe(jobsTopics("t1")...)
	J := "$aws/things/t1/jobs"
	h.createJob("Job1", `{"a":"b"}`, "t1")
	dev.expect(J + "/notify-next")
	dev.publish(J+"/start-next", `{"statusDetails":{"step":"download"}}`)
	a := dev.expect(J + "/start-next/accepted")
	version := num(a, "execution", "versionNumber")
	dev.c.Disconnect(0)

	dev2 := h.connectJobs(d)
	dev2.subscribe(jobsTopics("t1")...)
	dev2.publish(J+"/start-next", `{}`)
	a = dev2.expect(J + "/start-next/accepted")
	if field(a, "execution", "jobId") != "Job1" || field(a, "execution", "status") != "IN_PROGRESS" || num(a, "execution", "versionNumber") != version ||
		field(a, "execution", "statusDetails", "step") != "download" {
		t.Fatalf("after reconnect: %v (version before %d)", a, version)
	}
	dev2.publish(J+"/Job1/update", fmt.Sprintf(`{"status":"SUCCEEDED","expectedVersion":%d}`, version))
	dev2.expect(J + "/Job1/update/accepted")
}

// TestJobsSurviveRestart: jobs, executions and a running step timer are in services.db; after a
// restart the device finds its job as it left it, and the timer still fires.
func TestJobsSurviveRestart(t *testing.T) {
	t.Setenv("GGBROKER_JOBS_TIMEOUTMINUTE", "300ms")
	h := startBroker(t, nil)
	d := h.createDevice("t1")
	dev := h.connectJobs(d)
	J := "$aws/things/t1/jobs"
	h.createJob("Job1", `{"a":"b"}`, "t1")
	h.createJob("Job2", `{"a":"c"}`, "t1")
	dev.publish(J+"/Job1/update", `{"status":"IN_PROGRESS","statusDetails":{"p":"50"},"stepTimeoutInMinutes":2}`)
	dev.expect(J + "/Job1/update/accepted")
	cfg := h.cfg
	h.stop()

	h2 := startWith(t, cfg)
	dev2 := h2.connectJobs(d)
	dev2.subscribe(jobsTopics("t1")...)
	dev2.publish(J+"/get", `{}`)
	a := dev2.expect(J + "/get/accepted")
	ip, _ := a["inProgressJobs"].([]any)
	qd, _ := a["queuedJobs"].([]any)
	if len(ip) != 1 || ip[0].(map[string]any)["jobId"] != "Job1" || len(qd) != 1 {
		t.Fatalf("after restart: %v", a)
	}
	// The stored step timer fires after the restart: Job1 leaves, Job2 is next.
	nn := dev2.expect(J + "/notify-next")
	if field(nn, "execution", "jobId") != "Job2" {
		t.Fatalf("notify-next after the restored timer: %v", nn)
	}
	code, v, _ := h2.api("iot", http.MethodGet, "/things/t1/jobs/Job1", "")
	if code != 200 || field(v, "execution", "status") != "TIMED_OUT" || field(v, "execution", "statusDetails", "detailsMap", "p") != "50" {
		t.Fatalf("DescribeJobExecution after restart: %d %v", code, v)
	}
}

// TestJobsControlPlane: the control-plane operations, their AWS error shapes, and a job's status
// following its executions.
func TestJobsControlPlane(t *testing.T) {
	h := startBroker(t, nil)
	h.createDevice("t1")
	t2d := h.createDevice("t2")
	arn := func(th string) string {
		return fmt.Sprintf("arn:aws:iot:%s:%s:thing/%s", h.cfg.Core.Region, h.cfg.Core.AccountID, th)
	}
	body := fmt.Sprintf(`{"targets":[%q,%q],"document":"{\"op\":\"x\"}","description":"d","timeoutConfig":{"inProgressTimeoutInMinutes":30}}`, arn("t1"), arn("t2"))
	code, v, _ := h.api("iot", "PUT", "/jobs/J1", body)
	if code != 200 || v["jobId"] != "J1" || v["jobArn"] != fmt.Sprintf("arn:aws:iot:%s:%s:job/J1", h.cfg.Core.Region, h.cfg.Core.AccountID) {
		t.Fatalf("CreateJob: %d %v", code, v)
	}

	errCases := []struct {
		name, method, path, body string
		status                   int
		kind, msgHas             string
	}{
		{"exists", "PUT", "/jobs/J1", body, 409, "ResourceAlreadyExistsException", "already exists"},
		{"documentSource", "PUT", "/jobs/J9", fmt.Sprintf(`{"targets":[%q],"documentSource":"https://s3.amazonaws.com/b/k"}`, arn("t1")), 400, "InvalidRequestException", "not available offline"},
		{"presigned placeholder", "PUT", "/jobs/J9", fmt.Sprintf(`{"targets":[%q],"document":"{\"u\":\"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}\"}"}`, arn("t1")), 400, "InvalidRequestException", "S3"},
		{"too big", "PUT", "/jobs/J9", fmt.Sprintf(`{"targets":[%q],"document":"{\"a\":\"%s\"}"}`, arn("t1"), strings.Repeat("x", 32768)), 400, "InvalidRequestException", "32768"},
		{"unknown thing", "PUT", "/jobs/J9", fmt.Sprintf(`{"targets":[%q],"document":"{}"}`, arn("nope")), 400, "InvalidRequestException", "does not exist"},
		{"thing group", "PUT", "/jobs/J9", fmt.Sprintf(`{"targets":["arn:aws:iot:%s:%s:thinggroup/g"],"document":"{}"}`, h.cfg.Core.Region, h.cfg.Core.AccountID), 400, "InvalidRequestException", "thing group"},
		{"no job", "GET", "/jobs/J9", "", 404, "ResourceNotFoundException", "J9"},
		{"delete in progress", "DELETE", "/jobs/J1", "", 409, "InvalidStateTransitionException", "force"},
		{"cancel in-progress execution without force", "PUT", "/things/t2/jobs/J1/cancel", "", 409, "InvalidStateTransitionException", "force"},
	}
	// t2 starts its execution first, so that canceling it needs force.
	dev2 := h.connectJobs(t2d)
	dev2.publish("$aws/things/t2/jobs/J1/update", `{"status":"IN_PROGRESS"}`)
	dev2.expect("$aws/things/t2/jobs/J1/update/accepted")
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			code, v, hdr := h.api("iot", tc.method, tc.path, tc.body)
			if code != tc.status || hdr.Get("x-amzn-ErrorType") != tc.kind || !strings.Contains(fmt.Sprint(v["message"]), tc.msgHas) {
				t.Fatalf("%d %s %v, want %d %s with %q", code, hdr.Get("x-amzn-ErrorType"), v, tc.status, tc.kind, tc.msgHas)
			}
		})
	}

	code, v, _ = h.api("iot", "GET", "/jobs/J1", "")
	if code != 200 || field(v, "job", "status") != "IN_PROGRESS" || num(v, "job", "jobProcessDetails", "numberOfQueuedThings") != 1 ||
		num(v, "job", "jobProcessDetails", "numberOfInProgressThings") != 1 || num(v, "job", "timeoutConfig", "inProgressTimeoutInMinutes") != 30 {
		t.Fatalf("DescribeJob: %d %v", code, v)
	}
	if code, v, _ = h.api("iot", "GET", "/jobs/J1/job-document", ""); code != 200 || v["document"] != `{"op":"x"}` {
		t.Fatalf("GetJobDocument: %d %v", code, v)
	}
	if code, v, _ = h.api("iot", "GET", "/jobs/J1/things", ""); code != 200 || len(v["executionSummaries"].([]any)) != 2 {
		t.Fatalf("ListJobExecutionsForJob: %d %v", code, v)
	}
	if code, v, _ = h.api("iot", "GET", "/things/t2/jobs?status=IN_PROGRESS", ""); code != 200 || len(v["executionSummaries"].([]any)) != 1 {
		t.Fatalf("ListJobExecutionsForThing: %d %v", code, v)
	}
	code, v, _ = h.api("iot", "GET", "/things/t2/jobs/J1", "")
	if code != 200 || field(v, "execution", "status") != "IN_PROGRESS" || num(v, "execution", "approximateSecondsBeforeTimedOut") <= 0 || field(v, "execution", "thingArn") != arn("t2") {
		t.Fatalf("DescribeJobExecution: %d %v", code, v)
	}
	if code, v, _ = h.api("iot", "PATCH", "/jobs/J1", `{"description":"new"}`); code != 200 {
		t.Fatalf("UpdateJob: %d %v", code, v)
	}
	// CancelJobExecution on t1 (QUEUED), then t2 finishes: the snapshot job is COMPLETED.
	if code, v, _ = h.api("iot", "PUT", "/things/t1/jobs/J1/cancel", `{}`); code != 200 {
		t.Fatalf("CancelJobExecution: %d %v", code, v)
	}
	dev2.publish("$aws/things/t2/jobs/J1/update", `{"status":"SUCCEEDED"}`)
	dev2.expect("$aws/things/t2/jobs/J1/update/accepted")
	code, v, _ = h.api("iot", "GET", "/jobs/J1", "")
	if field(v, "job", "status") != "COMPLETED" || field(v, "job", "description") != "new" || field(v, "job", "completedAt") == nil {
		t.Fatalf("job after every execution ended: %d %v", code, v)
	}
	if code, v, _ = h.api("iot", "GET", "/jobs?status=COMPLETED", ""); code != 200 || len(v["jobs"].([]any)) != 1 {
		t.Fatalf("ListJobs: %d %v", code, v)
	}

	// CancelJob with force cancels an IN_PROGRESS execution; then DeleteJob and DeleteJobExecution.
	h.createJob("J2", `{"a":1}`, "t1", "t2")
	dev2.publish("$aws/things/t2/jobs/J2/update", `{"status":"IN_PROGRESS"}`)
	dev2.expect("$aws/things/t2/jobs/J2/update/accepted")
	if code, v, _ = h.api("iot", "PUT", "/jobs/J2/cancel?force=true", `{"comment":"stop"}`); code != 200 {
		t.Fatalf("CancelJob: %d %v", code, v)
	}
	if _, v, _ = h.api("iot", "GET", "/things/t2/jobs/J2", ""); field(v, "execution", "status") != "CANCELED" || field(v, "execution", "forceCanceled") != true {
		t.Fatalf("force-canceled execution: %v", v)
	}
	if _, v, _ = h.api("iot", "GET", "/jobs/J2", ""); field(v, "job", "status") != "CANCELED" || field(v, "job", "forceCanceled") != true || field(v, "job", "comment") != "stop" {
		t.Fatalf("canceled job: %v", v)
	}
	if code, v, _ = h.api("iot", "DELETE", "/things/t1/jobs/J2/executionNumber/1", ""); code != 200 {
		t.Fatalf("DeleteJobExecution: %d %v", code, v)
	}
	if code, _, _ = h.api("iot", "GET", "/things/t1/jobs/J2", ""); code != 404 {
		t.Fatalf("deleted execution: %d", code)
	}
	if code, v, _ = h.api("iot", "DELETE", "/jobs/J2", ""); code != 200 {
		t.Fatalf("DeleteJob: %d %v", code, v)
	}
	if code, _, _ = h.api("iot", "GET", "/jobs/J2", ""); code != 404 {
		t.Fatalf("deleted job: %d", code)
	}
}

// TestJobsHTTPSDevice: the iot-jobs-data API over the device HTTPS listener with the device's own
// certificate, authorized by its policy (the default device policy allows its own thing only).
func TestJobsHTTPSDevice(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDefaultDevice("t1")
	other := h.createDefaultDevice("t2")
	h.createJob("Job1", `{"ToDo":"Reboot"}`, "t1")
	c := h.discoveryClient(d)
	base := "https://" + h.broker.DiscoveryAddr().String()
	call := func(c *http.Client, method, path, body string) (int, map[string]any, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var v map[string]any
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		_ = dec.Decode(&v)
		return resp.StatusCode, v, resp.Header.Get("x-amzn-ErrorType")
	}
	code, v, _ := call(c, "GET", "/things/t1/jobs", "")
	if code != 200 || len(v["queuedJobs"].([]any)) != 1 {
		t.Fatalf("GetPendingJobExecutions: %d %v", code, v)
	}
	code, v, _ = call(c, "PUT", "/things/t1/jobs/$next", `{"statusDetails":{"s":"1"}}`)
	if code != 200 || field(v, "execution", "status") != "IN_PROGRESS" || field(v, "execution", "jobDocument") != `{"ToDo":"Reboot"}` || field(v, "execution", "thingName") != "t1" {
		t.Fatalf("StartNextPendingJobExecution: %d %v", code, v)
	}
	code, v, _ = call(c, "GET", "/things/t1/jobs/Job1?includeJobDocument=false", "")
	if code != 200 || field(v, "execution", "versionNumber") == nil || field(v, "execution", "jobDocument") != nil {
		t.Fatalf("DescribeJobExecution: %d %v", code, v)
	}
	code, v, _ = call(c, "POST", "/things/t1/jobs/Job1", `{"status":"SUCCEEDED","includeJobExecutionState":true}`)
	if code != 200 || field(v, "executionState", "status") != "SUCCEEDED" {
		t.Fatalf("UpdateJobExecution: %d %v", code, v)
	}
	code, v, kind := call(c, "POST", "/things/t1/jobs/Job1", `{"status":"IN_PROGRESS"}`)
	if code != 409 || kind != "InvalidStateTransitionException" || field(v, "executionState", "status") != "SUCCEEDED" {
		t.Fatalf("update after SUCCEEDED: %d %s %v", code, kind, v)
	}
	if code, _, kind = call(c, "GET", "/things/t1/jobs/Nope", ""); code != 404 || kind != "ResourceNotFoundException" {
		t.Fatalf("unknown job: %d %s", code, kind)
	}
	if code, _, kind = call(h.discoveryClient(other), "GET", "/things/t1/jobs", ""); code != 403 {
		t.Fatalf("t2 reading t1's jobs: %d %s, want 403", code, kind)
	}
	h.record(t, "jobs UpdateJobExecution", map[string]string{"protocol": "HTTP", "jobId": "Job1", "status": "Success"})
}

// BenchmarkJobsUpdateRoundTrip measures one device's UpdateJobExecution round trip over MQTT 3.1.1
// and mTLS: publish IN_PROGRESS with statusDetails, the service stores it (fsync) and answers.
func BenchmarkJobsUpdateRoundTrip(b *testing.B) {
	h := startBroker(b, nil)
	d := h.createDevice("t1")
	dev := h.connectJobs(d)
	h.createJob("Job1", `{"a":"b"}`, "t1")
	J := "$aws/things/t1/jobs"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dev.publish(J+"/Job1/update", fmt.Sprintf(`{"status":"IN_PROGRESS","statusDetails":{"n":"%d"}}`, i))
		dev.expectRaw(J + "/Job1/update/accepted")
	}
}

// TestJobsMQTT5 is case 19 for an MQTT 5 device (paho.golang): the answer arrives with no subscription.
func TestJobsMQTT5(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("t1")
	h.createJob("Job1", `{"ToDo":"Reboot"}`, "t1")
	got := make(chan paho.PublishReceived, 10)
	_, c, err := h.connectV5(d, "t1", func(p paho.PublishReceived) { got <- p })
	if err != nil {
		t.Fatal(err)
	}
	if rc := publishV5(t, c, "$aws/things/t1/jobs/start-next", 1, `{"clientToken":"v5"}`); rc != 0 {
		t.Fatalf("PUBACK 0x%02x", rc)
	}
	select {
	case p := <-got:
		var v map[string]any
		if p.Packet.Topic != "$aws/things/t1/jobs/start-next/accepted" || json.Unmarshal(p.Packet.Payload, &v) != nil ||
			field(v, "execution", "jobId") != "Job1" || v["clientToken"] != "v5" {
			t.Fatalf("got %s %s", p.Packet.Topic, p.Packet.Payload)
		}
	case <-time.After(waitFor):
		t.Fatal("no answer")
	}
}

// TestJobsOfflineDeviceGetsNotifyNext: a device with a persistent session (clean session off) that is
// offline when a job is created gets the QoS 1 notify-next when it reconnects, as AWS queues it for a
// persistent session (the "job created after connect never picked up" complaint, the other way round).
func TestJobsOfflineDeviceGetsNotifyNext(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("t1")
	persistent := func(o *pahov3.ClientOptions) { o.SetCleanSession(false) }
	dev := h.connectJobs(d, persistent)
	dev.subscribe("$aws/things/t1/jobs/notify-next")
	dev.c.Disconnect(0)

	h.createJob("Job1", `{"ToDo":"Reboot"}`, "t1")
	dev2 := h.connectJobs(d, persistent)
	if nn := dev2.expect("$aws/things/t1/jobs/notify-next"); field(nn, "execution", "jobId") != "Job1" || num(nn, "execution", "versionNumber") != 1 {
		t.Fatalf("notify-next after reconnect: %v", nn)
	}
}
