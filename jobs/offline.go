package jobs

import (
	"fmt"
	"time"

	"github.com/ggbroker/ggbroker/service"
)

// Offline is the jobs control plane on the service database of a broker that is not running, for the
// CLI: the same checks and the same stored form as CreateJob over the API, without devices to notify
// (none is connected; a device learns of its jobs with get or start-next when it connects, as the SDK
// samples do).
type Offline struct{ s *Service }

// OpenOffline loads the jobs held in store (the "jobs" bucket of services.db).
func OpenOffline(deps service.Deps, store service.Store) (*Offline, error) {
	s, err := newService(deps, time.Now)
	if err != nil {
		return nil, err
	}
	if s.engine, err = NewEngine(store, s.now, s.cfg.TimeoutMinute); err != nil {
		return nil, fmt.Errorf("jobs: load %s: %w", storeBucket, err)
	}
	return &Offline{s: s}, nil
}

// StoreBucket is the services.db bucket the jobs live in.
const StoreBucket = storeBucket

// CreateJob creates a SNAPSHOT job with an inline document for the named things, which must exist in
// the registry.
func (o *Offline) CreateJob(id, document string, things []string) (*Job, error) {
	in := CreateJobInput{JobID: id, Document: document}
	for _, th := range things {
		if !validThingName(th) {
			return nil, errorf(CodeInvalidRequest, "thing name %q must be 1-%d characters of [a-zA-Z0-9:_-]", th, maxThingNameLen)
		}
		if err := o.s.checkThing(th); err != nil {
			return nil, err
		}
		in.Things = append(in.Things, th)
		in.Targets = append(in.Targets, o.s.thingARN(th))
	}
	job, _, err := o.s.engine.CreateJob(in)
	return job, err
}

// Jobs lists every job, oldest first.
func (o *Offline) Jobs() []*Job { return o.s.engine.Jobs("", "") }

// Describe is the job, how many of its things' current executions are in each state, and every
// execution.
func (o *Offline) Describe(id string) (*Job, map[ExecutionStatus]int, []*Execution, error) {
	j, err := o.s.engine.Job(id)
	if err != nil {
		return nil, nil, nil, err
	}
	execs, err := o.s.engine.ExecutionsOfJob(id, "")
	if err != nil {
		return nil, nil, nil, err
	}
	return j, o.s.engine.JobCounts(id), execs, nil
}

// CancelJob cancels a job (with force, its IN_PROGRESS executions too).
func (o *Offline) CancelJob(id string, force bool) (*Job, error) {
	j, _, err := o.s.engine.CancelJob(id, force, "", "")
	return j, err
}

// JobARN is the job's ARN in the configured region and account.
func (o *Offline) JobARN(id string) string { return o.s.jobARN(id) }
