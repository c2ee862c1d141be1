package jobs

import (
	"bytes"
	"encoding/json"
	"time"
)

// The device plane's shapes (J-TYPES, J-DATA). Timestamps are epoch SECONDS (reference/services/jobs.md
// §2: MS #1584, PY-JOBS captures; J-MQTT's 13-digit example is wrong).

// wireSummary is a JobExecutionSummary.
type wireSummary struct {
	JobID           string `json:"jobId"`
	QueuedAt        int64  `json:"queuedAt"`
	StartedAt       int64  `json:"startedAt,omitempty"`
	LastUpdatedAt   int64  `json:"lastUpdatedAt"`
	VersionNumber   int64  `json:"versionNumber"`
	ExecutionNumber int64  `json:"executionNumber"`
}

// wireExecution is a JobExecution. JobDocument is a JSON object over MQTT and a string over HTTP
// (MS #1598, JS-JOBS `jobDocument?: object`).
type wireExecution struct {
	JobID                            string            `json:"jobId"`
	ThingName                        string            `json:"thingName,omitempty"`
	JobDocument                      any               `json:"jobDocument,omitempty"`
	Status                           ExecutionStatus   `json:"status"`
	StatusDetails                    map[string]string `json:"statusDetails,omitempty"`
	QueuedAt                         int64             `json:"queuedAt"`
	StartedAt                        int64             `json:"startedAt,omitempty"`
	LastUpdatedAt                    int64             `json:"lastUpdatedAt"`
	ApproximateSecondsBeforeTimedOut *int64            `json:"approximateSecondsBeforeTimedOut,omitempty"`
	VersionNumber                    int64             `json:"versionNumber"`
	ExecutionNumber                  int64             `json:"executionNumber"`
}

// wireState is a JobExecutionState.
type wireState struct {
	Status        ExecutionStatus   `json:"status"`
	StatusDetails map[string]string `json:"statusDetails,omitempty"`
	VersionNumber int64             `json:"versionNumber"`
}

func seconds(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func summaryOf(x *Execution) wireSummary {
	return wireSummary{
		JobID: x.JobID, QueuedAt: seconds(x.QueuedAt), StartedAt: seconds(x.StartedAt),
		LastUpdatedAt: seconds(x.LastUpdatedAt), VersionNumber: x.VersionNumber, ExecutionNumber: x.ExecutionNumber,
	}
}

func stateOf(x *Execution) *wireState {
	return &wireState{Status: x.Status, StatusDetails: x.StatusDetails, VersionNumber: x.VersionNumber}
}

// docMode says how an execution carries its job's document.
type docMode int

const (
	docNone   docMode = iota
	docObject         // MQTT: the document itself
	docString         // HTTP: the document as a string
)

// executionOf renders x. MQTT answers leave thingName out, as AWS does (PY-JOBS captures show
// thing_name=None); the HTTP plane carries it (J-DATA JobExecution).
func executionOf(x *Execution, doc string, mode docMode, withThing bool, now time.Time) *wireExecution {
	w := &wireExecution{
		JobID: x.JobID, Status: x.Status, StatusDetails: x.StatusDetails,
		QueuedAt: seconds(x.QueuedAt), StartedAt: seconds(x.StartedAt), LastUpdatedAt: seconds(x.LastUpdatedAt),
		VersionNumber: x.VersionNumber, ExecutionNumber: x.ExecutionNumber,
	}
	if withThing {
		w.ThingName = x.Thing
	}
	switch mode {
	case docObject:
		w.JobDocument = json.RawMessage(doc)
	case docString:
		w.JobDocument = doc
	}
	if mode == docString {
		if d := x.deadline(); !d.IsZero() {
			s := max(int64(d.Sub(now).Seconds()), 0)
			w.ApproximateSecondsBeforeTimedOut = &s
		}
	}
	return w
}

// marshal encodes v without HTML escaping, so that an echoed clientToken or a document with < > & comes
// back byte for byte.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only our own types are encoded here; none can fail.
		panic("jobs: encode response: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// notifyPayload is a JobExecutionsChanged event: the thing's pending executions keyed by status, keys
// with no executions left out; {"jobs":{}} when nothing is pending (PY-JOBS capture; J-MQTT's
// "JobExecutionState" key is wrong).
func (e *Engine) notifyPayload(thing string, now time.Time) []byte {
	jobs := map[ExecutionStatus][]wireSummary{}
	for _, x := range e.pending(thing) {
		jobs[x.Status] = append(jobs[x.Status], summaryOf(x))
	}
	// pending is IN_PROGRESS first, each group oldest first: each list is in queue order.
	return marshal(struct {
		Jobs      map[ExecutionStatus][]wireSummary `json:"jobs"`
		Timestamp int64                             `json:"timestamp"`
	}{jobs, now.Unix()})
}

// notifyNextPayload is a NextJobExecutionChanged event: the next execution with its document, or only
// a timestamp when nothing is next (PY-JOBS: execution=None).
func (e *Engine) notifyNextPayload(thing string, now time.Time) []byte {
	var ex *wireExecution
	if x := e.next(thing); x != nil {
		ex = executionOf(x, e.docOf(x.JobID), docObject, false, now)
	}
	return marshal(struct {
		Execution *wireExecution `json:"execution,omitempty"`
		Timestamp int64          `json:"timestamp"`
	}{ex, now.Unix()})
}

func (e *Engine) docOf(jobID string) string {
	if j := e.jobs[jobID]; j != nil {
		return j.Document
	}
	return "{}"
}
