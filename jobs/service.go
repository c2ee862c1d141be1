// Package jobs is the AWS IoT Jobs service, offline: the device API over MQTT
// ($aws/things/THING/jobs/...) and HTTPS (iot-jobs-data), and the jobs operations of the iot control
// plane, with jobs and executions kept in the state directory's service database
// (reference/services/jobs.md).
package jobs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/service"
)

// Name is the service's name and its config key.
const Name = "jobs"

// storeBucket is the service database bucket jobs and executions live in.
const storeBucket = "jobs"

// Service is the Jobs service.
type Service struct {
	cfg      Config
	region   string
	account  string
	registry *auth.Registry
	log      *zap.Logger
	now      func() time.Time

	host    service.Host
	engine  *Engine
	metrics *metrics
	wg      sync.WaitGroup
}

// New builds the service from its config block (jobs:, over defaults.yaml).
func New(deps service.Deps) (service.Service, error) {
	return newService(deps, time.Now)
}

func newService(deps service.Deps, now func() time.Time) (*Service, error) {
	cfg := defaultConfig()
	if err := deps.Config.Decode(Name, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, region: deps.Config.Core.Region, account: deps.Config.Core.AccountID, log: deps.Log, now: now}
	if deps.State != nil {
		s.registry = deps.State.Registry
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	return s, nil
}

// Name implements service.Service.
func (s *Service) Name() string { return Name }

// Start loads the stored jobs, registers the MQTT topics and the HTTP routes, and re-arms the stored
// step and in-progress timers (one that passed while the broker was down expires now).
func (s *Service) Start(ctx context.Context, host service.Host) error {
	if !s.cfg.Enabled {
		return nil
	}
	s.host = host
	s.log = host.Log()
	store, err := host.Store(storeBucket)
	if err != nil {
		return fmt.Errorf("jobs store: %w", err)
	}
	if s.engine, err = NewEngine(store, s.now, s.cfg.TimeoutMinute); err != nil {
		return fmt.Errorf("jobs: load %s: %w", storeBucket, err)
	}
	s.engine.onJobDone = s.logJobDone
	s.metrics = newMetrics(s.engine)
	if err := host.Metrics().Register(s.metrics); err != nil {
		return fmt.Errorf("jobs metrics: %w", err)
	}
	if err := host.Handle(handleFilter, s.handle); err != nil {
		return fmt.Errorf("jobs: handle %s: %w", handleFilter, err)
	}
	if err := s.registerRoutes(host); err != nil {
		return err
	}
	s.expire()
	s.wg.Add(1)
	go s.timers(ctx)
	return nil
}

// Stop waits for the timer loop.
func (s *Service) Stop() error {
	s.wg.Wait()
	return nil
}

// timers sleeps until the earliest stored deadline (or a change that may move it) and times out what
// is due. A failed write is retried at the next wake-up, a second later at most.
func (s *Service) timers(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		wait := time.Hour
		if d := s.engine.NextDeadline(); !d.IsZero() {
			wait = max(d.Sub(s.now()), 0)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.engine.wake:
		case <-t.C:
			if !s.expire() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	}
}

// expire times out what is due and tells the devices; false when the write failed.
func (s *Service) expire() bool {
	expired, ev, err := s.engine.Expire()
	if err != nil {
		s.log.Error("jobs: step timeout not stored", zap.Error(err))
		return false
	}
	for _, x := range expired {
		s.log.Info("job execution timed out",
			zap.String("eventType", "UpdateJobExecution"), zap.String("accountId", s.account), zap.String("status", "Success"),
			zap.String("jobId", x.JobID), zap.String("thingName", x.Thing), zap.Int64("versionNumber", x.VersionNumber),
			zap.String("details", "The destination status is TIMED_OUT."))
	}
	s.publish(ev)
	return true
}
