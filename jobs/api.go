package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ggbroker/ggbroker/awsapi"
	"github.com/ggbroker/ggbroker/service"
)

// Signing names of the APIs this service serves (J-CTL, J-DATA).
const (
	signingControl = "iot"
	signingData    = "iot-jobs-data"
)

// maxBody bounds a request body: a 32 KB document, JSON-escaped, fits with room to spare.
const maxBody = 256 << 10

// registerRoutes serves the control plane's jobs operations (iot) and the device plane (iot-jobs-data,
// SigV4 on the API listener and mutual TLS on the device listener). Paths and query parameters are the
// AWS SDK's (aws-sdk-go-v2 service/iot serializers; botocore iot-jobs-data model).
func (s *Service) registerRoutes(host service.Host) error {
	control := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"PUT /jobs/{jobId}", s.createJob},
		{"GET /jobs/{jobId}", s.describeJob},
		{"GET /jobs", s.listJobs},
		{"PATCH /jobs/{jobId}", s.updateJob},
		{"PUT /jobs/{jobId}/cancel", s.cancelJob},
		{"DELETE /jobs/{jobId}", s.deleteJob},
		{"GET /jobs/{jobId}/job-document", s.getJobDocument},
		{"GET /jobs/{jobId}/things", s.listExecutionsForJob},
		{"GET /things/{thingName}/jobs", s.listExecutionsForThing},
		{"GET /things/{thingName}/jobs/{jobId}", s.describeExecution},
		{"PUT /things/{thingName}/jobs/{jobId}/cancel", s.cancelExecution},
		{"DELETE /things/{thingName}/jobs/{jobId}/executionNumber/{executionNumber}", s.deleteExecution},
	}
	for _, r := range control {
		if err := host.HandleAPI(signingControl, r.pattern, r.h); err != nil {
			return fmt.Errorf("jobs: route %s: %w", r.pattern, err)
		}
	}
	data := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /things/{thingName}/jobs", s.httpGetPending},
		{"PUT /things/{thingName}/jobs/{jobId}", s.httpStartNext},
		{"GET /things/{thingName}/jobs/{jobId}", s.httpDescribe},
		{"POST /things/{thingName}/jobs/{jobId}", s.httpUpdate},
	}
	for _, r := range data {
		if err := host.HandleAPI(signingData, r.pattern, r.h); err != nil {
			return fmt.Errorf("jobs: route %s: %w", r.pattern, err)
		}
		if err := host.HandleDevice(r.pattern, r.h); err != nil {
			return fmt.Errorf("jobs: device route %s: %w", r.pattern, err)
		}
	}
	return nil
}

// apiError is an AWS REST-JSON error: the exception name in x-amzn-ErrorType, {"message": ...} as the
// body, and the model's HTTP status.
type apiError struct {
	status int
	kind   string
	msg    string
	extra  map[string]any
}

// controlError maps an error to the iot control plane's exceptions.
func controlError(err error) apiError {
	var e *Error
	if !errors.As(err, &e) {
		return apiError{http.StatusInternalServerError, "InternalFailureException", err.Error(), nil}
	}
	switch e.Code {
	case CodeInvalidRequest, CodeInvalidJSON:
		return apiError{http.StatusBadRequest, "InvalidRequestException", e.Message, nil}
	case CodeResourceNotFound:
		return apiError{http.StatusNotFound, "ResourceNotFoundException", e.Message, nil}
	case CodeResourceAlreadyExists:
		return apiError{http.StatusConflict, "ResourceAlreadyExistsException", e.Message, nil}
	case CodeInvalidStateTransition:
		return apiError{http.StatusConflict, "InvalidStateTransitionException", e.Message, nil}
	case CodeVersionConflict, CodeVersionMismatch:
		return apiError{http.StatusConflict, "VersionConflictException", e.Message, nil}
	case CodeConflict:
		return apiError{http.StatusConflict, "ConflictException", e.Message, nil}
	}
	return apiError{http.StatusInternalServerError, "InternalFailureException", e.Message, nil}
}

// dataError maps an error to the iot-jobs-data exceptions (J-DATA: 400, 404, 409, 410, 429, 503).
func dataError(err error) apiError {
	var e *Error
	if !errors.As(err, &e) {
		return apiError{http.StatusServiceUnavailable, "ServiceUnavailableException", err.Error(), nil}
	}
	switch e.Code {
	case CodeInvalidRequest, CodeInvalidJSON, CodeInvalidTopic:
		return apiError{http.StatusBadRequest, "InvalidRequestException", e.Message, nil}
	case CodeResourceNotFound:
		return apiError{http.StatusNotFound, "ResourceNotFoundException", e.Message, nil}
	case CodeInvalidStateTransition, CodeVersionMismatch:
		// The HTTP plane has no VersionMismatch exception; both carry the execution state, as the
		// MQTT rejection does (J-DATA InvalidStateTransitionException).
		ae := apiError{http.StatusConflict, "InvalidStateTransitionException", e.Message, nil}
		if e.State != nil {
			ae.extra = map[string]any{"executionState": stateOf(e.State)}
		}
		return ae
	case CodeTerminalStateReached:
		return apiError{http.StatusGone, "TerminalStateException", e.Message, nil}
	case CodeRequestThrottled:
		return apiError{http.StatusTooManyRequests, "ThrottlingException", e.Message, nil}
	}
	return apiError{http.StatusServiceUnavailable, "ServiceUnavailableException", e.Message, nil}
}

func writeError(w http.ResponseWriter, ae apiError) {
	awsapi.WriteErrorFields(w, ae.status, ae.kind, ae.msg, ae.extra)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(marshal(v))
}

// decodeBody reads a JSON request body into v; an empty body leaves v as it is.
func decodeBody(r *http.Request, v any) error {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return errorf(CodeInvalidRequest, "request body: %v", err)
	}
	if len(raw) > maxBody {
		return errorf(CodeInvalidRequest, "request body is larger than %d bytes", maxBody)
	}
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return errorf(CodeInvalidRequest, "request body is not valid JSON for this operation: %s", jsonFieldError(err))
	}
	return nil
}

// queryBool reads a boolean query parameter; def when absent.
func queryBool(r *http.Request, name string, def bool) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errorf(CodeInvalidRequest, "query parameter %s=%q is not true or false", name, v)
	}
	return b, nil
}

// queryInt reads an integer query parameter; 0 when absent.
func queryInt(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, errorf(CodeInvalidRequest, "query parameter %s=%q is not a whole number", name, v)
	}
	return n, nil
}

// epoch is a control-plane timestamp: epoch seconds with milliseconds, as the REST-JSON protocol sends
// them (the SDK parses a JSON number of seconds).
func epoch(t time.Time) *float64 {
	if t.IsZero() {
		return nil
	}
	v := float64(t.UnixMilli()) / 1000
	return &v
}
