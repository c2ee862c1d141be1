package jobs

import (
	"crypto/rand"
	"encoding/json"
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/service"
)

// record is what one device request's log entry says (cwl-format.md, Job log entries:
// DescribeJobExecution, GetPendingJobExecution, StartNextPendingJobExecution, UpdateJobExecution).
type record struct {
	api      string
	protocol string // MQTT or HTTP
	client   *service.Client
	topic    string
	thing    string
	jobID    string
	token    json.RawMessage
	version  int64
	status   ExecutionStatus
}

// logRequest writes the request's entry: DEBUG on success as AWS logs it, ERROR on failure.
func (s *Service) logRequest(r *record, rerr *Error) {
	if s.metrics != nil {
		result := "Success"
		if rerr != nil {
			result = string(rerr.Code)
		}
		s.metrics.requests.WithLabelValues(apiName(r.api), r.protocol, result).Inc()
	}
	level := zapcore.DebugLevel
	if rerr != nil {
		level = zapcore.ErrorLevel
	}
	ce := s.log.Check(level, "jobs "+apiName(r.api))
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("traceId", traceID()), zap.String("accountId", s.account),
		zap.String("eventType", apiName(r.api)), zap.String("protocol", r.protocol),
	}
	if r.client != nil {
		fields = append(fields, zap.String("clientId", r.client.ClientID), zap.String("principalId", r.client.CertificateID))
		if r.client.SourceIP.IsValid() {
			fields = append(fields, zap.String("sourceIp", r.client.SourceIP.String()), zap.Int("sourcePort", r.client.SourcePort))
		}
	}
	fields = append(fields, zap.String("thingName", r.thing))
	if r.jobID != "" {
		fields = append(fields, zap.String("jobId", r.jobID))
	}
	if r.topic != "" {
		fields = append(fields, zap.String("topicName", r.topic))
	}
	if r.token != nil {
		var tok string
		_ = json.Unmarshal(r.token, &tok)
		fields = append(fields, zap.String("clientToken", tok))
	}
	if r.version != 0 {
		fields = append(fields, zap.String("versionNumber", fmt.Sprint(r.version)))
	}
	if rerr != nil {
		fields = append(fields, zap.String("status", "Failure"), zap.String("reason", string(rerr.Code)), zap.String("details", rerr.Message))
	} else {
		details := "The request status is SUCCESS."
		if r.status != "" {
			details = "The destination status is " + string(r.status) + ". " + details
		}
		fields = append(fields, zap.String("status", "Success"), zap.String("details", details))
	}
	ce.Write(fields...)
}

// apiName is the eventType of an API ("" is a request to no API).
func apiName(api string) string {
	if api == "" {
		return "InvalidTopic"
	}
	return api
}

// logJobDone is the ReportFinalJobExecutionCount entry of a completed job.
func (s *Service) logJobDone(job *Job, details string) {
	s.log.Info("jobs ReportFinalJobExecutionCount",
		zap.String("traceId", traceID()), zap.String("accountId", s.account), zap.String("status", "Success"),
		zap.String("eventType", "ReportFinalJobExecutionCount"), zap.String("jobId", job.ID), zap.String("details", details))
}

// traceID is a random identifier in AWS' UUID form.
func traceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
