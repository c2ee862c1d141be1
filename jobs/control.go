package jobs

import (
	"encoding/json"
	"fmt"
	"slices"
)

// CreateJobInput is what CreateJob takes (J-CTL), already decoded.
type CreateJobInput struct {
	JobID           string
	Description     string
	Document        string
	TargetSelection string
	// Things are the target thing names (the ARNs already resolved); Targets the ARNs as given.
	Things  []string
	Targets []string
	Timeout *TimeoutConfig
	Abort   *AbortConfig
	Retry   *RetryConfig
	Rollout json.RawMessage
}

func validateConfigs(timeout *TimeoutConfig, abort *AbortConfig, retry *RetryConfig) *Error {
	if timeout != nil && (timeout.InProgressTimeoutInMinutes < 1 || timeout.InProgressTimeoutInMinutes > maxStepTimeoutMin) {
		return errorf(CodeInvalidRequest, "timeoutConfig.inProgressTimeoutInMinutes %d must be between 1 and %d", timeout.InProgressTimeoutInMinutes, maxStepTimeoutMin)
	}
	if abort != nil {
		if len(abort.CriteriaList) == 0 {
			return errorf(CodeInvalidRequest, "abortConfig.criteriaList needs at least one criterion")
		}
		for i, c := range abort.CriteriaList {
			switch {
			case c.Action != "CANCEL":
				return errorf(CodeInvalidRequest, "abortConfig.criteriaList[%d].action %q must be CANCEL", i, c.Action)
			case !slices.Contains([]string{"FAILED", "REJECTED", "TIMED_OUT", "ALL"}, c.FailureType):
				return errorf(CodeInvalidRequest, "abortConfig.criteriaList[%d].failureType %q must be FAILED, REJECTED, TIMED_OUT or ALL", i, c.FailureType)
			case c.MinNumberOfExecutedThings < 1:
				return errorf(CodeInvalidRequest, "abortConfig.criteriaList[%d].minNumberOfExecutedThings must be at least 1", i)
			case c.ThresholdPercentage <= 0 || c.ThresholdPercentage > 100:
				return errorf(CodeInvalidRequest, "abortConfig.criteriaList[%d].thresholdPercentage must be above 0 and at most 100", i)
			}
		}
	}
	if retry != nil {
		if len(retry.CriteriaList) == 0 || len(retry.CriteriaList) > 2 {
			return errorf(CodeInvalidRequest, "jobExecutionsRetryConfig.criteriaList needs one or two criteria")
		}
		for i, c := range retry.CriteriaList {
			if !slices.Contains([]string{"FAILED", "TIMED_OUT", "ALL"}, c.FailureType) {
				return errorf(CodeInvalidRequest, "jobExecutionsRetryConfig.criteriaList[%d].failureType %q must be FAILED, TIMED_OUT or ALL", i, c.FailureType)
			}
			if c.NumberOfRetries < 0 || c.NumberOfRetries > 10 {
				return errorf(CodeInvalidRequest, "jobExecutionsRetryConfig.criteriaList[%d].numberOfRetries %d must be between 0 and 10", i, c.NumberOfRetries)
			}
		}
	}
	return nil
}

// CreateJob creates a job and queues one execution per target thing: each thing's devices get a
// notify, and a notify-next when the new execution is their next (J-MQTT; PY-JOBS).
func (e *Engine) CreateJob(in CreateJobInput) (*Job, []Event, error) {
	if !validJobID(in.JobID) {
		return nil, nil, errorf(CodeInvalidRequest, "jobId %q must be 1-%d characters of [a-zA-Z0-9_-]", in.JobID, maxJobIDLen)
	}
	if len(in.Description) > maxDescriptionLen {
		return nil, nil, errorf(CodeInvalidRequest, "description is longer than %d characters", maxDescriptionLen)
	}
	if err := validateDocument(in.Document); err != nil {
		return nil, nil, err
	}
	switch in.TargetSelection {
	case "":
		in.TargetSelection = Snapshot
	case Snapshot, Continuous:
	default:
		return nil, nil, errorf(CodeInvalidRequest, "targetSelection %q must be SNAPSHOT or CONTINUOUS", in.TargetSelection)
	}
	if len(in.Things) == 0 {
		return nil, nil, errorf(CodeInvalidRequest, "targets needs at least one thing ARN")
	}
	if err := validateConfigs(in.Timeout, in.Abort, in.Retry); err != nil {
		return nil, nil, err
	}
	things := slices.Compact(slices.Sorted(slices.Values(in.Things)))
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.jobs[in.JobID]; ok {
		return nil, nil, errorf(CodeResourceAlreadyExists, "Job %s already exists", in.JobID)
	}
	now := e.now()
	job := &Job{
		ID: in.JobID, Description: in.Description, Document: in.Document, TargetSelection: in.TargetSelection,
		Targets: in.Targets, Things: things, Status: JobInProgress, CreatedAt: now, LastUpdatedAt: now,
		Timeout: in.Timeout, Abort: in.Abort, Retry: in.Retry, Rollout: in.Rollout, Seq: e.nextSeq(),
	}
	t := e.begin()
	t.putJob(job)
	for _, th := range things {
		t.addExecution(&Execution{
			JobID: job.ID, Thing: th, ExecutionNumber: 1, Status: Queued,
			QueuedAt: now, LastUpdatedAt: now, VersionNumber: 1, Seq: e.nextSeq(),
		})
	}
	ev, err := t.commit()
	if err != nil {
		return nil, nil, err
	}
	return job.clone(), ev, nil
}

// JobUpdate is UpdateJob's input: nil fields stay as they are.
type JobUpdate struct {
	Description *string
	Timeout     *TimeoutConfig
	Abort       *AbortConfig
	Retry       *RetryConfig
	Rollout     json.RawMessage
}

// UpdateJob changes a job's description and configuration. A new timeoutConfig applies to executions
// that start afterwards.
func (e *Engine) UpdateJob(id string, u JobUpdate) error {
	if err := validateConfigs(u.Timeout, u.Abort, u.Retry); err != nil {
		return err
	}
	if u.Description != nil && len(*u.Description) > maxDescriptionLen {
		return errorf(CodeInvalidRequest, "description is longer than %d characters", maxDescriptionLen)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.jobs[id]
	if old == nil {
		return jobNotFound(id)
	}
	j := old.clone()
	if u.Description != nil {
		j.Description = *u.Description
	}
	if u.Timeout != nil {
		j.Timeout = u.Timeout
	}
	if u.Abort != nil {
		j.Abort = u.Abort
	}
	if u.Retry != nil {
		j.Retry = u.Retry
	}
	if u.Rollout != nil {
		j.Rollout = u.Rollout
	}
	j.LastUpdatedAt = e.now()
	t := e.begin()
	t.putJob(j)
	_, err := t.commit()
	return err
}

func jobNotFound(id string) *Error { return errorf(CodeResourceNotFound, "Job %s does not exist", id) }

// CancelJob cancels a job: its QUEUED executions become CANCELED, and with force its IN_PROGRESS ones
// too (J-LIFE). A completed job cannot be canceled.
func (e *Engine) CancelJob(id string, force bool, comment, reasonCode string) (*Job, []Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.jobs[id]
	if old == nil {
		return nil, nil, jobNotFound(id)
	}
	if old.Status == JobCompleted {
		return nil, nil, errorf(CodeInvalidStateTransition, "Job %s is COMPLETED and cannot be canceled", id)
	}
	now := e.now()
	j := old.clone()
	j.Status, j.LastUpdatedAt = JobCanceled, now
	j.ForceCanceled = j.ForceCanceled || force
	if comment != "" {
		j.Comment = comment
	}
	if reasonCode != "" {
		j.ReasonCode = reasonCode
	}
	t := e.begin()
	t.putJob(j)
	for _, x := range e.latestOf(j) {
		if x.Status == Queued || (force && x.Status == InProgress) {
			y := t.execution(x)
			y.ForceCanceled = x.Status == InProgress
			serviceTransition(y, Canceled, now)
		}
	}
	ev, err := t.commit()
	if err != nil {
		return nil, nil, err
	}
	return j.clone(), ev, nil
}

// DeleteJob deletes a job and its executions. A job with pending executions needs force.
func (e *Engine) DeleteJob(id string, force bool) ([]Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j := e.jobs[id]
	if j == nil {
		return nil, jobNotFound(id)
	}
	if !force && j.Status == JobInProgress {
		return nil, errorf(CodeInvalidStateTransition, "Job %s is IN_PROGRESS; cancel it first or delete with force", id)
	}
	t := e.begin()
	t.deleteJob(id)
	for _, th := range j.Things {
		if e.latest(th, id) != nil {
			t.removeExecution(th, id, 0)
		}
	}
	return t.commit()
}

// Job is DescribeJob and GetJobDocument.
func (e *Engine) Job(id string) (*Job, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j := e.jobs[id]
	if j == nil {
		return nil, jobNotFound(id)
	}
	return j.clone(), nil
}

// JobCounts is how many things' current executions are in each state (DescribeJob's jobProcessDetails).
func (e *Engine) JobCounts(id string) map[ExecutionStatus]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[ExecutionStatus]int{}
	if j := e.jobs[id]; j != nil {
		for _, x := range e.latestOf(j) {
			out[x.Status]++
		}
	}
	return out
}

// Jobs lists the jobs, oldest first, optionally of one status and target selection.
func (e *Engine) Jobs(status JobStatus, selection string) []*Job {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*Job
	for _, j := range e.jobs {
		if (status == "" || j.Status == status) && (selection == "" || j.TargetSelection == selection) {
			out = append(out, j.clone())
		}
	}
	slices.SortFunc(out, func(a, b *Job) int { return int(a.Seq) - int(b.Seq) })
	return out
}

// Execution is the control plane's DescribeJobExecution (number 0: the latest).
func (e *Engine) Execution(thing, jobID string, number int64) (*Execution, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.find(thing, jobID, number); x != nil {
		return x.clone(), nil
	}
	return nil, notFound(thing, jobID, number)
}

// ExecutionsOfJob lists a job's executions (every thing, every execution number), optionally of one
// status, in thing order.
func (e *Engine) ExecutionsOfJob(id string, status ExecutionStatus) ([]*Execution, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j := e.jobs[id]
	if j == nil {
		return nil, jobNotFound(id)
	}
	var out []*Execution
	for _, th := range j.Things {
		for _, x := range e.execs[thingJob{th, id}] {
			if status == "" || x.Status == status {
				out = append(out, x.clone())
			}
		}
	}
	return out, nil
}

// ExecutionsOfThing lists a thing's executions, optionally of one job and one status, oldest first.
func (e *Engine) ExecutionsOfThing(thing, jobID string, status ExecutionStatus) []*Execution {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*Execution
	for _, id := range e.byThing[thing] {
		if jobID != "" && id != jobID {
			continue
		}
		for _, x := range e.execs[thingJob{thing, id}] {
			if status == "" || x.Status == status {
				out = append(out, x.clone())
			}
		}
	}
	slices.SortFunc(out, func(a, b *Execution) int {
		if a.queuedBefore(b) {
			return -1
		}
		return 1
	})
	return out
}

// CancelExecution is CancelJobExecution: a QUEUED execution becomes CANCELED; an IN_PROGRESS one only
// with force; a terminal one refuses (InvalidStateTransition).
func (e *Engine) CancelExecution(thing, jobID string, force bool, expected *int64, details map[string]string) ([]Event, error) {
	if err := validateDetails(details); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.latest(thing, jobID)
	if x == nil {
		return nil, notFound(thing, jobID, 0)
	}
	if expected != nil && *expected != x.VersionNumber {
		return nil, &Error{Code: CodeVersionConflict, Message: fmt.Sprintf("expectedVersion %d does not match the job execution's version %d", *expected, x.VersionNumber), State: x.clone()}
	}
	if x.Status.Terminal() || (x.Status == InProgress && !force) {
		msg := fmt.Sprintf("Job execution %s on %s is %s", jobID, thing, x.Status)
		if x.Status == InProgress {
			msg += "; cancel it with force"
		}
		return nil, &Error{Code: CodeInvalidStateTransition, Message: msg, State: x.clone()}
	}
	t := e.begin()
	y := t.execution(x)
	y.ForceCanceled = x.Status == InProgress
	if details != nil {
		y.StatusDetails = details
	}
	serviceTransition(y, Canceled, e.now())
	return t.commit()
}

// DeleteExecution is DeleteJobExecution: a pending execution needs force.
func (e *Engine) DeleteExecution(thing, jobID string, number int64, force bool) ([]Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.find(thing, jobID, number)
	if x == nil || number == 0 {
		return nil, notFound(thing, jobID, number)
	}
	if x.Status.Pending() && !force {
		return nil, &Error{Code: CodeInvalidStateTransition, Message: fmt.Sprintf("Job execution %s#%d on %s is %s; delete it with force", jobID, number, thing, x.Status), State: x.clone()}
	}
	t := e.begin()
	t.removeExecution(thing, jobID, number)
	return t.commit()
}

// Counts is how many current executions are in each state, and how many jobs (for the metrics).
func (e *Engine) Counts() (execs map[ExecutionStatus]int, jobs map[JobStatus]int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	execs, jobs = map[ExecutionStatus]int{}, map[JobStatus]int{}
	for _, l := range e.execs {
		execs[l[len(l)-1].Status]++
	}
	for _, j := range e.jobs {
		jobs[j.Status]++
	}
	return execs, jobs
}
