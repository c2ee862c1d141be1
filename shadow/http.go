package shadow

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/awsapi"
	"github.com/ggbroker/ggbroker/internal/ids"
	"github.com/ggbroker/ggbroker/service"
)

// The iot-data HTTPS API (signing name iotdata): the REST paths and parameters of botocore's iot-data
// model (services/shadow.md §8, BOTO-DATA). The same handlers serve SigV4 callers (the account: every
// action allowed) on the API listener and devices with their certificate on the device listener, who
// are authorized by iot:GetThingShadow etc. on thing/T (aws-iot-core/iot-policy-actions.md).
const signingName = "iotdata"

// maxHTTPBody bounds what a request body may be read to; AWS' MQTT payload limit, 128 KB.
const maxHTTPBody = 128 * 1024

// Operations of the HTTP API beyond get, update and delete, for metrics and records.
const (
	opList    Operation = "list"
	opPublish Operation = "publish"
)

// routes are the HTTP API's routes, served on both listeners.
func (s *Service) routes() []struct {
	pattern string
	h       http.HandlerFunc
} {
	return []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /things/{thingName}/shadow", s.httpGet},
		{"POST /things/{thingName}/shadow", s.httpUpdate},
		{"DELETE /things/{thingName}/shadow", s.httpDelete},
		{"GET /api/things/shadow/ListNamedShadowsForThing/{thingName}", s.httpList},
		{"POST /topics/{topic...}", s.httpPublish},
	}
}

func (s *Service) registerHTTP(host service.Host) error {
	for _, r := range s.routes() {
		if err := host.HandleAPI(signingName, r.pattern, r.h); err != nil {
			return fmt.Errorf("shadow: API route %s: %w", r.pattern, err)
		}
		if err := host.HandleDevice(r.pattern, r.h); err != nil {
			return fmt.Errorf("shadow: device route %s: %w", r.pattern, err)
		}
	}
	return nil
}

// httpID reads the shadow a request names: the thingName path label and the name query parameter.
func httpID(r *http.Request) ID {
	return ID{Thing: r.PathValue("thingName"), Name: r.URL.Query().Get("name")}
}

// authorize decides action on the thing for a device caller; a SigV4 caller is the account (nil).
func (s *Service) authorize(r *http.Request, action, resource string) *Error {
	dev := service.DeviceFrom(r.Context())
	if dev == nil {
		return nil
	}
	if v := s.host.Authorize(dev, action, resource); !v.Allowed {
		return errForbidden
	}
	return nil
}

func (s *Service) httpGet(w http.ResponseWriter, r *http.Request) {
	start, id := time.Now(), httpID(r)
	e := id.Validate()
	if e == nil {
		e = s.authorize(r, "iot:GetThingShadow", "thing/"+id.Thing)
	}
	var d *Document
	var cause error
	if e == nil {
		d, e, cause = s.shadows.Get(id)
	}
	if e != nil {
		s.httpRefuse(w, r, OpGet, id, e, cause, start)
		return
	}
	writeJSON(w, GetResponse(d, s.shadows.Now(), "", false))
	s.record(OpGet, "HTTP", id, "", service.DeviceFrom(r.Context()), nil, nil, start)
}

func (s *Service) httpUpdate(w http.ResponseWriter, r *http.Request) {
	start, id := time.Now(), httpID(r)
	e := id.Validate()
	if e == nil {
		e = s.authorize(r, "iot:UpdateThingShadow", "thing/"+id.Thing)
	}
	var body []byte
	if e == nil {
		body, e = readBody(r)
	}
	var req *UpdateRequest
	if e == nil {
		req, e = ParseUpdate(body)
	}
	var cause error
	var u *Update
	if e == nil {
		u, e, cause = s.shadows.Update(id, req, func(u *Update) {
			s.accepted(nil, id, "/update/accepted", u.Accepted)
			s.publishUpdate(id, u)
		})
	}
	if e != nil {
		s.httpRefuse(w, r, OpUpdate, id, e, cause, start)
		return
	}
	writeJSON(w, u.Accepted)
	s.record(OpUpdate, "HTTP", id, "", service.DeviceFrom(r.Context()), nil, nil, start)
}

func (s *Service) httpDelete(w http.ResponseWriter, r *http.Request) {
	start, id := time.Now(), httpID(r)
	e := id.Validate()
	if e == nil {
		e = s.authorize(r, "iot:DeleteThingShadow", "thing/"+id.Thing)
	}
	var v int64
	var cause error
	if e == nil {
		v, e, cause = s.shadows.Delete(id, func(v int64) {
			s.accepted(nil, id, "/delete/accepted", DeleteResponse(v, s.shadows.Now(), "", false))
		})
	}
	if e != nil {
		s.httpRefuse(w, r, OpDelete, id, e, cause, start)
		return
	}
	writeJSON(w, DeleteResponse(v, s.shadows.Now(), "", false))
	s.record(OpDelete, "HTTP", id, "", service.DeviceFrom(r.Context()), nil, nil, start)
}

// listPage is ListNamedShadowsForThing's answer (device-shadow-document.md, "Shadow name list response
// document").
type listPage struct {
	Results   []string `json:"results"`
	NextToken string   `json:"nextToken,omitempty"`
	Timestamp int64    `json:"timestamp"`
}

// Page sizes of ListNamedShadowsForThing; AWS documents no default, so it is the maximum.
const maxPageSize = 100

func (s *Service) httpList(w http.ResponseWriter, r *http.Request) {
	start, id := time.Now(), ID{Thing: r.PathValue("thingName")}
	e := id.Validate()
	if e == nil {
		e = s.authorize(r, "iot:ListNamedShadowsForThing", "thing/"+id.Thing)
	}
	size, after := maxPageSize, ""
	q := r.URL.Query()
	if e == nil && q.Get("pageSize") != "" {
		n, err := strconv.Atoi(q.Get("pageSize"))
		if err != nil || n < 1 || n > maxPageSize {
			e = &Error{http.StatusBadRequest, "pageSize must be between 1 and 100"}
		}
		size = n
	}
	if e == nil && q.Get("nextToken") != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.Get("nextToken"))
		if err != nil || !validName(string(raw), maxShadowNameLen) {
			e = &Error{http.StatusBadRequest, "Invalid nextToken"}
		}
		after = string(raw)
	}
	var page listPage
	var cause error
	if e == nil {
		var next string
		page.Results, next, cause = s.shadows.ListNamed(id.Thing, after, size)
		if cause != nil {
			e = errInternal
		}
		if next != "" {
			page.NextToken = base64.RawURLEncoding.EncodeToString([]byte(next))
		}
	}
	if e != nil {
		s.httpRefuse(w, r, opList, id, e, cause, start)
		return
	}
	if page.Results == nil {
		page.Results = []string{}
	}
	page.Timestamp = s.shadows.Now()
	writeJSON(w, marshal(page))
	s.metrics.observe(opList, "HTTP", 200, time.Since(start))
}

// httpPublish is the Publish API: the body is published to the topic's MQTT subscribers, with the MQTT
// 5 properties its query parameters and headers carry. A publish to a shadow request topic is a shadow
// request, as it is at AWS; it has nobody to answer.
func (s *Service) httpPublish(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	topic := r.PathValue("topic")
	q := r.URL.Query()
	m := service.Message{Topic: topic, ContentType: q.Get("contentType"), ResponseTopic: q.Get("responseTopic")}
	e := checkTopic(topic)
	if e == nil && q.Get("qos") != "" {
		switch q.Get("qos") {
		case "0":
		case "1":
			m.QoS = 1
		default:
			e = &Error{http.StatusBadRequest, "qos must be 0 or 1"}
		}
	}
	if e == nil && q.Get("retain") != "" {
		b, err := strconv.ParseBool(q.Get("retain"))
		if err != nil {
			e = &Error{http.StatusBadRequest, "retain must be true or false"}
		}
		m.Retain = b
	}
	if e == nil && q.Get("messageExpiry") != "" {
		n, err := strconv.ParseUint(q.Get("messageExpiry"), 10, 32)
		if err != nil {
			e = &Error{http.StatusBadRequest, "Invalid messageExpiry"}
		}
		m.MessageExpiry = uint32(n)
	}
	if e == nil {
		e = publishHeaders(r.Header, &m)
	}
	if e == nil {
		e = s.authorize(r, "iot:Publish", "topic/"+topic)
	}
	if e == nil && m.Retain {
		e = s.authorize(r, "iot:RetainPublish", "topic/"+topic)
	}
	if e == nil {
		m.Payload, e = readBody(r)
	}
	if e == nil {
		if err := s.host.Publish(m); err != nil {
			s.log.Error("shadow: HTTP publish", zap.String("topicName", topic), zap.Error(err))
			e = errInternal
		}
	}
	if e != nil {
		writeError(w, e)
		s.metrics.observe(opPublish, "HTTP", e.Code, time.Since(start))
		return
	}
	if id, op, ok := ParseRequestTopic(topic); ok {
		s.serve(&request{id: id, op: op, topic: topic, payload: m.Payload, start: start})
	}
	w.WriteHeader(http.StatusOK)
	s.metrics.observe(opPublish, "HTTP", 200, time.Since(start))
	s.log.Info("Publish-In", zap.String("traceId", ids.TraceID()), zap.String("accountId", s.accountID),
		zap.String("eventType", "Publish-In"), zap.String("status", "Success"), zap.String("protocol", "HTTP"),
		zap.String("topicName", topic))
}

// checkTopic refuses what cannot be published to: an empty topic, wildcards, AWS' 256-byte limit.
func checkTopic(t string) *Error {
	if t == "" || strings.ContainsAny(t, "+#") || len(t) > 256 || strings.ContainsRune(t, 0) {
		return &Error{http.StatusBadRequest, "Invalid topic"}
	}
	return nil
}

// publishHeaders reads the MQTT 5 properties the SDKs send as headers: user properties (base64 of a
// JSON array of one-key objects), correlation data (base64) and the payload format indicator.
func publishHeaders(h http.Header, m *service.Message) *Error {
	if v := h.Get("x-amz-mqtt5-user-properties"); v != "" {
		raw, err := base64.StdEncoding.DecodeString(v)
		var props []map[string]string
		if err == nil {
			err = json.Unmarshal(raw, &props)
		}
		if err != nil {
			return &Error{http.StatusBadRequest, "Invalid userProperties"}
		}
		for _, p := range props {
			for k, val := range p {
				m.UserProperties = append(m.UserProperties, service.UserProperty{Key: k, Value: val})
			}
		}
	}
	if v := h.Get("x-amz-mqtt5-correlation-data"); v != "" {
		raw, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return &Error{http.StatusBadRequest, "Invalid correlationData"}
		}
		m.CorrelationData = raw
	}
	return nil
}

// readBody reads a request body up to the limit; a bigger one is 413.
func readBody(r *http.Request) ([]byte, *Error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHTTPBody+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge
		}
		return nil, &Error{http.StatusBadRequest, "could not read the request body"}
	}
	if len(body) > maxHTTPBody {
		return nil, errTooLarge
	}
	return body, nil
}

func writeJSON(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeError answers in AWS' REST-JSON error shape: the exception's name in x-amzn-ErrorType and
// {"message": ...} (the SDKs read both).
func writeError(w http.ResponseWriter, e *Error) {
	awsapi.WriteError(w, e.Code, errorType(e.Code), e.Message)
}

func (s *Service) httpRefuse(w http.ResponseWriter, r *http.Request, op Operation, id ID, e *Error, cause error, start time.Time) {
	writeError(w, e)
	if op == opList {
		s.metrics.observe(op, "HTTP", e.Code, time.Since(start))
		return
	}
	s.record(op, "HTTP", id, "", service.DeviceFrom(r.Context()), e, cause, start)
}
