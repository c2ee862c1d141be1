package jobs

import (
	"encoding/json"
	"net/http"

	"github.com/ggbroker/ggbroker/service"
)

// deviceHTTP starts an iot-jobs-data request: it checks the thing name and, for a device on the
// mutual-TLS listener, the iotjobsdata:<API> action on thing/<name> through the device's policies. A
// SigV4 caller is the account and is allowed. It returns nil after answering when the request stops.
func (s *Service) deviceHTTP(w http.ResponseWriter, r *http.Request, api, action string) *record {
	thing := r.PathValue("thingName")
	rec := &record{api: api, protocol: "HTTP", client: service.DeviceFrom(r.Context()), thing: thing, jobID: r.PathValue("jobId")}
	if !validThingName(thing) {
		s.failHTTP(w, rec, errorf(CodeInvalidRequest, "thing name %q is not valid", thing))
		return nil
	}
	if v := s.host.Authorize(rec.client, action, "thing/"+thing); !v.Allowed {
		s.logRequest(rec, errorf("AccessDenied", "%s on thing/%s: %s", action, thing, v.Reason))
		writeError(w, apiError{status: http.StatusForbidden, kind: "AccessDeniedException", msg: "User is not authorized to perform " + action + " on thing/" + thing})
		return nil
	}
	return rec
}

func (s *Service) failHTTP(w http.ResponseWriter, rec *record, err error) {
	e := asError(err)
	s.logRequest(rec, e)
	writeError(w, dataError(e))
}

func (s *Service) httpGetPending(w http.ResponseWriter, r *http.Request) {
	rec := s.deviceHTTP(w, r, apiGetPending, "iotjobsdata:GetPendingJobExecutions")
	if rec == nil {
		return
	}
	inProgress, queued := s.engine.PendingExecutions(rec.thing)
	s.logRequest(rec, nil)
	writeJSON(w, map[string]any{"inProgressJobs": summaries(inProgress), "queuedJobs": summaries(queued)})
}

func (s *Service) httpStartNext(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("jobId") != NextJob {
		// PUT on a job ID is no iot-jobs-data operation; only $next starts.
		writeError(w, apiError{status: http.StatusNotFound, kind: "ResourceNotFoundException", msg: "PUT /things/{thingName}/jobs/ takes only $next"})
		return
	}
	rec := s.deviceHTTP(w, r, apiStartNext, "iotjobsdata:StartNextPendingJobExecution")
	if rec == nil {
		return
	}
	rec.jobID = ""
	var b struct {
		StatusDetails        json.RawMessage `json:"statusDetails"`
		StepTimeoutInMinutes *int64          `json:"stepTimeoutInMinutes"`
	}
	if err := decodeBody(r, &b); err != nil {
		s.failHTTP(w, rec, err)
		return
	}
	details, derr := parseDetails(b.StatusDetails)
	if derr != nil {
		s.failHTTP(w, rec, derr)
		return
	}
	view, ev, err := s.engine.StartNext(rec.thing, details, b.StepTimeoutInMinutes)
	if err != nil {
		s.failHTTP(w, rec, err)
		return
	}
	s.publish(ev)
	out := map[string]any{}
	if view != nil {
		rec.jobID, rec.version = view.Execution.JobID, view.Execution.VersionNumber
		out["execution"] = executionOf(view.Execution, view.Document, docString, true, s.now())
	}
	s.logRequest(rec, nil)
	writeJSON(w, out)
}

func (s *Service) httpDescribe(w http.ResponseWriter, r *http.Request) {
	rec := s.deviceHTTP(w, r, apiDescribe, "iotjobsdata:DescribeJobExecution")
	if rec == nil {
		return
	}
	if rec.jobID != NextJob && !validJobID(rec.jobID) {
		s.failHTTP(w, rec, errorf(CodeInvalidRequest, "job ID %q is not valid", rec.jobID))
		return
	}
	// includeJobDocument defaults to true, as over MQTT (reference/services/jobs.md §2).
	withDoc, err := queryBool(r, "includeJobDocument", true)
	if err != nil {
		s.failHTTP(w, rec, err)
		return
	}
	n, err := queryInt(r, "executionNumber")
	if err != nil {
		s.failHTTP(w, rec, err)
		return
	}
	view, err := s.engine.Describe(rec.thing, rec.jobID, n)
	if err != nil {
		s.failHTTP(w, rec, err)
		return
	}
	out := map[string]any{}
	if view != nil {
		mode := docString
		if !withDoc {
			mode = docNone
		}
		out["execution"] = executionOf(view.Execution, view.Document, mode, true, s.now())
	}
	s.logRequest(rec, nil)
	writeJSON(w, out)
}

func (s *Service) httpUpdate(w http.ResponseWriter, r *http.Request) {
	rec := s.deviceHTTP(w, r, apiUpdate, "iotjobsdata:UpdateJobExecution")
	if rec == nil {
		return
	}
	if !validJobID(rec.jobID) {
		s.failHTTP(w, rec, errorf(CodeInvalidRequest, "job ID %q is not valid", rec.jobID))
		return
	}
	var req deviceRequest
	if err := decodeBody(r, &req); err != nil {
		s.failHTTP(w, rec, err)
		return
	}
	u, uerr := deviceUpdateOf(&req)
	if uerr != nil {
		s.failHTTP(w, rec, uerr)
		return
	}
	view, ev, err := s.engine.Update(rec.thing, rec.jobID, req.ExecutionNumber, *u)
	if err != nil {
		s.failHTTP(w, rec, err)
		return
	}
	rec.version, rec.status = view.Execution.VersionNumber, view.Execution.Status
	s.publish(ev)
	out := map[string]any{}
	if req.IncludeJobExecutionState != nil && *req.IncludeJobExecutionState {
		out["executionState"] = stateOf(view.Execution)
	}
	if req.IncludeJobDocument != nil && *req.IncludeJobDocument {
		out["jobDocument"] = view.Document
	}
	s.logRequest(rec, nil)
	writeJSON(w, out)
}
