package jobs

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ExecutionStatus is the state of one job execution (reference/services/jobs.md §3, J-LIFE).
type ExecutionStatus string

// The execution states. A device may set only IN_PROGRESS, SUCCEEDED, FAILED and REJECTED; the service
// sets QUEUED, TIMED_OUT, REMOVED and CANCELED.
const (
	Queued     ExecutionStatus = "QUEUED"
	InProgress ExecutionStatus = "IN_PROGRESS"
	Succeeded  ExecutionStatus = "SUCCEEDED"
	Failed     ExecutionStatus = "FAILED"
	TimedOut   ExecutionStatus = "TIMED_OUT"
	Rejected   ExecutionStatus = "REJECTED"
	Removed    ExecutionStatus = "REMOVED"
	Canceled   ExecutionStatus = "CANCELED"
)

// AllExecutionStatuses lists the states in AWS' order (the metrics and ReportFinalJobExecutionCount use it).
var AllExecutionStatuses = []ExecutionStatus{Queued, InProgress, Succeeded, Failed, TimedOut, Rejected, Removed, Canceled}

// Pending is QUEUED or IN_PROGRESS: the executions a device is told about.
func (s ExecutionStatus) Pending() bool { return s == Queued || s == InProgress }

// Terminal is every state but the pending ones: no update leaves it.
func (s ExecutionStatus) Terminal() bool { return !s.Pending() }

// deviceSettable is what UpdateJobExecution's status may be (J-MQTT).
func (s ExecutionStatus) deviceSettable() bool {
	return s == InProgress || s == Succeeded || s == Failed || s == Rejected
}

// JobStatus is a job's state on the control plane (J-LIFE).
type JobStatus string

const (
	JobInProgress         JobStatus = "IN_PROGRESS"
	JobCompleted          JobStatus = "COMPLETED"
	JobCanceled           JobStatus = "CANCELED"
	JobDeletionInProgress JobStatus = "DELETION_IN_PROGRESS"
)

// Target selections.
const (
	Snapshot   = "SNAPSHOT"
	Continuous = "CONTINUOUS"
)

// Limits from the iot-jobs-data and iot service models (J-DATA, J-CTL).
const (
	maxDocumentChars  = 32768
	maxStepTimeoutMin = 10080
	maxDetailKeyLen   = 128
	maxDetailValueLen = 1024
	maxJobIDLen       = 64
	maxThingNameLen   = 128
	maxDescriptionLen = 2028
)

var (
	jobIDPattern     = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	thingNamePattern = regexp.MustCompile(`^[a-zA-Z0-9:_-]+$`)
	detailKeyPattern = regexp.MustCompile(`^[a-zA-Z0-9:_-]+$`)
)

// validJobID is J-DATA's JobId: 1-64 of [a-zA-Z0-9_-].
func validJobID(id string) bool { return len(id) <= maxJobIDLen && jobIDPattern.MatchString(id) }

// validThingName is J-DATA's ThingName: 1-128 of [a-zA-Z0-9:_-].
func validThingName(n string) bool {
	return len(n) <= maxThingNameLen && thingNamePattern.MatchString(n)
}

// TimeoutConfig is CreateJob's timeoutConfig: how long an execution may stay IN_PROGRESS.
type TimeoutConfig struct {
	InProgressTimeoutInMinutes int64 `json:"inProgressTimeoutInMinutes,omitempty"`
}

// AbortCriteria is one of abortConfig.criteriaList: cancel the job once enough executions failed.
type AbortCriteria struct {
	Action                    string  `json:"action"`
	FailureType               string  `json:"failureType"`
	MinNumberOfExecutedThings int     `json:"minNumberOfExecutedThings"`
	ThresholdPercentage       float64 `json:"thresholdPercentage"`
}

// AbortConfig is CreateJob's abortConfig.
type AbortConfig struct {
	CriteriaList []AbortCriteria `json:"criteriaList"`
}

// RetryCriteria is one of jobExecutionsRetryConfig.criteriaList.
type RetryCriteria struct {
	FailureType     string `json:"failureType"`
	NumberOfRetries int    `json:"numberOfRetries"`
}

// RetryConfig is CreateJob's jobExecutionsRetryConfig.
type RetryConfig struct {
	CriteriaList []RetryCriteria `json:"criteriaList"`
}

// Job is one job as stored: its document, targets and configuration, and its status (derived from its
// executions).
type Job struct {
	ID              string          `json:"jobId"`
	Description     string          `json:"description,omitempty"`
	Document        string          `json:"document"`
	TargetSelection string          `json:"targetSelection"`
	Targets         []string        `json:"targets"`
	Things          []string        `json:"things"`
	Status          JobStatus       `json:"status"`
	CreatedAt       time.Time       `json:"createdAt"`
	LastUpdatedAt   time.Time       `json:"lastUpdatedAt"`
	CompletedAt     time.Time       `json:"completedAt,omitzero"`
	Timeout         *TimeoutConfig  `json:"timeoutConfig,omitempty"`
	Abort           *AbortConfig    `json:"abortConfig,omitempty"`
	Retry           *RetryConfig    `json:"jobExecutionsRetryConfig,omitempty"`
	Rollout         json.RawMessage `json:"jobExecutionsRolloutConfig,omitempty"`
	ForceCanceled   bool            `json:"forceCanceled,omitempty"`
	Comment         string          `json:"comment,omitempty"`
	ReasonCode      string          `json:"reasonCode,omitempty"`
	// Seq orders jobs (and their executions) by creation when timestamps tie.
	Seq uint64 `json:"seq"`
}

func (j *Job) clone() *Job {
	c := *j
	c.Targets = slices.Clone(j.Targets)
	c.Things = slices.Clone(j.Things)
	return &c
}

// Execution is one job execution on one thing. A retry makes a new execution with the next
// executionNumber; the earlier ones stay for DescribeJobExecution with an executionNumber.
type Execution struct {
	JobID           string            `json:"jobId"`
	Thing           string            `json:"thingName"`
	ExecutionNumber int64             `json:"executionNumber"`
	Status          ExecutionStatus   `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        time.Time         `json:"queuedAt"`
	StartedAt       time.Time         `json:"startedAt,omitzero"`
	LastUpdatedAt   time.Time         `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
	RetryAttempt    int               `json:"retryAttempt,omitempty"`
	ForceCanceled   bool              `json:"forceCanceled,omitempty"`
	// StepDeadline is when the step timer (stepTimeoutInMinutes) expires; zero when none runs.
	StepDeadline time.Time `json:"stepDeadline,omitzero"`
	// InProgressDeadline is when the job's timeoutConfig expires this execution; zero when none.
	InProgressDeadline time.Time `json:"inProgressDeadline,omitzero"`
	// Seq orders executions queued in the same instant: creation order.
	Seq uint64 `json:"seq"`
}

func (e *Execution) clone() *Execution {
	c := *e
	c.StatusDetails = maps.Clone(e.StatusDetails)
	return &c
}

// deadline is the earlier of the running timers, zero when none runs.
func (e *Execution) deadline() time.Time {
	switch {
	case e.Status != InProgress:
		return time.Time{}
	case e.StepDeadline.IsZero():
		return e.InProgressDeadline
	case e.InProgressDeadline.IsZero() || e.StepDeadline.Before(e.InProgressDeadline):
		return e.StepDeadline
	}
	return e.InProgressDeadline
}

// before orders pending executions the way AWS picks "$next": IN_PROGRESS first, then QUEUED, each
// oldest first (J-MQTT StartNextPendingJobExecution).
func (e *Execution) before(o *Execution) bool {
	if (e.Status == InProgress) != (o.Status == InProgress) {
		return e.Status == InProgress
	}
	return e.queuedBefore(o)
}

func (e *Execution) queuedBefore(o *Execution) bool {
	if !e.QueuedAt.Equal(o.QueuedAt) {
		return e.QueuedAt.Before(o.QueuedAt)
	}
	return e.Seq < o.Seq
}

// ErrorCode is the code of a rejected device request (J-ERR), a string on the wire.
type ErrorCode string

const (
	CodeInvalidTopic           ErrorCode = "InvalidTopic"
	CodeInvalidJSON            ErrorCode = "InvalidJson"
	CodeInvalidRequest         ErrorCode = "InvalidRequest"
	CodeInvalidStateTransition ErrorCode = "InvalidStateTransition"
	CodeResourceNotFound       ErrorCode = "ResourceNotFound"
	CodeVersionMismatch        ErrorCode = "VersionMismatch"
	CodeInternalError          ErrorCode = "InternalError"
	CodeRequestThrottled       ErrorCode = "RequestThrottled"
	CodeTerminalStateReached   ErrorCode = "TerminalStateReached"
	// Control-plane only codes.
	CodeResourceAlreadyExists ErrorCode = "ResourceAlreadyExists"
	CodeVersionConflict       ErrorCode = "VersionConflict"
	CodeConflict              ErrorCode = "Conflict"
)

// Error is a refused request: a code, a message, and for InvalidStateTransition and VersionMismatch
// the execution's state as it stands.
type Error struct {
	Code    ErrorCode
	Message string
	State   *Execution
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

func errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// DeviceUpdate is an UpdateJobExecution request as the model sees it.
type DeviceUpdate struct {
	Status ExecutionStatus
	// StatusDetails replaces the execution's details; nil leaves them unchanged.
	StatusDetails map[string]string
	// ExpectedVersion, when set, must equal the execution's versionNumber.
	ExpectedVersion *int64
	// StepTimeoutInMinutes starts (or restarts) the step timer; -1 stops it; nil leaves it.
	StepTimeoutInMinutes *int64
}

// validateDetails checks statusDetails against J-DATA's DetailsKey and DetailsValue.
func validateDetails(d map[string]string) *Error {
	for k, v := range d {
		if len(k) == 0 || len(k) > maxDetailKeyLen || !detailKeyPattern.MatchString(k) {
			return errorf(CodeInvalidRequest, "statusDetails key %q must be 1-%d characters of [a-zA-Z0-9:_-]", k, maxDetailKeyLen)
		}
		if v == "" || utf8.RuneCountInString(v) > maxDetailValueLen {
			return errorf(CodeInvalidRequest, "statusDetails value of %q must be 1-%d characters", k, maxDetailValueLen)
		}
		if strings.IndexFunc(v, unicode.IsControl) >= 0 {
			return errorf(CodeInvalidRequest, "statusDetails value of %q contains a control character", k)
		}
	}
	return nil
}

// validateStepTimeout checks stepTimeoutInMinutes: 1-10080, or -1 to stop the timer (J-DATA).
func validateStepTimeout(m *int64) *Error {
	if m == nil || *m == -1 || (*m >= 1 && *m <= maxStepTimeoutMin) {
		return nil
	}
	return errorf(CodeInvalidRequest, "stepTimeoutInMinutes %d must be between 1 and %d, or -1 to cancel the step timer", *m, maxStepTimeoutMin)
}

// applyDeviceUpdate is UpdateJobExecution on e (changed in place only when it returns nil). QUEUED may
// go to any state a device sets (J-LIFE shows REJECTED from QUEUED; PY-JOBS moves QUEUED to IN_PROGRESS
// with update; AWS does not forbid reporting SUCCEEDED or FAILED without IN_PROGRESS first). A terminal
// execution refuses every update with InvalidStateTransition (J-ERR).
func applyDeviceUpdate(e *Execution, u DeviceUpdate, job *Job, now time.Time, minute time.Duration) *Error {
	if u.Status == "" {
		return errorf(CodeInvalidRequest, "status is required on every update")
	}
	if !u.Status.deviceSettable() {
		return errorf(CodeInvalidRequest, "status %q is not one of IN_PROGRESS, SUCCEEDED, FAILED, REJECTED", u.Status)
	}
	if err := validateDetails(u.StatusDetails); err != nil {
		return err
	}
	if err := validateStepTimeout(u.StepTimeoutInMinutes); err != nil {
		return err
	}
	if u.ExpectedVersion != nil && *u.ExpectedVersion != e.VersionNumber {
		return &Error{Code: CodeVersionMismatch, Message: fmt.Sprintf("expectedVersion %d does not match the job execution's version %d", *u.ExpectedVersion, e.VersionNumber), State: e.clone()}
	}
	if e.Status.Terminal() {
		return &Error{Code: CodeInvalidStateTransition, Message: fmt.Sprintf("Job execution %s on %s cannot go from %s to %s", e.JobID, e.Thing, e.Status, u.Status), State: e.clone()}
	}
	if u.Status == InProgress && e.Status == Queued {
		startExecution(e, job, now, minute)
	}
	e.Status = u.Status
	if u.StatusDetails != nil {
		e.StatusDetails = maps.Clone(u.StatusDetails)
	}
	if u.Status == InProgress && u.StepTimeoutInMinutes != nil {
		setStepTimer(e, *u.StepTimeoutInMinutes, now, minute)
	}
	if u.Status.Terminal() {
		e.StepDeadline, e.InProgressDeadline = time.Time{}, time.Time{}
	}
	e.VersionNumber++
	e.LastUpdatedAt = now
	return nil
}

// startExecution moves a QUEUED execution to IN_PROGRESS: startedAt, and the job's in-progress timer.
func startExecution(e *Execution, job *Job, now time.Time, minute time.Duration) {
	e.Status = InProgress
	e.StartedAt = now
	if job != nil && job.Timeout != nil && job.Timeout.InProgressTimeoutInMinutes > 0 {
		e.InProgressDeadline = now.Add(time.Duration(job.Timeout.InProgressTimeoutInMinutes) * minute)
	}
}

func setStepTimer(e *Execution, minutes int64, now time.Time, minute time.Duration) {
	if minutes == -1 {
		e.StepDeadline = time.Time{}
		return
	}
	e.StepDeadline = now.Add(time.Duration(minutes) * minute)
}

// applyStartNext is StartNextPendingJobExecution on the next execution: a QUEUED one starts with the
// given details and step timer; an IN_PROGRESS one is returned unchanged (PY-JOBS FAQ). It reports
// whether e changed.
func applyStartNext(e *Execution, details map[string]string, step *int64, job *Job, now time.Time, minute time.Duration) bool {
	if e.Status != Queued {
		return false
	}
	startExecution(e, job, now, minute)
	if details != nil {
		e.StatusDetails = maps.Clone(details)
	}
	if step != nil {
		setStepTimer(e, *step, now, minute)
	}
	e.VersionNumber++
	e.LastUpdatedAt = now
	return true
}

// serviceTransition moves a pending execution to a state the service sets (TIMED_OUT, CANCELED,
// REMOVED): the version moves on, the timers stop.
func serviceTransition(e *Execution, to ExecutionStatus, now time.Time) {
	e.Status = to
	e.StepDeadline, e.InProgressDeadline = time.Time{}, time.Time{}
	e.VersionNumber++
	e.LastUpdatedAt = now
}

// retryOf is the execution a failed or timed-out one is retried with, per jobExecutionsRetryConfig, or
// nil. The retry is a new execution (next executionNumber, version 1) with retryAttempt counting up.
func retryOf(e *Execution, job *Job, now time.Time, seq uint64) *Execution {
	if job.Retry == nil || job.Status != JobInProgress || (e.Status != Failed && e.Status != TimedOut) {
		return nil
	}
	allowed := 0
	for _, c := range job.Retry.CriteriaList {
		if c.FailureType == "ALL" || c.FailureType == string(e.Status) {
			allowed = max(allowed, c.NumberOfRetries)
		}
	}
	if e.RetryAttempt >= allowed {
		return nil
	}
	return &Execution{
		JobID: e.JobID, Thing: e.Thing, ExecutionNumber: e.ExecutionNumber + 1, Status: Queued,
		QueuedAt: now, LastUpdatedAt: now, VersionNumber: 1, RetryAttempt: e.RetryAttempt + 1, Seq: seq,
	}
}

// shouldAbort applies abortConfig to the job's current executions (the latest per thing): once at least
// minNumberOfExecutedThings have finished and the failures of the criterion's type reach
// thresholdPercentage of them, the job is canceled.
func shouldAbort(job *Job, latest []*Execution) (bool, string) {
	if job.Abort == nil || job.Status != JobInProgress {
		return false, ""
	}
	executed := 0
	count := map[ExecutionStatus]int{}
	for _, e := range latest {
		if e.Status.Terminal() {
			executed++
			count[e.Status]++
		}
	}
	for _, c := range job.Abort.CriteriaList {
		failures := count[ExecutionStatus(c.FailureType)]
		if c.FailureType == "ALL" {
			failures = count[Failed] + count[Rejected] + count[TimedOut]
		}
		if executed == 0 || executed < c.MinNumberOfExecutedThings {
			continue
		}
		if pct := float64(failures) * 100 / float64(executed); failures > 0 && pct >= c.ThresholdPercentage {
			return true, fmt.Sprintf("%d of %d executed things %s (%.0f%%, threshold %.0f%%)", failures, executed, c.FailureType, pct, c.ThresholdPercentage)
		}
	}
	return false, ""
}

// deriveJobStatus is a job's status from its executions: a SNAPSHOT job IN_PROGRESS is COMPLETED once
// every thing's latest execution is terminal; CONTINUOUS jobs never complete (J-LIFE).
func deriveJobStatus(job *Job, latest []*Execution) JobStatus {
	if job.Status != JobInProgress || job.TargetSelection == Continuous {
		return job.Status
	}
	for _, e := range latest {
		if e.Status.Pending() {
			return JobInProgress
		}
	}
	return JobCompleted
}

// finalCounts is the details of the ReportFinalJobExecutionCount log entry (cwl-format.md).
func finalCounts(job *Job, latest []*Execution) string {
	count := map[ExecutionStatus]int{}
	for _, e := range latest {
		count[e.Status]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Job %s completed.", job.ID)
	for _, s := range []ExecutionStatus{Queued, InProgress, Failed, Succeeded, Canceled, Rejected, Removed, TimedOut} {
		fmt.Fprintf(&b, " %s job execution count: %d", s, count[s])
	}
	return b.String()
}

// parseVersion reads expectedVersion, a JSON number or a numeric string (some SDKs send "2",
// embedded-C#1906).
func parseVersion(raw json.RawMessage) (*int64, *Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	s := string(raw)
	if s[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, errorf(CodeInvalidRequest, "expectedVersion is not a number")
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return nil, errorf(CodeInvalidRequest, "expectedVersion %s is not a whole number", raw)
	}
	return &v, nil
}

// validateDocument checks a job document: JSON, at most 32768 characters (J-DATA JobDocument), and no
// S3 presigned-URL placeholder, which needs S3 and an IAM role that do not exist offline.
func validateDocument(doc string) *Error {
	if doc == "" {
		return errorf(CodeInvalidRequest, "document is required (documentSource, a document in S3, is not available offline)")
	}
	if utf8.RuneCountInString(doc) > maxDocumentChars {
		return errorf(CodeInvalidRequest, "document is %d characters; a job document is at most %d", utf8.RuneCountInString(doc), maxDocumentChars)
	}
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return errorf(CodeInvalidRequest, "document is not valid JSON: %v", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return errorf(CodeInvalidRequest, "document must be a JSON object")
	}
	if strings.Contains(doc, "${aws:iot:s3-presigned-url:") {
		return errorf(CodeInvalidRequest, "document uses an S3 presigned-URL placeholder (${aws:iot:s3-presigned-url:...}); S3 is not available offline: put the URL the device should use into the document")
	}
	return nil
}
