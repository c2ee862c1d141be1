package jobs

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ggbroker/ggbroker/service"
)

// Store keys: one per job, and one per (thing, job) holding every execution of the job on the thing
// (retries add executions), so that one device update is one key written.
const (
	jobKeyPrefix  = "job/"
	execKeyPrefix = "exec/"
)

func jobKey(id string) string            { return jobKeyPrefix + id }
func execKey(thing, jobID string) string { return execKeyPrefix + thing + "/" + jobID }

type thingJob struct{ thing, job string }

// Engine holds every job and execution, in memory and in the store. A change is written (one atomic,
// fsynced Store.Update) before it is applied in memory and before any answer or event leaves, so an
// acknowledged update survives a crash. One mutex serializes changes: they are small and rare.
type Engine struct {
	mu      sync.Mutex
	store   service.Store
	now     func() time.Time
	minute  time.Duration
	jobs    map[string]*Job
	execs   map[thingJob][]*Execution // by executionNumber, ascending
	byThing map[string][]string       // thing -> job IDs with executions there
	seq     uint64
	// onJobDone is told when a job completes (for the ReportFinalJobExecutionCount record).
	onJobDone func(job *Job, details string)
	// wake is signalled when a timer may have changed.
	wake chan struct{}
}

// NewEngine loads the jobs and executions held in store.
func NewEngine(store service.Store, now func() time.Time, minute time.Duration) (*Engine, error) {
	e := &Engine{
		store: store, now: now, minute: minute,
		jobs: map[string]*Job{}, execs: map[thingJob][]*Execution{}, byThing: map[string][]string{},
		wake: make(chan struct{}, 1),
	}
	err := store.ForEach(jobKeyPrefix, func(key string, v []byte) error {
		var j Job
		if err := json.Unmarshal(v, &j); err != nil {
			return fmt.Errorf("stored job %s: %w", key, err)
		}
		e.jobs[j.ID] = &j
		e.seq = max(e.seq, j.Seq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = store.ForEach(execKeyPrefix, func(key string, v []byte) error {
		var list []*Execution
		if err := json.Unmarshal(v, &list); err != nil || len(list) == 0 {
			return fmt.Errorf("stored job executions %s: %v", key, err)
		}
		k := thingJob{list[0].Thing, list[0].JobID}
		e.execs[k] = list
		e.byThing[k.thing] = append(e.byThing[k.thing], k.job)
		for _, x := range list {
			e.seq = max(e.seq, x.Seq)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Engine) nextSeq() uint64 { e.seq++; return e.seq }

// latest is the current execution of job on thing, or nil.
func (e *Engine) latest(thing, job string) *Execution {
	l := e.execs[thingJob{thing, job}]
	if len(l) == 0 {
		return nil
	}
	return l[len(l)-1]
}

// find is the execution of job on thing with the given number (0: the latest).
func (e *Engine) find(thing, job string, number int64) *Execution {
	if number == 0 {
		return e.latest(thing, job)
	}
	for _, x := range e.execs[thingJob{thing, job}] {
		if x.ExecutionNumber == number {
			return x
		}
	}
	return nil
}

// latestOf is the current execution on every target of job.
func (e *Engine) latestOf(job *Job) []*Execution {
	out := make([]*Execution, 0, len(job.Things))
	for _, t := range job.Things {
		if x := e.latest(t, job.ID); x != nil {
			out = append(out, x)
		}
	}
	return out
}

// pending lists a thing's QUEUED and IN_PROGRESS executions in "$next" order.
func (e *Engine) pending(thing string) []*Execution {
	var out []*Execution
	for _, id := range e.byThing[thing] {
		if x := e.latest(thing, id); x != nil && x.Status.Pending() {
			out = append(out, x)
		}
	}
	slices.SortFunc(out, func(a, b *Execution) int {
		if a.before(b) {
			return -1
		}
		return 1
	})
	return out
}

// next is the execution "$next" names on thing: the oldest IN_PROGRESS one, else the oldest QUEUED.
func (e *Engine) next(thing string) *Execution {
	if p := e.pending(thing); len(p) > 0 {
		return p[0]
	}
	return nil
}

// txn is one change in progress: what it touched, with the values to restore if the write fails.
type txn struct {
	e         *Engine
	undoJobs  map[string]*Job
	undoExecs map[thingJob][]*Execution
	before    map[string]thingView
	doneJobs  []*Job
}

// thingView is what a thing's devices were last told: its pending set and its next execution.
type thingView struct {
	pending []string // jobId#executionNumber, in order
	next    string
}

func (e *Engine) view(thing string) thingView {
	var v thingView
	for _, x := range e.pending(thing) {
		v.pending = append(v.pending, fmt.Sprintf("%s#%d", x.JobID, x.ExecutionNumber))
	}
	if len(v.pending) > 0 {
		v.next = v.pending[0]
	}
	return v
}

func (e *Engine) begin() *txn {
	return &txn{e: e, undoJobs: map[string]*Job{}, undoExecs: map[thingJob][]*Execution{}, before: map[string]thingView{}}
}

// touchJob records the job's state before the change.
func (t *txn) touchJob(id string) {
	if _, ok := t.undoJobs[id]; ok {
		return
	}
	if j := t.e.jobs[id]; j != nil {
		t.undoJobs[id] = j.clone()
	} else {
		t.undoJobs[id] = nil
	}
}

// touchExecs records a (thing, job)'s executions and the thing's view before the change.
func (t *txn) touchExecs(thing, job string) {
	k := thingJob{thing, job}
	if _, ok := t.before[thing]; !ok {
		t.before[thing] = t.e.view(thing)
	}
	if _, ok := t.undoExecs[k]; ok {
		return
	}
	var saved []*Execution
	for _, x := range t.e.execs[k] {
		saved = append(saved, x.clone())
	}
	t.undoExecs[k] = saved
}

func (t *txn) putJob(j *Job) {
	t.touchJob(j.ID)
	t.e.jobs[j.ID] = j
}

func (t *txn) deleteJob(id string) {
	t.touchJob(id)
	delete(t.e.jobs, id)
}

// execution returns the latest execution for in-place change, recording its state first.
func (t *txn) execution(x *Execution) *Execution {
	t.touchExecs(x.Thing, x.JobID)
	return x
}

func (t *txn) addExecution(x *Execution) {
	t.touchExecs(x.Thing, x.JobID)
	k := thingJob{x.Thing, x.JobID}
	if len(t.e.execs[k]) == 0 {
		t.e.byThing[x.Thing] = append(t.e.byThing[x.Thing], x.JobID)
	}
	t.e.execs[k] = append(t.e.execs[k], x)
}

// removeExecution drops one execution (number 0: all of them).
func (t *txn) removeExecution(thing, job string, number int64) {
	t.touchExecs(thing, job)
	k := thingJob{thing, job}
	l := slices.DeleteFunc(t.e.execs[k], func(x *Execution) bool { return number == 0 || x.ExecutionNumber == number })
	if len(l) == 0 {
		delete(t.e.execs, k)
		t.e.byThing[thing] = slices.DeleteFunc(t.e.byThing[thing], func(id string) bool { return id == job })
		if len(t.e.byThing[thing]) == 0 {
			delete(t.e.byThing, thing)
		}
		return
	}
	t.e.execs[k] = l
}

// settle derives the status of every job the change touched (completion, abort, retries) before the
// write.
func (t *txn) settle(now time.Time) {
	ids := map[string]bool{}
	for k := range t.undoExecs {
		ids[k.job] = true
	}
	for id := range ids {
		job := t.e.jobs[id]
		if job == nil {
			continue
		}
		latest := t.e.latestOf(job)
		for _, x := range latest {
			if _, touched := t.undoExecs[thingJob{x.Thing, x.JobID}]; !touched {
				continue
			}
			if r := retryOf(x, job, now, t.e.nextSeq()); r != nil {
				t.addExecution(r)
			}
		}
		latest = t.e.latestOf(job)
		if abort, why := shouldAbort(job, latest); abort {
			j := job.clone()
			j.Status, j.ReasonCode, j.Comment, j.LastUpdatedAt = JobCanceled, "ABORTED", "abortConfig: "+why, now
			t.putJob(j)
			for _, x := range latest {
				if x.Status == Queued {
					serviceTransition(t.execution(x), Canceled, now)
				}
			}
			continue
		}
		if s := deriveJobStatus(job, latest); s != job.Status {
			j := job.clone()
			j.Status, j.LastUpdatedAt = s, now
			if s == JobCompleted {
				j.CompletedAt = now
				t.doneJobs = append(t.doneJobs, j)
			}
			t.putJob(j)
		}
	}
}

// commit writes everything the change touched in one atomic update. On failure it restores the memory
// state and returns the error: nothing was acknowledged.
func (t *txn) commit() ([]Event, error) {
	now := t.e.now()
	t.settle(now)
	err := t.e.store.Update(func(tx service.Tx) error {
		for id := range t.undoJobs {
			if j := t.e.jobs[id]; j != nil {
				raw, err := json.Marshal(j)
				if err != nil {
					return err
				}
				if err := tx.Put(jobKey(id), raw); err != nil {
					return err
				}
			} else if err := tx.Delete(jobKey(id)); err != nil {
				return err
			}
		}
		for k := range t.undoExecs {
			if l := t.e.execs[k]; len(l) > 0 {
				raw, err := json.Marshal(l)
				if err != nil {
					return err
				}
				if err := tx.Put(execKey(k.thing, k.job), raw); err != nil {
					return err
				}
			} else if err := tx.Delete(execKey(k.thing, k.job)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.rollback()
		return nil, fmt.Errorf("store jobs change: %w", err)
	}
	if t.e.onJobDone != nil {
		for _, j := range t.doneJobs {
			t.e.onJobDone(j, finalCounts(j, t.e.latestOf(j)))
		}
	}
	select {
	case t.e.wake <- struct{}{}:
	default:
	}
	return t.events(now), nil
}

func (t *txn) rollback() {
	for id, j := range t.undoJobs {
		if j == nil {
			delete(t.e.jobs, id)
		} else {
			t.e.jobs[id] = j
		}
	}
	for k, l := range t.undoExecs {
		had := len(t.e.execs[k]) > 0
		if len(l) == 0 {
			delete(t.e.execs, k)
			if had {
				t.e.byThing[k.thing] = slices.DeleteFunc(t.e.byThing[k.thing], func(id string) bool { return id == k.job })
			}
			continue
		}
		if !had {
			t.e.byThing[k.thing] = append(t.e.byThing[k.thing], k.job)
		}
		t.e.execs[k] = l
	}
}

// Event is a notify or notify-next message for one thing.
type Event struct {
	Thing   string
	Topic   string
	Payload []byte
}

// events compares each touched thing's view before and after: notify when the pending set gained or
// lost an execution (not when one only moved from QUEUED to IN_PROGRESS), notify-next when the next
// execution is another one (J-MQTT; PY-JOBS walkthrough).
func (t *txn) events(now time.Time) []Event {
	things := make([]string, 0, len(t.before))
	for th := range t.before {
		things = append(things, th)
	}
	slices.Sort(things)
	var out []Event
	for _, th := range things {
		before, after := t.before[th], t.e.view(th)
		if !sameSet(before.pending, after.pending) {
			out = append(out, Event{Thing: th, Topic: topicPrefix(th) + "notify", Payload: t.e.notifyPayload(th, now)})
		}
		if before.next != after.next {
			out = append(out, Event{Thing: th, Topic: topicPrefix(th) + "notify-next", Payload: t.e.notifyNextPayload(th, now)})
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func topicPrefix(thing string) string { return "$aws/things/" + thing + "/jobs/" }

// thingOfARN is the thing name of arn:aws:iot:<region>:<account>:thing/<name>.
func thingOfARN(arn, region, account string) (string, *Error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iot" {
		return "", errorf(CodeInvalidRequest, "target %q is not an AWS IoT thing ARN (arn:aws:iot:%s:%s:thing/NAME)", arn, region, account)
	}
	kind, name, _ := strings.Cut(parts[5], "/")
	switch {
	case kind == "thinggroup":
		return "", errorf(CodeInvalidRequest, "target %q is a thing group; offline, jobs target things by their ARN (arn:aws:iot:%s:%s:thing/NAME)", arn, region, account)
	case kind != "thing" || !validThingName(name):
		return "", errorf(CodeInvalidRequest, "target %q is not an AWS IoT thing ARN (arn:aws:iot:%s:%s:thing/NAME)", arn, region, account)
	case parts[3] != region || parts[4] != account:
		return "", errorf(CodeInvalidRequest, "target %q is not in this broker's region and account (%s, %s)", arn, region, account)
	}
	return name, nil
}
