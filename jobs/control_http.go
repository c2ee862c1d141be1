package jobs

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"go.uber.org/zap"
)

// createJobBody is CreateJob's body (J-CTL). The fields that need S3, IAM roles, templates, packages or
// schedules are read only to refuse them with a message that says why.
type createJobBody struct {
	Targets                    []string          `json:"targets"`
	Document                   *string           `json:"document"`
	DocumentSource             *string           `json:"documentSource"`
	Description                string            `json:"description"`
	TargetSelection            string            `json:"targetSelection"`
	TimeoutConfig              *TimeoutConfig    `json:"timeoutConfig"`
	AbortConfig                *AbortConfig      `json:"abortConfig"`
	JobExecutionsRetryConfig   *RetryConfig      `json:"jobExecutionsRetryConfig"`
	JobExecutionsRolloutConfig json.RawMessage   `json:"jobExecutionsRolloutConfig"`
	PresignedURLConfig         json.RawMessage   `json:"presignedUrlConfig"`
	DocumentParameters         map[string]string `json:"documentParameters"`
	JobTemplateArn             *string           `json:"jobTemplateArn"`
	DestinationPackageVersions []string          `json:"destinationPackageVersions"`
	SchedulingConfig           json.RawMessage   `json:"schedulingConfig"`
	NamespaceID                *string           `json:"namespaceId"`
	Tags                       json.RawMessage   `json:"tags"`
}

// unsupported names the first CreateJob option that cannot act offline.
func (b *createJobBody) unsupported() error {
	switch {
	case b.DocumentSource != nil:
		return errorf(CodeInvalidRequest, "documentSource (a job document in S3) is not available offline: pass the document inline in document")
	case len(b.PresignedURLConfig) > 0 && string(b.PresignedURLConfig) != "null":
		return errorf(CodeInvalidRequest, "presignedUrlConfig (S3 presigned URLs) is not available offline: put the URL the device should use into the document")
	case b.JobTemplateArn != nil:
		return errorf(CodeInvalidRequest, "jobTemplateArn: job templates are not available offline: pass the document inline")
	case len(b.DocumentParameters) > 0:
		return errorf(CodeInvalidRequest, "documentParameters need a managed job template, which is not available offline")
	case len(b.DestinationPackageVersions) > 0:
		return errorf(CodeInvalidRequest, "destinationPackageVersions (AWS IoT software package catalog) is not available offline")
	case len(b.SchedulingConfig) > 0 && string(b.SchedulingConfig) != "null":
		return errorf(CodeInvalidRequest, "schedulingConfig is not supported offline: create the job when it should start")
	case b.NamespaceID != nil:
		return errorf(CodeInvalidRequest, "namespaceId (jobs for AWS IoT FleetWise and other services) is not supported offline")
	}
	return nil
}

func (s *Service) createJob(w http.ResponseWriter, r *http.Request) {
	var b createJobBody
	if err := decodeBody(r, &b); err != nil {
		writeError(w, controlError(err))
		return
	}
	if err := b.unsupported(); err != nil {
		writeError(w, controlError(err))
		return
	}
	in := CreateJobInput{
		JobID: r.PathValue("jobId"), Description: b.Description, TargetSelection: b.TargetSelection,
		Targets: b.Targets, Timeout: b.TimeoutConfig, Abort: b.AbortConfig, Retry: b.JobExecutionsRetryConfig,
		Rollout: b.JobExecutionsRolloutConfig,
	}
	if b.Document != nil {
		in.Document = *b.Document
	}
	for _, arn := range b.Targets {
		thing, err := thingOfARN(arn, s.region, s.account)
		if err != nil {
			writeError(w, controlError(err))
			return
		}
		if err := s.checkThing(thing); err != nil {
			writeError(w, controlError(err))
			return
		}
		in.Things = append(in.Things, thing)
	}
	job, err := s.CreateJob(in)
	if err != nil {
		ae := controlError(err)
		if ae.kind == "ResourceAlreadyExistsException" {
			ae.extra = map[string]any{"resourceId": in.JobID, "resourceArn": s.jobARN(in.JobID)}
		}
		writeError(w, ae)
		return
	}
	out := map[string]any{"jobArn": s.jobARN(job.ID), "jobId": job.ID}
	if job.Description != "" {
		out["description"] = job.Description
	}
	writeJSON(w, out)
}

// CreateJob creates a job and tells the targets' devices (for the API and the CLI).
func (s *Service) CreateJob(in CreateJobInput) (*Job, error) {
	job, ev, err := s.engine.CreateJob(in)
	if err != nil {
		return nil, err
	}
	s.log.Info("job created", zap.String("eventType", "CreateJob"), zap.String("accountId", s.account),
		zap.String("jobId", job.ID), zap.Strings("thingName", job.Things), zap.String("targetSelection", job.TargetSelection))
	s.publish(ev)
	return job, nil
}

// checkThing refuses a target the registry does not know: a typo would otherwise queue a job no
// device ever sees.
func (s *Service) checkThing(name string) error {
	if s.registry == nil {
		return nil
	}
	_, ok, err := s.registry.Thing(name)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if !ok {
		return errorf(CodeInvalidRequest, "Thing %s does not exist in the registry (create it with `ggbroker device create %s`)", name, name)
	}
	return nil
}

func (s *Service) jobARN(id string) string {
	return fmt.Sprintf("arn:aws:iot:%s:%s:job/%s", s.region, s.account, id)
}

func (s *Service) thingARN(name string) string {
	return fmt.Sprintf("arn:aws:iot:%s:%s:thing/%s", s.region, s.account, name)
}

// jobJSON is a Job (J-CTL DescribeJob).
func (s *Service) jobJSON(j *Job) map[string]any {
	counts := s.engine.JobCounts(j.ID)
	out := map[string]any{
		"jobArn": s.jobARN(j.ID), "jobId": j.ID, "targetSelection": j.TargetSelection, "status": j.Status,
		"forceCanceled": j.ForceCanceled, "targets": j.Targets, "isConcurrent": false,
		"createdAt": epoch(j.CreatedAt), "lastUpdatedAt": epoch(j.LastUpdatedAt),
		"jobProcessDetails": map[string]any{
			"numberOfCanceledThings":   counts[Canceled],
			"numberOfSucceededThings":  counts[Succeeded],
			"numberOfFailedThings":     counts[Failed],
			"numberOfRejectedThings":   counts[Rejected],
			"numberOfQueuedThings":     counts[Queued],
			"numberOfInProgressThings": counts[InProgress],
			"numberOfRemovedThings":    counts[Removed],
			"numberOfTimedOutThings":   counts[TimedOut],
		},
	}
	if j.Description != "" {
		out["description"] = j.Description
	}
	if !j.CompletedAt.IsZero() {
		out["completedAt"] = epoch(j.CompletedAt)
	}
	if j.Comment != "" {
		out["comment"] = j.Comment
	}
	if j.ReasonCode != "" {
		out["reasonCode"] = j.ReasonCode
	}
	if j.Timeout != nil {
		out["timeoutConfig"] = j.Timeout
	}
	if j.Abort != nil {
		out["abortConfig"] = j.Abort
	}
	if j.Retry != nil {
		out["jobExecutionsRetryConfig"] = j.Retry
	}
	if len(j.Rollout) > 0 {
		out["jobExecutionsRolloutConfig"] = j.Rollout
	}
	return out
}

func (s *Service) describeJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.engine.Job(r.PathValue("jobId"))
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	writeJSON(w, map[string]any{"job": s.jobJSON(j)})
}

func (s *Service) getJobDocument(w http.ResponseWriter, r *http.Request) {
	j, err := s.engine.Job(r.PathValue("jobId"))
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	writeJSON(w, map[string]any{"document": j.Document})
}

// page cuts a list by maxResults (1-250, default 250) and nextToken (an offset).
func page[T any](r *http.Request, all []T) ([]T, *string, error) {
	maxResults := 250
	if v := r.URL.Query().Get("maxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 250 {
			return nil, nil, errorf(CodeInvalidRequest, "maxResults %q must be between 1 and 250", v)
		}
		maxResults = n
	}
	start := 0
	if v := r.URL.Query().Get("nextToken"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > len(all) {
			return nil, nil, errorf(CodeInvalidRequest, "nextToken %q is not valid", v)
		}
		start = n
	}
	end := min(start+maxResults, len(all))
	var next *string
	if end < len(all) {
		t := strconv.Itoa(end)
		next = &t
	}
	return all[start:end], next, nil
}

func (s *Service) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	jobs := s.engine.Jobs(JobStatus(q.Get("status")), q.Get("targetSelection"))
	if q.Get("thingGroupName") != "" || q.Get("thingGroupId") != "" || q.Get("namespaceId") != "" {
		jobs = nil // no job targets a thing group offline
	}
	items, next, err := page(r, jobs)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	out := make([]map[string]any, 0, len(items))
	for _, j := range items {
		m := map[string]any{
			"jobArn": s.jobARN(j.ID), "jobId": j.ID, "targetSelection": j.TargetSelection, "status": j.Status,
			"isConcurrent": false, "createdAt": epoch(j.CreatedAt), "lastUpdatedAt": epoch(j.LastUpdatedAt),
		}
		if !j.CompletedAt.IsZero() {
			m["completedAt"] = epoch(j.CompletedAt)
		}
		out = append(out, m)
	}
	resp := map[string]any{"jobs": out}
	if next != nil {
		resp["nextToken"] = *next
	}
	writeJSON(w, resp)
}

func (s *Service) updateJob(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Description                *string         `json:"description"`
		TimeoutConfig              *TimeoutConfig  `json:"timeoutConfig"`
		AbortConfig                *AbortConfig    `json:"abortConfig"`
		JobExecutionsRetryConfig   *RetryConfig    `json:"jobExecutionsRetryConfig"`
		JobExecutionsRolloutConfig json.RawMessage `json:"jobExecutionsRolloutConfig"`
		PresignedURLConfig         json.RawMessage `json:"presignedUrlConfig"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeError(w, controlError(err))
		return
	}
	if len(b.PresignedURLConfig) > 0 && string(b.PresignedURLConfig) != "null" {
		writeError(w, controlError(errorf(CodeInvalidRequest, "presignedUrlConfig (S3 presigned URLs) is not available offline")))
		return
	}
	err := s.engine.UpdateJob(r.PathValue("jobId"), JobUpdate{
		Description: b.Description, Timeout: b.TimeoutConfig, Abort: b.AbortConfig,
		Retry: b.JobExecutionsRetryConfig, Rollout: b.JobExecutionsRolloutConfig,
	})
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	writeJSON(w, map[string]any{})
}

func (s *Service) cancelJob(w http.ResponseWriter, r *http.Request) {
	force, err := queryBool(r, "force", false)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	var b struct {
		Comment    string `json:"comment"`
		ReasonCode string `json:"reasonCode"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeError(w, controlError(err))
		return
	}
	j, err := s.CancelJob(r.PathValue("jobId"), force, b.Comment, b.ReasonCode)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	out := map[string]any{"jobArn": s.jobARN(j.ID), "jobId": j.ID}
	if j.Description != "" {
		out["description"] = j.Description
	}
	writeJSON(w, out)
}

// CancelJob cancels a job and tells the devices (for the API and the CLI).
func (s *Service) CancelJob(id string, force bool, comment, reasonCode string) (*Job, error) {
	j, ev, err := s.engine.CancelJob(id, force, comment, reasonCode)
	if err != nil {
		return nil, err
	}
	s.log.Info("job canceled", zap.String("eventType", "CancelJob"), zap.String("accountId", s.account),
		zap.String("jobId", id), zap.Bool("force", force))
	s.publish(ev)
	return j, nil
}

func (s *Service) deleteJob(w http.ResponseWriter, r *http.Request) {
	force, err := queryBool(r, "force", false)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	if r.URL.Query().Get("namespaceId") != "" {
		writeError(w, controlError(errorf(CodeInvalidRequest, "namespaceId is not supported offline")))
		return
	}
	ev, err := s.engine.DeleteJob(r.PathValue("jobId"), force)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	s.publish(ev)
	w.WriteHeader(http.StatusOK)
}

// executionJSON is the control plane's JobExecution (J-CTL DescribeJobExecution).
func (s *Service) executionJSON(x *Execution) map[string]any {
	out := map[string]any{
		"jobId": x.JobID, "status": x.Status, "forceCanceled": x.ForceCanceled, "thingArn": s.thingARN(x.Thing),
		"queuedAt": epoch(x.QueuedAt), "lastUpdatedAt": epoch(x.LastUpdatedAt),
		"executionNumber": x.ExecutionNumber, "versionNumber": x.VersionNumber,
		"statusDetails": map[string]any{"detailsMap": x.StatusDetails},
	}
	if !x.StartedAt.IsZero() {
		out["startedAt"] = epoch(x.StartedAt)
	}
	if d := x.deadline(); !d.IsZero() {
		out["approximateSecondsBeforeTimedOut"] = max(int64(d.Sub(s.now()).Seconds()), 0)
	}
	return out
}

func summaryJSON(x *Execution) map[string]any {
	out := map[string]any{
		"status": x.Status, "queuedAt": epoch(x.QueuedAt), "lastUpdatedAt": epoch(x.LastUpdatedAt),
		"executionNumber": x.ExecutionNumber, "retryAttempt": x.RetryAttempt,
	}
	if !x.StartedAt.IsZero() {
		out["startedAt"] = epoch(x.StartedAt)
	}
	return out
}

func (s *Service) describeExecution(w http.ResponseWriter, r *http.Request) {
	n, err := queryInt(r, "executionNumber")
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	x, err := s.engine.Execution(r.PathValue("thingName"), r.PathValue("jobId"), n)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	writeJSON(w, map[string]any{"execution": s.executionJSON(x)})
}

func (s *Service) listExecutionsForJob(w http.ResponseWriter, r *http.Request) {
	l, err := s.engine.ExecutionsOfJob(r.PathValue("jobId"), ExecutionStatus(r.URL.Query().Get("status")))
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	items, next, err := page(r, l)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	out := make([]map[string]any, 0, len(items))
	for _, x := range items {
		out = append(out, map[string]any{"thingArn": s.thingARN(x.Thing), "jobExecutionSummary": summaryJSON(x)})
	}
	resp := map[string]any{"executionSummaries": out}
	if next != nil {
		resp["nextToken"] = *next
	}
	writeJSON(w, resp)
}

func (s *Service) listExecutionsForThing(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	l := s.engine.ExecutionsOfThing(r.PathValue("thingName"), q.Get("jobId"), ExecutionStatus(q.Get("status")))
	items, next, err := page(r, l)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	out := make([]map[string]any, 0, len(items))
	for _, x := range items {
		out = append(out, map[string]any{"jobId": x.JobID, "jobExecutionSummary": summaryJSON(x)})
	}
	resp := map[string]any{"executionSummaries": out}
	if next != nil {
		resp["nextToken"] = *next
	}
	writeJSON(w, resp)
}

func (s *Service) cancelExecution(w http.ResponseWriter, r *http.Request) {
	force, err := queryBool(r, "force", false)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	var b struct {
		ExpectedVersion *int64            `json:"expectedVersion"`
		StatusDetails   map[string]string `json:"statusDetails"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeError(w, controlError(err))
		return
	}
	ev, err := s.engine.CancelExecution(r.PathValue("thingName"), r.PathValue("jobId"), force, b.ExpectedVersion, b.StatusDetails)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	s.publish(ev)
	w.WriteHeader(http.StatusOK)
}

func (s *Service) deleteExecution(w http.ResponseWriter, r *http.Request) {
	force, err := queryBool(r, "force", false)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	n, err := strconv.ParseInt(r.PathValue("executionNumber"), 10, 64)
	if err != nil || n < 1 {
		writeError(w, controlError(errorf(CodeInvalidRequest, "executionNumber %q is not a positive number", r.PathValue("executionNumber"))))
		return
	}
	ev, err := s.engine.DeleteExecution(r.PathValue("thingName"), r.PathValue("jobId"), n, force)
	if err != nil {
		writeError(w, controlError(err))
		return
	}
	s.publish(ev)
	w.WriteHeader(http.StatusOK)
}
