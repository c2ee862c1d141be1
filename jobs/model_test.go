package jobs

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func i64(v int64) *int64 { return &v }

// TestDeviceTransitions: which states a device update may go from and to, and what the refusals say.
func TestDeviceTransitions(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cases := []struct {
		from     ExecutionStatus
		to       ExecutionStatus
		wantCode ErrorCode
	}{
		{Queued, InProgress, ""},
		{Queued, Succeeded, ""},
		{Queued, Failed, ""},
		{Queued, Rejected, ""},
		{InProgress, InProgress, ""},
		{InProgress, Succeeded, ""},
		{InProgress, Failed, ""},
		{InProgress, Rejected, ""},
		{Queued, Queued, CodeInvalidRequest},
		{InProgress, Canceled, CodeInvalidRequest},
		{InProgress, TimedOut, CodeInvalidRequest},
		{InProgress, Removed, CodeInvalidRequest},
		{InProgress, "", CodeInvalidRequest},
		{InProgress, "DONE", CodeInvalidRequest},
	}
	for _, terminal := range []ExecutionStatus{Succeeded, Failed, TimedOut, Rejected, Removed, Canceled} {
		for _, to := range []ExecutionStatus{InProgress, Succeeded, Failed, Rejected} {
			cases = append(cases, struct {
				from, to ExecutionStatus
				wantCode ErrorCode
			}{terminal, to, CodeInvalidStateTransition})
		}
	}
	for _, tc := range cases {
		t.Run(string(tc.from)+"->"+string(tc.to), func(t *testing.T) {
			x := &Execution{JobID: "j", Thing: "t", Status: tc.from, VersionNumber: 3, QueuedAt: now.Add(-time.Minute)}
			err := applyDeviceUpdate(x, DeviceUpdate{Status: tc.to}, &Job{}, now, time.Minute)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if x.Status != tc.to || x.VersionNumber != 4 || !x.LastUpdatedAt.Equal(now) {
					t.Fatalf("got %s v%d at %v, want %s v4 at %v", x.Status, x.VersionNumber, x.LastUpdatedAt, tc.to, now)
				}
				if wantStarted := tc.from == Queued && tc.to == InProgress; wantStarted != x.StartedAt.Equal(now) && tc.from == Queued {
					t.Fatalf("startedAt %v after %s->%s", x.StartedAt, tc.from, tc.to)
				}
				return
			}
			if err == nil || err.Code != tc.wantCode {
				t.Fatalf("error %v, want %s", err, tc.wantCode)
			}
			if x.Status != tc.from || x.VersionNumber != 3 {
				t.Fatalf("refused update changed the execution: %s v%d", x.Status, x.VersionNumber)
			}
			if tc.wantCode == CodeInvalidStateTransition && (err.State == nil || err.State.Status != tc.from || err.State.VersionNumber != 3) {
				t.Fatalf("InvalidStateTransition carries state %+v, want %s v3", err.State, tc.from)
			}
		})
	}
}

// TestUpdateFields: expectedVersion, statusDetails replacement and limits, step timers.
func TestUpdateFields(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	long := strings.Repeat("x", 1025)
	cases := []struct {
		name      string
		u         DeviceUpdate
		job       *Job
		wantCode  ErrorCode
		check     func(t *testing.T, x *Execution)
		startWith map[string]string
	}{
		{name: "expected version matches", u: DeviceUpdate{Status: InProgress, ExpectedVersion: i64(1)}},
		{name: "expected version mismatch", u: DeviceUpdate{Status: InProgress, ExpectedVersion: i64(5)}, wantCode: CodeVersionMismatch},
		{name: "details replace", startWith: map[string]string{"a": "1"}, u: DeviceUpdate{Status: InProgress, StatusDetails: map[string]string{"b": "2"}},
			check: func(t *testing.T, x *Execution) {
				if len(x.StatusDetails) != 1 || x.StatusDetails["b"] != "2" {
					t.Fatalf("details %v", x.StatusDetails)
				}
			}},
		{name: "details kept when omitted", startWith: map[string]string{"a": "1"}, u: DeviceUpdate{Status: InProgress},
			check: func(t *testing.T, x *Execution) {
				if x.StatusDetails["a"] != "1" {
					t.Fatalf("details %v", x.StatusDetails)
				}
			}},
		{name: "bad key", u: DeviceUpdate{Status: InProgress, StatusDetails: map[string]string{"bad key!": "x"}}, wantCode: CodeInvalidRequest},
		{name: "key too long", u: DeviceUpdate{Status: InProgress, StatusDetails: map[string]string{strings.Repeat("k", 129): "x"}}, wantCode: CodeInvalidRequest},
		{name: "empty value", u: DeviceUpdate{Status: InProgress, StatusDetails: map[string]string{"k": ""}}, wantCode: CodeInvalidRequest},
		{name: "value too long", u: DeviceUpdate{Status: InProgress, StatusDetails: map[string]string{"k": long}}, wantCode: CodeInvalidRequest},
		{name: "value with control character", u: DeviceUpdate{Status: InProgress, StatusDetails: map[string]string{"k": "a\nb"}}, wantCode: CodeInvalidRequest},
		{name: "value 1024 characters", u: DeviceUpdate{Status: InProgress, StatusDetails: map[string]string{"k": long[:1024]}}},
		{name: "step timeout 0", u: DeviceUpdate{Status: InProgress, StepTimeoutInMinutes: i64(0)}, wantCode: CodeInvalidRequest},
		{name: "step timeout 10081", u: DeviceUpdate{Status: InProgress, StepTimeoutInMinutes: i64(10081)}, wantCode: CodeInvalidRequest},
		{name: "step timeout starts", u: DeviceUpdate{Status: InProgress, StepTimeoutInMinutes: i64(3)},
			check: func(t *testing.T, x *Execution) {
				if !x.StepDeadline.Equal(now.Add(3*time.Minute)) || !x.deadline().Equal(x.StepDeadline) {
					t.Fatalf("step deadline %v", x.StepDeadline)
				}
			}},
		{name: "in-progress timeout from the job", job: &Job{Timeout: &TimeoutConfig{InProgressTimeoutInMinutes: 10}}, u: DeviceUpdate{Status: InProgress, StepTimeoutInMinutes: i64(20)},
			check: func(t *testing.T, x *Execution) {
				if !x.InProgressDeadline.Equal(now.Add(10*time.Minute)) || !x.deadline().Equal(x.InProgressDeadline) {
					t.Fatalf("deadlines step %v in-progress %v", x.StepDeadline, x.InProgressDeadline)
				}
			}},
		{name: "terminal stops timers", u: DeviceUpdate{Status: Succeeded, StepTimeoutInMinutes: i64(3)},
			check: func(t *testing.T, x *Execution) {
				if !x.deadline().IsZero() || !x.StepDeadline.IsZero() {
					t.Fatalf("deadline %v after SUCCEEDED", x.deadline())
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := &Execution{Status: Queued, VersionNumber: 1, StatusDetails: tc.startWith}
			job := tc.job
			if job == nil {
				job = &Job{}
			}
			err := applyDeviceUpdate(x, tc.u, job, now, time.Minute)
			if tc.wantCode != "" {
				if err == nil || err.Code != tc.wantCode {
					t.Fatalf("error %v, want %s", err, tc.wantCode)
				}
				if tc.wantCode == CodeVersionMismatch && (err.State == nil || err.State.VersionNumber != 1) {
					t.Fatalf("VersionMismatch state %+v", err.State)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, x)
			}
		})
	}
}

// TestStepTimerCancel: -1 stops a running step timer.
func TestStepTimerCancel(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	x := &Execution{Status: Queued, VersionNumber: 1}
	if err := applyDeviceUpdate(x, DeviceUpdate{Status: InProgress, StepTimeoutInMinutes: i64(1)}, &Job{}, now, time.Minute); err != nil || x.deadline().IsZero() {
		t.Fatalf("start: %v, deadline %v", err, x.deadline())
	}
	if err := applyDeviceUpdate(x, DeviceUpdate{Status: InProgress, StepTimeoutInMinutes: i64(-1)}, &Job{}, now, time.Minute); err != nil || !x.deadline().IsZero() {
		t.Fatalf("cancel: %v, deadline %v", err, x.deadline())
	}
}

func TestParseVersion(t *testing.T) {
	cases := []struct {
		raw  string
		want int64
		nilV bool
		bad  bool
	}{
		{raw: "", nilV: true}, {raw: "null", nilV: true}, {raw: "2", want: 2}, {raw: `"2"`, want: 2},
		{raw: `" 7 "`, want: 7}, {raw: `"two"`, bad: true}, {raw: "2.5", bad: true}, {raw: "true", bad: true},
	}
	for _, tc := range cases {
		v, err := parseVersion(json.RawMessage(tc.raw))
		switch {
		case tc.bad:
			if err == nil || err.Code != CodeInvalidRequest {
				t.Errorf("%q: %v, %v; want InvalidRequest", tc.raw, v, err)
			}
		case tc.nilV:
			if v != nil || err != nil {
				t.Errorf("%q: %v, %v; want nil", tc.raw, v, err)
			}
		case err != nil || v == nil || *v != tc.want:
			t.Errorf("%q: %v, %v; want %d", tc.raw, v, err, tc.want)
		}
	}
}

func TestValidateDocument(t *testing.T) {
	big := `{"a":"` + strings.Repeat("x", maxDocumentChars-8) + `"}`
	cases := []struct {
		name, doc, wantIn string
	}{
		{name: "object", doc: `{"ToDo":"Reboot"}`},
		{name: "32768 characters", doc: big},
		{name: "too long", doc: big[:len(big)-2] + `x"}`, wantIn: "at most 32768"},
		{name: "empty", doc: "", wantIn: "documentSource"},
		{name: "not json", doc: "{nope", wantIn: "not valid JSON"},
		{name: "array", doc: "[1]", wantIn: "JSON object"},
		{name: "presigned url", doc: `{"url":"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}"}`, wantIn: "S3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validateDocument(tc.doc)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Code != CodeInvalidRequest || !strings.Contains(err.Message, tc.wantIn) {
				t.Fatalf("error %v, want InvalidRequest mentioning %q", err, tc.wantIn)
			}
		})
	}
}

func TestDeriveJobStatus(t *testing.T) {
	ex := func(ss ...ExecutionStatus) []*Execution {
		var out []*Execution
		for _, s := range ss {
			out = append(out, &Execution{Status: s})
		}
		return out
	}
	cases := []struct {
		name string
		job  Job
		l    []*Execution
		want JobStatus
	}{
		{"snapshot all terminal", Job{Status: JobInProgress, TargetSelection: Snapshot}, ex(Succeeded, Failed, Canceled), JobCompleted},
		{"snapshot one pending", Job{Status: JobInProgress, TargetSelection: Snapshot}, ex(Succeeded, InProgress), JobInProgress},
		{"snapshot one queued", Job{Status: JobInProgress, TargetSelection: Snapshot}, ex(Queued), JobInProgress},
		{"continuous never completes", Job{Status: JobInProgress, TargetSelection: Continuous}, ex(Succeeded), JobInProgress},
		{"canceled stays canceled", Job{Status: JobCanceled, TargetSelection: Snapshot}, ex(Succeeded), JobCanceled},
	}
	for _, tc := range cases {
		if got := deriveJobStatus(&tc.job, tc.l); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestAbortAndRetry(t *testing.T) {
	ex := func(ss ...ExecutionStatus) []*Execution {
		var out []*Execution
		for _, s := range ss {
			out = append(out, &Execution{Status: s})
		}
		return out
	}
	abort := &AbortConfig{CriteriaList: []AbortCriteria{{Action: "CANCEL", FailureType: "FAILED", MinNumberOfExecutedThings: 2, ThresholdPercentage: 50}}}
	cases := []struct {
		name string
		l    []*Execution
		want bool
	}{
		{"below minimum executed", ex(Failed, Queued, Queued), false},
		{"threshold reached", ex(Failed, Succeeded, Queued), true},
		{"below threshold", ex(Failed, Succeeded, Succeeded, Queued), false},
		{"other failure type", ex(Rejected, Rejected, Queued), false},
	}
	for _, tc := range cases {
		got, _ := shouldAbort(&Job{Status: JobInProgress, Abort: abort}, tc.l)
		if got != tc.want {
			t.Errorf("abort %s: %v, want %v", tc.name, got, tc.want)
		}
	}
	job := &Job{Status: JobInProgress, Retry: &RetryConfig{CriteriaList: []RetryCriteria{{FailureType: "FAILED", NumberOfRetries: 1}}}}
	now := time.Unix(1_800_000_000, 0)
	failed := &Execution{JobID: "j", Thing: "t", ExecutionNumber: 1, Status: Failed, VersionNumber: 3}
	r := retryOf(failed, job, now, 9)
	if r == nil || r.ExecutionNumber != 2 || r.Status != Queued || r.VersionNumber != 1 || r.RetryAttempt != 1 {
		t.Fatalf("retry %+v", r)
	}
	if again := retryOf(&Execution{Status: Failed, RetryAttempt: 1}, job, now, 10); again != nil {
		t.Fatalf("second retry of one allowed: %+v", again)
	}
	if timedOut := retryOf(&Execution{Status: TimedOut}, job, now, 11); timedOut != nil {
		t.Fatalf("retry of TIMED_OUT with a FAILED criterion: %+v", timedOut)
	}
}
