package jobs

import (
	"time"
)

// NextJob is the job ID that names a thing's next pending execution (J-MQTT DescribeJobExecution).
const NextJob = "$next"

// ExecutionView is an execution as a device API answer renders it: a copy, with its job's document.
type ExecutionView struct {
	Execution *Execution
	Document  string
}

// PendingExecutions is GetPendingJobExecutions: the thing's IN_PROGRESS and QUEUED executions, each
// oldest first.
func (e *Engine) PendingExecutions(thing string) (inProgress, queued []*Execution) {
	e.mu.Lock()
	defer e.mu.Unlock()
	inProgress, queued = []*Execution{}, []*Execution{}
	for _, x := range e.pending(thing) {
		if x.Status == InProgress {
			inProgress = append(inProgress, x.clone())
		} else {
			queued = append(queued, x.clone())
		}
	}
	return inProgress, queued
}

// StartNext is StartNextPendingJobExecution: nil when nothing is pending (not an error).
func (e *Engine) StartNext(thing string, details map[string]string, step *int64) (*ExecutionView, []Event, error) {
	if err := validateDetails(details); err != nil {
		return nil, nil, err
	}
	if err := validateStepTimeout(step); err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.next(thing)
	if x == nil {
		return nil, nil, nil
	}
	job := e.jobs[x.JobID]
	if x.Status != Queued {
		return &ExecutionView{x.clone(), job.Document}, nil, nil
	}
	t := e.begin()
	applyStartNext(t.execution(x), details, step, job, e.now(), e.minute)
	ev, err := t.commit()
	if err != nil {
		return nil, nil, err
	}
	return &ExecutionView{x.clone(), job.Document}, ev, nil
}

// Describe is DescribeJobExecution: jobID may be "$next" (nil when nothing is pending); number 0 is
// the latest execution.
func (e *Engine) Describe(thing, jobID string, number int64) (*ExecutionView, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var x *Execution
	if jobID == NextJob {
		if x = e.next(thing); x == nil {
			return nil, nil
		}
	} else if x = e.find(thing, jobID, number); x == nil {
		return nil, notFound(thing, jobID, number)
	}
	return &ExecutionView{x.clone(), e.docOf(x.JobID)}, nil
}

func notFound(thing, jobID string, number int64) *Error {
	if number != 0 {
		return errorf(CodeResourceNotFound, "Job execution %s#%d was not found on thing %s", jobID, number, thing)
	}
	return errorf(CodeResourceNotFound, "Job %s was not found on thing %s", jobID, thing)
}

// Update is UpdateJobExecution. The change is on disk when it returns without error.
func (e *Engine) Update(thing, jobID string, number int64, u DeviceUpdate) (*ExecutionView, []Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.find(thing, jobID, number)
	if x == nil {
		// The request's own faults come first, as AWS validates the request before the lookup.
		probe := &Execution{Status: Queued, VersionNumber: -1}
		if err := applyDeviceUpdate(probe, DeviceUpdate{Status: u.Status, StatusDetails: u.StatusDetails, StepTimeoutInMinutes: u.StepTimeoutInMinutes}, nil, time.Time{}, e.minute); err != nil {
			return nil, nil, err
		}
		return nil, nil, notFound(thing, jobID, number)
	}
	job := e.jobs[x.JobID]
	now := e.now()
	candidate := x.clone()
	if err := applyDeviceUpdate(candidate, u, job, now, e.minute); err != nil {
		return nil, nil, err
	}
	t := e.begin()
	*t.execution(x) = *candidate
	ev, err := t.commit()
	if err != nil {
		return nil, nil, err
	}
	return &ExecutionView{x.clone(), job.Document}, ev, nil
}

// NextDeadline is the earliest running timer, zero when none runs.
func (e *Engine) NextDeadline() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	var first time.Time
	for _, l := range e.execs {
		if d := l[len(l)-1].deadline(); !d.IsZero() && (first.IsZero() || d.Before(first)) {
			first = d
		}
	}
	return first
}

// Expire times out every IN_PROGRESS execution whose step timer or in-progress timeout has passed
// (J-DATA stepTimeoutInMinutes; J-CTL timeoutConfig). Deadlines are stored, so a restart re-arms them
// and one that passed while the broker was down expires at the first call.
func (e *Engine) Expire() ([]*Execution, []Event, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	t := e.begin()
	var expired []*Execution
	for _, l := range e.execs {
		x := l[len(l)-1]
		if d := x.deadline(); !d.IsZero() && !d.After(now) {
			serviceTransition(t.execution(x), TimedOut, now)
			expired = append(expired, x.clone())
		}
	}
	if len(expired) == 0 {
		return nil, nil, nil
	}
	ev, err := t.commit()
	if err != nil {
		return nil, nil, err
	}
	return expired, ev, nil
}
