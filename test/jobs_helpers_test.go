package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// jobsClient is a device's MQTT 3.1.1 connection that keeps every message it receives, subscribed or
// not (the Jobs service answers without a subscription), for the jobs tests to pick by topic.
type jobsClient struct {
	t      testing.TB
	c      pahov3.Client
	prefix string
	mu     sync.Mutex
	got    []jobsMsg
	signal chan struct{}
}

type jobsMsg struct {
	topic   string
	payload []byte
}

// connectJobs connects d with its thing name as client ID.
func (h *harness) connectJobs(d *device, mutate ...func(*pahov3.ClientOptions)) *jobsClient {
	h.t.Helper()
	jc := &jobsClient{t: h.t, prefix: "$aws/things/" + d.name + "/jobs", signal: make(chan struct{}, 1)}
	opts := append([]func(*pahov3.ClientOptions){func(o *pahov3.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { jc.add(m.Topic(), m.Payload()) })
	}}, mutate...)
	c, err := h.connectV3(d, d.name, opts...)
	if err != nil {
		h.t.Fatalf("connect %s: %v", d.name, err)
	}
	jc.c = c
	return jc
}

func (jc *jobsClient) add(topic string, payload []byte) {
	jc.mu.Lock()
	jc.got = append(jc.got, jobsMsg{topic, append([]byte(nil), payload...)})
	jc.mu.Unlock()
	select {
	case jc.signal <- struct{}{}:
	default:
	}
}

// subscribe subscribes at QoS 1; messages go to the shared buffer.
func (jc *jobsClient) subscribe(filters ...string) {
	jc.t.Helper()
	for _, f := range filters {
		tok := jc.c.Subscribe(f, 1, nil)
		if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			jc.t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}
}

// publish publishes at QoS 1 and waits for the PUBACK.
func (jc *jobsClient) publish(topic, payload string) {
	jc.t.Helper()
	publishV3(jc.t, jc.c, topic, 1, false, payload)
}

// expect waits for the first message on topic, takes it from the buffer and decodes it.
func (jc *jobsClient) expect(topic string) map[string]any {
	jc.t.Helper()
	raw := jc.expectRaw(topic)
	var v map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		jc.t.Fatalf("%s: payload %s is not a JSON object: %v", topic, raw, err)
	}
	return v
}

func (jc *jobsClient) expectRaw(topic string) []byte {
	jc.t.Helper()
	deadline := time.After(waitFor)
	for {
		jc.mu.Lock()
		for i, m := range jc.got {
			if m.topic == topic {
				jc.got = slices.Delete(jc.got, i, i+1)
				jc.mu.Unlock()
				return m.payload
			}
		}
		jc.mu.Unlock()
		select {
		case <-jc.signal:
		case <-deadline:
			jc.t.Fatalf("no message on %s; received %s", topic, jc.topics())
		}
	}
}

func (jc *jobsClient) topics() string {
	jc.mu.Lock()
	defer jc.mu.Unlock()
	var out []string
	for _, m := range jc.got {
		out = append(out, m.topic+" "+string(m.payload))
	}
	return "[" + strings.Join(out, "; ") + "]"
}

// expectNone checks that nothing arrived on the topics, once a marker the client publishes to itself
// came back: the broker delivers to one client in order, so what was queued before the marker is in.
func (jc *jobsClient) expectNone(topics ...string) {
	jc.t.Helper()
	marker := "jobs-test/" + jc.prefix[len("$aws/things/"):len(jc.prefix)-len("/jobs")] + "/marker"
	jc.subscribe(marker)
	jc.publish(marker, "marker")
	jc.expectRaw(marker)
	jc.mu.Lock()
	defer jc.mu.Unlock()
	for _, m := range jc.got {
		if slices.Contains(topics, m.topic) {
			jc.t.Fatalf("unexpected message on %s: %s", m.topic, m.payload)
		}
	}
}

// api calls the broker's iot control-plane routes (the handler the SigV4 API listener serves) and
// decodes the JSON answer.
func (h *harness) api(signing, method, path, body string) (int, map[string]any, http.Header) {
	h.t.Helper()
	hd := h.broker.APIHandler(signing)
	if hd == nil {
		h.t.Fatalf("no API routes for %s", signing)
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	rec := httptest.NewRecorder()
	hd.ServeHTTP(rec, req)
	var v map[string]any
	if rec.Body.Len() > 0 {
		d := json.NewDecoder(rec.Body)
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			h.t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
		}
	}
	return rec.Code, v, rec.Header()
}

// createJob creates a job for things with the document through the control plane.
func (h *harness) createJob(id, document string, things ...string) {
	h.t.Helper()
	var arns []string
	for _, th := range things {
		arns = append(arns, fmt.Sprintf("arn:aws:iot:%s:%s:thing/%s", h.cfg.Core.Region, h.cfg.Core.AccountID, th))
	}
	body, _ := json.Marshal(map[string]any{"targets": arns, "document": document})
	if code, v, _ := h.api("iot", http.MethodPut, "/jobs/"+id, string(body)); code != 200 {
		h.t.Fatalf("CreateJob %s: %d %v", id, code, v)
	}
}

// field walks a decoded JSON object by keys.
func field(v map[string]any, keys ...string) any {
	var cur any = v
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// num is a JSON number field as int64 (-1 when absent or not a number).
func num(v map[string]any, keys ...string) int64 {
	n, ok := field(v, keys...).(json.Number)
	if !ok {
		return -1
	}
	i, err := n.Int64()
	if err != nil {
		return -1
	}
	return i
}
