package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/service"
)

// handleFilter is every topic of the jobs namespace.
const handleFilter = "$aws/things/+/jobs/#"

// deviceRequest is the union of the device API's request fields (J-MQTT). Raw fields keep what the
// device sent: clientToken is echoed byte for byte; expectedVersion may be a number or a string.
type deviceRequest struct {
	ClientToken              json.RawMessage `json:"clientToken"`
	Status                   ExecutionStatus `json:"status"`
	StatusDetails            json.RawMessage `json:"statusDetails"`
	ExpectedVersion          json.RawMessage `json:"expectedVersion"`
	ExecutionNumber          int64           `json:"executionNumber"`
	IncludeJobExecutionState *bool           `json:"includeJobExecutionState"`
	IncludeJobDocument       *bool           `json:"includeJobDocument"`
	StepTimeoutInMinutes     *int64          `json:"stepTimeoutInMinutes"`
}

// parseDetails reads statusDetails: an object of strings, or absent (nil: unchanged).
func parseDetails(raw json.RawMessage) (map[string]string, *Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var d map[string]string
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, errorf(CodeInvalidRequest, "statusDetails must be an object of string values")
	}
	if d == nil {
		d = map[string]string{}
	}
	return d, validateDetails(d)
}

// route is a parsed jobs topic: the thing, the API, and the job ID for the per-job APIs.
type route struct {
	thing, api, jobID string
}

// The device APIs, named as their log records name them (cwl-format.md, Job log entries).
const (
	apiGetPending = "GetPendingJobExecution"
	apiStartNext  = "StartNextPendingJobExecution"
	apiDescribe   = "DescribeJobExecution"
	apiUpdate     = "UpdateJobExecution"
)

// parseTopic maps a topic to its API. ok is false for topics that are no request (the service's own
// accepted, rejected, notify and notify-next topics); api is "" for a jobs topic naming no API.
func parseTopic(topic string) (r route, ok bool) {
	rest, found := strings.CutPrefix(topic, "$aws/things/")
	if !found {
		return r, false
	}
	thing, rest, found := strings.Cut(rest, "/")
	if !found {
		return r, false
	}
	rest, found = strings.CutPrefix(rest, "jobs")
	if !found || (rest != "" && rest[0] != '/') {
		return r, false
	}
	r.thing = thing
	parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	last := parts[len(parts)-1]
	if len(parts) >= 2 && (last == "accepted" || last == "rejected") {
		return r, false
	}
	switch {
	case len(parts) == 1 && (parts[0] == "notify" || parts[0] == "notify-next"):
		return r, false
	case len(parts) == 1 && parts[0] == "get":
		r.api = apiGetPending
	case len(parts) == 1 && parts[0] == "start-next":
		r.api = apiStartNext
	case len(parts) == 2 && parts[1] == "get":
		r.api, r.jobID = apiDescribe, parts[0]
	case len(parts) == 2 && parts[1] == "update":
		r.api, r.jobID = apiUpdate, parts[0]
	}
	return r, true
}

// handle answers one device request. Every message in the namespace is consumed: requests reach the
// service only, and a device cannot pass a forged accepted or notify message to another client (the
// service's answers "don't pass through the broker", J-MQTT).
func (s *Service) handle(ctx context.Context, m *service.Message) error {
	if m.Origin != "" || m.From == nil {
		return nil
	}
	r, ok := parseTopic(m.Topic)
	if !ok {
		return service.Consumed
	}
	rec := &record{protocol: "MQTT", client: m.From, topic: m.Topic, thing: r.thing, jobID: r.jobID, api: r.api}
	qos := min(m.QoS, 1)
	resp, rerr := s.serveMQTT(r, m.Payload, rec)
	s.logRequest(rec, rerr)
	if rerr == nil {
		s.answer(m.From, m.Topic+"/accepted", resp, qos)
		return service.Consumed
	}
	s.answer(m.From, m.Topic+"/rejected", s.rejection(rerr, rec.token), qos)
	if rerr.Code == CodeInternalError {
		// The change is not stored: refuse the message itself too, so that a QoS 1 publish is not
		// acknowledged and the device sends it again.
		return errors.New(rerr.Message)
	}
	return service.Consumed
}

// serveMQTT runs one request and returns the accepted payload, or the error to reject with.
func (s *Service) serveMQTT(r route, payload []byte, rec *record) ([]byte, *Error) {
	if r.api == "" {
		return nil, errorf(CodeInvalidTopic, "The topic %s does not name a Jobs API", rec.topic)
	}
	var req deviceRequest
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = []byte("{}")
	}
	if !utf8.Valid(payload) || !json.Valid(payload) {
		return nil, errorf(CodeInvalidJSON, "The request payload is not valid UTF-8 JSON")
	}
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, errorf(CodeInvalidRequest, "The request is invalid: %v", jsonFieldError(err))
	}
	if len(req.ClientToken) > 0 && string(req.ClientToken) != "null" {
		if req.ClientToken[0] != '"' {
			return nil, errorf(CodeInvalidRequest, "clientToken must be a string")
		}
		rec.token = req.ClientToken
	}
	if !validThingName(r.thing) {
		return nil, errorf(CodeInvalidTopic, "Thing name %q in the topic is not valid", r.thing)
	}
	if r.jobID != "" && !validJobID(r.jobID) && !(r.jobID == NextJob && r.api == apiDescribe) {
		return nil, errorf(CodeInvalidRequest, "Job ID %q in the topic is not valid", r.jobID)
	}
	now := s.now()
	base := func(v map[string]any) []byte {
		v["timestamp"] = now.Unix()
		if rec.token != nil {
			v["clientToken"] = rec.token
		}
		return marshal(v)
	}
	switch r.api {
	case apiGetPending:
		inProgress, queued := s.engine.PendingExecutions(r.thing)
		return base(map[string]any{"inProgressJobs": summaries(inProgress), "queuedJobs": summaries(queued)}), nil
	case apiStartNext:
		details, err := parseDetails(req.StatusDetails)
		if err != nil {
			return nil, err
		}
		view, ev, serr := s.engine.StartNext(r.thing, details, req.StepTimeoutInMinutes)
		if serr != nil {
			return nil, asError(serr)
		}
		s.publish(ev)
		out := map[string]any{}
		if view != nil {
			rec.jobID, rec.version = view.Execution.JobID, view.Execution.VersionNumber
			out["execution"] = executionOf(view.Execution, view.Document, docObject, false, now)
		}
		return base(out), nil
	case apiDescribe:
		view, err := s.engine.Describe(r.thing, r.jobID, req.ExecutionNumber)
		if err != nil {
			return nil, asError(err)
		}
		out := map[string]any{}
		if view != nil {
			mode := docObject // includeJobDocument defaults to true (J-MQTT)
			if req.IncludeJobDocument != nil && !*req.IncludeJobDocument {
				mode = docNone
			}
			out["execution"] = executionOf(view.Execution, view.Document, mode, false, now)
		}
		return base(out), nil
	case apiUpdate:
		u, err := deviceUpdateOf(&req)
		if err != nil {
			return nil, err
		}
		view, ev, uerr := s.engine.Update(r.thing, r.jobID, req.ExecutionNumber, *u)
		if uerr != nil {
			return nil, asError(uerr)
		}
		rec.version, rec.status = view.Execution.VersionNumber, view.Execution.Status
		s.publish(ev)
		out := map[string]any{}
		// includeJobExecutionState and includeJobDocument default to false (J-MQTT; PY-JOBS capture).
		if req.IncludeJobExecutionState != nil && *req.IncludeJobExecutionState {
			out["executionState"] = stateOf(view.Execution)
		}
		if req.IncludeJobDocument != nil && *req.IncludeJobDocument {
			out["jobDocument"] = json.RawMessage(view.Document)
		}
		return base(out), nil
	}
	return nil, errorf(CodeInvalidTopic, "The topic %s does not name a Jobs API", rec.topic)
}

func deviceUpdateOf(req *deviceRequest) (*DeviceUpdate, *Error) {
	details, err := parseDetails(req.StatusDetails)
	if err != nil {
		return nil, err
	}
	expected, err := parseVersion(req.ExpectedVersion)
	if err != nil {
		return nil, err
	}
	return &DeviceUpdate{Status: req.Status, StatusDetails: details, ExpectedVersion: expected, StepTimeoutInMinutes: req.StepTimeoutInMinutes}, nil
}

// jsonFieldError names the field of a type mismatch.
func jsonFieldError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field + " has the wrong type"
	}
	return err.Error()
}

// asError turns an engine error into a request error: a store failure is an InternalError.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternalError, Message: err.Error()}
}

func summaries(l []*Execution) []wireSummary {
	out := make([]wireSummary, 0, len(l))
	for _, x := range l {
		out = append(out, summaryOf(x))
	}
	return out
}

// rejection is an ErrorResponse (J-ERR): code, message, timestamp, the echoed clientToken, and the
// execution state for InvalidStateTransition and VersionMismatch.
func (s *Service) rejection(e *Error, token json.RawMessage) []byte {
	v := map[string]any{"code": e.Code, "message": e.Message, "timestamp": s.now().Unix()}
	if token != nil {
		v["clientToken"] = token
	}
	if e.State != nil && (e.Code == CodeInvalidStateTransition || e.Code == CodeVersionMismatch) {
		v["executionState"] = stateOf(e.State)
	}
	return marshal(v)
}

// answer sends a response to the requesting client only, whether or not it subscribed (J-MQTT: the
// responses reach the requester "even without a specific subscription" and nobody else).
func (s *Service) answer(to *service.Client, topic string, payload []byte, qos byte) {
	err := s.host.SendTo(to, service.Message{Topic: topic, Payload: payload, QoS: qos}, service.SendOptions{RequireSubscription: false})
	if err != nil && !errors.Is(err, service.ErrNotConnected) {
		s.log.Warn("jobs response not delivered", zap.String("clientId", to.ClientID), zap.String("topicName", topic), zap.Error(err))
	}
}

// publish sends notify and notify-next events as ordinary messages on the thing's reserved topics:
// every subscriber that iot:Receive allows gets them (the thing's device, and any monitor allowed to
// subscribe), and a device that did not subscribe gets none (FreeRTOS/iot-reference-esp32#133: without
// the notify-next subscription, new jobs are never seen).
func (s *Service) publish(events []Event) {
	for _, ev := range events {
		if err := s.host.Publish(service.Message{Topic: ev.Topic, Payload: ev.Payload, QoS: 1}); err != nil {
			s.log.Warn("jobs event not published", zap.String("thingName", ev.Thing), zap.String("topicName", ev.Topic), zap.Error(err))
		}
	}
}
