package shadow

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/service"
)

// fakeHost is a small service.Host for unit tests: it records what the service publishes and sends,
// decides Authorize from a set of allowed "action resource" pairs, and serves the HTTP routes on two
// muxes. The end-to-end tests in test/ use the real broker.
type fakeHost struct {
	mu       sync.Mutex
	handlers map[string]service.Handler
	sent     []sent
	store    *memStore
	allowed  map[string]bool
	api, dev *http.ServeMux
	reg      *prometheus.Registry
	log      *zap.Logger
	notify   chan struct{}
	up       service.Upstream
	buckets  map[string]*memStore // buckets other than the shadows'
}

type sent struct {
	to    string // client ID, "" for Publish
	topic string
	body  string
	opts  service.SendOptions
}

func newFakeHost(log *zap.Logger) *fakeHost {
	return &fakeHost{handlers: map[string]service.Handler{}, store: newMemStore(), allowed: map[string]bool{},
		api: http.NewServeMux(), dev: http.NewServeMux(), reg: prometheus.NewRegistry(), log: log, notify: make(chan struct{}, 1000)}
}

func (h *fakeHost) Handle(filter string, fn service.Handler) error {
	h.handlers[filter] = fn
	return nil
}

func (h *fakeHost) Publish(m service.Message) error {
	h.mu.Lock()
	h.sent = append(h.sent, sent{topic: m.Topic, body: string(m.Payload)})
	h.mu.Unlock()
	h.notify <- struct{}{}
	return nil
}

func (h *fakeHost) SendTo(to *service.Client, m service.Message, opts service.SendOptions) error {
	h.mu.Lock()
	h.sent = append(h.sent, sent{to: to.ClientID, topic: m.Topic, body: string(m.Payload), opts: opts})
	h.mu.Unlock()
	h.notify <- struct{}{}
	return nil
}

func (h *fakeHost) Authorize(c *service.Client, action, resource string) authz.Verdict {
	if c == nil || h.allowed[action+" "+resource] {
		return authz.Allow
	}
	return authz.Verdict{Action: action, Resource: resource}
}

func (h *fakeHost) Store(b string) (service.Store, error) {
	if b == Bucket {
		return h.store, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.buckets == nil {
		h.buckets = map[string]*memStore{}
	}
	if h.buckets[b] == nil {
		h.buckets[b] = newMemStore()
	}
	return h.buckets[b], nil
}
func (h *fakeHost) HandleAPI(name, pattern string, fn http.Handler) error {
	if name != "iotdata" {
		panic("signing name " + name)
	}
	h.api.Handle(pattern, fn)
	return nil
}
func (h *fakeHost) HandleDevice(pattern string, fn http.Handler) error {
	h.dev.Handle(pattern, fn)
	return nil
}
func (h *fakeHost) Clients() []*service.Client               { return nil }
func (h *fakeHost) Disconnect(*service.Client, string) error { return nil }
func (h *fakeHost) Metrics() prometheus.Registerer           { return h.reg }
func (h *fakeHost) Upstream() service.Upstream               { return h.up }
func (h *fakeHost) Log() *zap.Logger                         { return h.log }
func (h *fakeHost) deliver(topic string, from *service.Client, p string) {
	for f, fn := range h.handlers {
		if matches(f, topic) {
			_ = fn(context.Background(), &service.Message{Topic: topic, Payload: []byte(p), From: from})
		}
	}
}

// matches is MQTT topic filter matching with + (enough for the service's filters).
func matches(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	if len(fs) != len(ts) {
		return false
	}
	for i := range fs {
		if fs[i] != "+" && fs[i] != ts[i] {
			return false
		}
	}
	return true
}

// wait waits for n messages in all and returns them.
func (h *fakeHost) wait(t *testing.T, n int) []sent {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		if len(h.sent) >= n {
			out := append([]sent(nil), h.sent...)
			h.mu.Unlock()
			return out
		}
		h.mu.Unlock()
		select {
		case <-h.notify:
		case <-deadline:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("waited for %d messages, have %d: %+v", n, len(h.sent), h.sent)
		}
	}
}

func (h *fakeHost) reset() {
	h.mu.Lock()
	h.sent = nil
	h.mu.Unlock()
}

func startService(t *testing.T) (*Service, *fakeHost, *observer.ObservedLogs) {
	t.Helper()
	cfg, err := config.Default(Section)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	svc, err := New(service.Deps{Config: cfg, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	s := svc.(*Service)
	now := T0
	s.now = fixedClock(&now)
	h := newFakeHost(zap.New(core))
	if err := s.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s, h, logs
}

var dev1 = &service.Client{ClientID: "dev1", ThingName: "dev1", CertificateID: "abc", ProtocolVersion: 5}

// TestMQTTAnswers: accepted and rejected go to the requester only, on a subscription it holds; delta
// and documents to every subscriber; the request is also delivered as usual; a record per request.
func TestMQTTAnswers(t *testing.T) {
	_, h, logs := startService(t)
	P := "$aws/things/dev1/shadow"
	h.deliver(P+"/update", dev1, `{"state":{"desired":{"c":"red"}},"clientToken":"t1"}`)
	got := h.wait(t, 3)
	byTopic := map[string]sent{}
	for _, m := range got {
		byTopic[m.topic] = m
	}
	acc := byTopic[P+"/update/accepted"]
	if acc.to != "" || !strings.Contains(acc.body, `"clientToken":"t1"`) {
		t.Fatalf("accepted not published to all: %+v", acc)
	}
	for _, sfx := range []string{"/update/delta", "/update/documents"} {
		if m, ok := byTopic[P+sfx]; !ok || m.to != "" {
			t.Fatalf("%s not published to all: %+v", sfx, got)
		}
	}
	h.reset()
	h.deliver(P+"/get", dev1, `not json`)
	rej := h.wait(t, 1)[0]
	if rej.topic != P+"/get/rejected" || !strings.Contains(rej.body, `"code":400`) || rej.to != "dev1" || !rej.opts.RequireSubscription {
		t.Fatalf("rejected %+v", rej)
	}
	h.reset()
	h.deliver(P+"/get", dev1, `{"clientToken":"g"}`)
	if got := h.wait(t, 1)[0]; got.topic != P+"/get/accepted" || got.to != "dev1" || !got.opts.RequireSubscription {
		t.Fatalf("get/accepted %+v", got)
	}
	h.reset()
	h.deliver(P+"/update/accepted", dev1, `{"state":{}}`) // a response topic: ordinary traffic
	h.deliver("$aws/things/a.b/shadow/get", dev1, `{"clientToken":"n"}`)
	m := h.wait(t, 1)[0]
	if m.topic != "$aws/things/a.b/shadow/get/rejected" || !strings.Contains(m.body, `"code":400`) || !strings.Contains(m.body, `"clientToken":"n"`) {
		t.Fatalf("bad thing name answered %+v", m)
	}
	if len(h.wait(t, 1)) != 1 {
		t.Fatal("a response topic was answered")
	}
	h.reset()
	h.deliver(P+"/delete", dev1, `not json`) // the content of a delete is ignored
	if m := h.wait(t, 1)[0]; m.topic != P+"/delete/accepted" || !strings.Contains(m.body, `"version":1`) {
		t.Fatalf("delete with a non-JSON payload: %+v", m)
	}
	e := logs.FilterMessage("UpdateThingShadow").All()
	if len(e) != 1 {
		t.Fatalf("%d UpdateThingShadow records", len(e))
	}
	f := e[0].ContextMap()
	for k, want := range map[string]any{"eventType": "UpdateThingShadow", "status": "Success", "protocol": "MQTT",
		"deviceShadowName": "dev1", "topicName": P + "/update", "clientId": "dev1", "principalId": "abc"} {
		if f[k] != want {
			t.Errorf("record %s = %v, want %v", k, f[k], want)
		}
	}
	if f := logs.FilterMessage("GetThingShadow").All()[0].ContextMap(); f["status"] != "Failure" || f["reason"] != "400" || f["details"] != "Invalid JSON" {
		t.Errorf("refusal record %v", f)
	}
}

// TestAcceptedToRequesterOnly: with acceptedToAllSubscribers off, update/accepted and delete/accepted
// go to the requester only, and an HTTP update publishes no update/accepted.
func TestAcceptedToRequesterOnly(t *testing.T) {
	s, h, _ := startService(t)
	s.cfg.AcceptedToAllSubscribers = false
	P := "$aws/things/dev1/shadow"
	h.deliver(P+"/update", dev1, `{"state":{"reported":{"c":1}}}`)
	h.deliver(P+"/delete", dev1, ``)
	got := h.wait(t, 3)
	for _, m := range got {
		switch m.topic {
		case P + "/update/accepted", P + "/delete/accepted":
			if m.to != "dev1" || !m.opts.RequireSubscription {
				t.Fatalf("%s not to the requester only: %+v", m.topic, m)
			}
		case P + "/update/documents":
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
	h.reset()
	w := httptest.NewRecorder()
	h.api.ServeHTTP(w, httptest.NewRequest("POST", "/things/dev1/shadow", strings.NewReader(`{"state":{"reported":{"c":2}}}`)))
	if w.Code != 200 {
		t.Fatalf("HTTP update %d %s", w.Code, w.Body)
	}
	if got := h.wait(t, 1); len(got) != 1 || got[0].topic != P+"/update/documents" {
		t.Fatalf("HTTP update published %+v", got)
	}
}

// TestDrainLingers: a connection's drain goroutine waits for the connection's next request after it
// answered one (drainLinger), serves it when it comes, and ends when the service stops, without
// waiting out the linger.
func TestDrainLingers(t *testing.T) {
	defer func(d time.Duration) { drainLinger = d }(drainLinger)
	drainLinger = time.Hour
	s, h, _ := startService(t)
	P := "$aws/things/dev1/shadow"
	state := func() (running, idle bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		q := s.queues[dev1.ClientID]
		return q != nil && q.running, q != nil && q.idle
	}
	waitIdle := func() bool {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if running, idle := state(); running && idle {
				return true
			}
		}
		return false
	}
	for i, want := range []string{`"version":1`, `"version":2`} {
		h.reset()
		h.deliver(P+"/update", dev1, `{"state":{"reported":{"n":`+string(rune('1'+i))+`}}}`)
		var acc sent
		for _, m := range h.wait(t, 2) {
			if m.topic == P+"/update/accepted" {
				acc = m
			}
		}
		if !strings.Contains(acc.body, want) {
			t.Fatalf("update %d: accepted %+v", i+1, acc)
		}
		if !waitIdle() {
			t.Fatalf("update %d: the drain goroutine ended instead of waiting for the next request", i+1)
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop waits for the lingering drain goroutine")
	}
	if running, _ := state(); running {
		t.Fatal("the drain goroutine is still running after Stop")
	}
}

// subscribedHost is a fakeHost that tells whether a topic has subscribers, as the broker's host does.
type subscribedHost struct {
	*fakeHost
	subscribed map[string]bool
}

func (h subscribedHost) HasSubscribers(topic string) bool { return h.subscribed[topic] }

// TestConsumedRequestAckedWhenServed: a QoS 1 request no subscription matches is consumed (not
// delivered, so not logged for subscribers) and its PUBACK waits until it is served: the update
// stored and accepted sent, or the rejection sent; a failed write leaves it unacknowledged. A request
// with a subscriber, a retained one and a QoS 0 one are delivered as usual.
func TestConsumedRequestAckedWhenServed(t *testing.T) {
	s, h, _ := startService(t)
	P := "$aws/things/dev1/shadow"
	sh := subscribedHost{fakeHost: h, subscribed: map[string]bool{}}
	s.host = sh
	publish := func(topic, payload string, qos byte, retain bool) ([]func() error, error) {
		var waits []func() error
		ctx := service.WithAckAfter(context.Background(), func(w func() error) { waits = append(waits, w) })
		err := h.handlers[requestFilters[0]](ctx, &service.Message{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain, From: dev1})
		return waits, err
	}
	acked := func(w func() error) <-chan error {
		c := make(chan error, 1)
		go func() { c <- w() }()
		return c
	}

	h.store.block = make(chan struct{})
	waits, err := publish(P+"/update", `{"state":{"reported":{"n":1}}}`, 1, false)
	if !errors.Is(err, service.Consumed) || len(waits) != 1 {
		t.Fatalf("request nobody subscribes to: %v, %d waits", err, len(waits))
	}
	ack := acked(waits[0])
	select {
	case err := <-ack:
		t.Fatalf("acknowledged (%v) before the update was stored", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(h.store.block)
	if err := <-ack; err != nil {
		t.Fatalf("ack after the update: %v", err)
	}
	h.store.block = nil
	if m := h.wait(t, 1)[0]; m.topic != P+"/update/accepted" {
		t.Fatalf("acknowledged, but sent %+v", m)
	}

	h.reset()
	waits, err = publish(P+"/update", `not json`, 1, false)
	if !errors.Is(err, service.Consumed) || len(waits) != 1 {
		t.Fatalf("refused request: %v, %d waits", err, len(waits))
	}
	if err := <-acked(waits[0]); err != nil {
		t.Fatalf("ack after a rejection: %v", err)
	}
	if m := h.wait(t, 1)[0]; m.topic != P+"/update/rejected" {
		t.Fatalf("sent %+v", m)
	}

	h.store.failPut = true
	waits, err = publish(P+"/update", `{"state":{"reported":{"n":2}}}`, 1, false)
	if !errors.Is(err, service.Consumed) || len(waits) != 1 {
		t.Fatalf("request the store fails: %v, %d waits", err, len(waits))
	}
	if err := <-acked(waits[0]); err == nil {
		t.Fatal("a request whose update could not be stored was acknowledged")
	}
	h.store.failPut = false

	sh.subscribed[P+"/update"] = true
	for _, c := range []struct {
		name   string
		topic  string
		qos    byte
		retain bool
	}{{"subscribed", P + "/update", 1, false}, {"retained", P + "/get", 1, true}, {"QoS 0", P + "/get", 0, false}} {
		if waits, err := publish(c.topic, `{}`, c.qos, c.retain); err != nil || len(waits) != 0 {
			t.Errorf("%s request: %v, %d waits; want it delivered as usual", c.name, err, len(waits))
		}
	}
}

// TestDocumentsOnlyWhenReceivable: update/documents is published when a subscription (or another
// service) can receive it, and left out when none can; update/accepted and update/delta are
// published either way.
func TestDocumentsOnlyWhenReceivable(t *testing.T) {
	s, h, _ := startService(t)
	P := "$aws/things/dev1/shadow"
	sh := subscribedHost{fakeHost: h, subscribed: map[string]bool{}}
	s.host = sh
	topics := func(n int) []string {
		var out []string
		for _, m := range h.wait(t, n) {
			out = append(out, m.topic)
		}
		slices.Sort(out)
		return out
	}
	h.deliver(P+"/update", dev1, `{"state":{"desired":{"c":"red"}}}`)
	if got, want := topics(2), []string{P + "/update/accepted", P + "/update/delta"}; !slices.Equal(got, want) {
		t.Fatalf("nobody subscribed to update/documents: published %v, want %v", got, want)
	}
	h.reset()
	sh.subscribed[P+"/update/documents"] = true
	h.deliver(P+"/update", dev1, `{"state":{"reported":{"c":"red"}}}`)
	if got, want := topics(2), []string{P + "/update/accepted", P + "/update/documents"}; !slices.Equal(got, want) {
		t.Fatalf("update/documents subscribed: published %v, want %v", got, want)
	}
	if body := h.wait(t, 2); !strings.Contains(body[0].body+body[1].body, `"previous":{"state":{"desired":{"c":"red"}}`) {
		t.Fatalf("update/documents %+v", body)
	}
}

// TestInFlightLimit (31): with 10 requests of one connection unanswered, the 11th is refused with 429;
// another connection is not affected.
func TestInFlightLimit(t *testing.T) {
	_, h, _ := startService(t)
	h.store.block = make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(h.store.block) }) }
	t.Cleanup(release)
	P := "$aws/things/dev1/shadow"
	for i := 0; i < 11; i++ {
		h.deliver(P+"/update", dev1, `{"state":{"reported":{"n":1}},"clientToken":"c`+string(rune('a'+i))+`"}`)
	}
	m := h.wait(t, 1)[0]
	if m.topic != P+"/update/rejected" || !strings.Contains(m.body, `"code":429`) || !strings.Contains(m.body, `"clientToken":"ck"`) {
		t.Fatalf("11th request: %+v", m)
	}
	release()
	got := h.wait(t, 1+10*2)
	accepted := 0 // published to all: to == ""
	for _, m := range got {
		if m.topic == P+"/update/accepted" {
			accepted++
		}
	}
	if accepted != 10 {
		t.Fatalf("%d accepted, want 10", accepted)
	}
}

// TestHTTPAPI: the iot-data routes on both listeners, AWS' error shape, a device authorized per action,
// and an HTTP update publishing delta and documents (32).
func TestHTTPAPI(t *testing.T) {
	_, h, _ := startService(t)
	do := func(mux *http.ServeMux, dev *service.Client, method, target, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		if dev != nil {
			r = r.WithContext(service.WithDevice(r.Context(), dev))
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	w := do(h.api, nil, "POST", "/things/dev1/shadow?name=cfg", `{"state":{"desired":{"a":1}}}`)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"version":1`) || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("update: %d %s", w.Code, w.Body)
	}
	var topics []string
	for _, m := range h.wait(t, 3) {
		topics = append(topics, m.topic)
	}
	Pn := "$aws/things/dev1/shadow/name/cfg"
	if strings.Join(topics, " ") != Pn+"/update/accepted "+Pn+"/update/documents "+Pn+"/update/delta" {
		t.Fatalf("HTTP update published %v", topics)
	}
	cases := []struct {
		name                 string
		dev                  *service.Client
		allow                string
		method, target, body string
		code                 int
		errType, contains    string
	}{
		{"get", nil, "", "GET", "/things/dev1/shadow?name=cfg", "", 200, "", `"desired":{"a":1}`},
		{"get missing", nil, "", "GET", "/things/dev1/shadow", "", 404, "ResourceNotFoundException", `{"message":"No shadow exists with name: 'dev1'"}`},
		{"bad json", nil, "", "POST", "/things/dev1/shadow", "{", 400, "InvalidRequestException", `"Invalid JSON"`},
		{"conflict", nil, "", "POST", "/things/dev1/shadow?name=cfg", `{"state":{},"version":7}`, 409, "ConflictException", `"Version conflict"`},
		{"bad name", nil, "", "GET", "/things/dev1/shadow?name=a%20b", "", 400, "InvalidRequestException", "shadow name"},
		{"list", nil, "", "GET", "/api/things/shadow/ListNamedShadowsForThing/dev1", "", 200, "", `"results":["cfg"]`},
		{"device denied", dev1, "", "GET", "/things/dev1/shadow?name=cfg", "", 403, "ForbiddenException", `"Forbidden"`},
		{"device allowed", dev1, "iot:GetThingShadow thing/dev1", "GET", "/things/dev1/shadow?name=cfg", "", 200, "", `"version":1`},
		{"device update needs its own action", dev1, "iot:GetThingShadow thing/dev1", "POST", "/things/dev1/shadow", `{"state":{}}`, 403, "ForbiddenException", ""},
		{"device delete", dev1, "iot:DeleteThingShadow thing/dev1", "DELETE", "/things/dev1/shadow?name=cfg", "", 200, "", `"version":1`},
		{"deleted", nil, "", "GET", "/things/dev1/shadow?name=cfg", "", 404, "ResourceNotFoundException", ""},
		{"too large", nil, "", "POST", "/things/dev1/shadow", `{"state":{"reported":{"a":"` + strings.Repeat("x", 9000) + `"}}}`, 413, "RequestEntityTooLargeException", `"The payload exceeds the maximum size allowed"`},
		{"publish qos 2", nil, "", "POST", "/topics/a/b?qos=2", "x", 400, "InvalidRequestException", ""},
		{"publish device denied", dev1, "", "POST", "/topics/a/b", "x", 403, "ForbiddenException", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.allowed = map[string]bool{tc.allow: true}
			for _, mux := range []*http.ServeMux{h.api, h.dev} {
				if tc.dev != nil && mux == h.api {
					continue
				}
				w := do(mux, tc.dev, tc.method, tc.target, tc.body)
				if w.Code != tc.code || w.Header().Get("x-amzn-ErrorType") != tc.errType || !strings.Contains(w.Body.String(), tc.contains) {
					t.Fatalf("%d %q %s, want %d %q %s", w.Code, w.Header().Get("x-amzn-ErrorType"), w.Body, tc.code, tc.errType, tc.contains)
				}
				if tc.method != "GET" {
					break // a write is done once
				}
			}
		})
	}
	h.reset()
	h.allowed = map[string]bool{"iot:Publish topic/a/b": true}
	if w := do(h.dev, dev1, "POST", "/topics/a/b?qos=1", "hello"); w.Code != 200 {
		t.Fatalf("publish: %d %s", w.Code, w.Body)
	}
	if m := h.wait(t, 1)[0]; m.topic != "a/b" || m.body != "hello" {
		t.Fatalf("published %+v", m)
	}
	// A Publish to a shadow request topic is a shadow request.
	h.reset()
	if w := do(h.api, nil, "POST", "/topics/$aws/things/dev2/shadow/update", `{"state":{"desired":{"x":1}}}`); w.Code != 200 {
		t.Fatalf("publish to shadow: %d %s", w.Code, w.Body)
	}
	w = do(h.api, nil, "GET", "/things/dev2/shadow", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"delta":{"x":1}`) {
		t.Fatalf("shadow after HTTP publish: %d %s", w.Code, w.Body)
	}
}

// TestHTTPListPages: ListNamedShadowsForThing pages with pageSize and an opaque nextToken.
func TestHTTPListPages(t *testing.T) {
	_, h, _ := startService(t)
	for _, n := range []string{"c", "a", "b"} {
		w := httptest.NewRecorder()
		h.api.ServeHTTP(w, httptest.NewRequest("POST", "/things/t1/shadow?name="+n, strings.NewReader(`{"state":{}}`)))
		if w.Code != 200 {
			t.Fatal(w.Body)
		}
	}
	var page struct {
		Results   []string `json:"results"`
		NextToken string   `json:"nextToken"`
		Timestamp int64    `json:"timestamp"`
	}
	get := func(q string) int {
		w := httptest.NewRecorder()
		h.api.ServeHTTP(w, httptest.NewRequest("GET", "/api/things/shadow/ListNamedShadowsForThing/t1"+q, nil))
		page.NextToken = ""
		_ = json.Unmarshal(w.Body.Bytes(), &page)
		return w.Code
	}
	if code := get("?pageSize=2"); code != 200 || strings.Join(page.Results, ",") != "a,b" || page.NextToken == "" || page.Timestamp != T0 {
		t.Fatalf("page 1: %d %+v", code, page)
	}
	if code := get("?pageSize=2&nextToken=" + page.NextToken); code != 200 || strings.Join(page.Results, ",") != "c" || page.NextToken != "" {
		t.Fatalf("page 2: %d %+v", code, page)
	}
	for _, q := range []string{"?pageSize=0", "?pageSize=101", "?nextToken=!!"} {
		if code := get(q); code != 400 {
			t.Errorf("%s: %d, want 400", q, code)
		}
	}
}

// TestMetrics: requests counted by operation, protocol, result and code.
func TestMetrics(t *testing.T) {
	s, h, _ := startService(t)
	h.deliver("$aws/things/dev1/shadow/get", dev1, ``)
	h.wait(t, 1)
	s.wg.Wait()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range families {
		if f.GetName() != "ggbroker_shadow_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["operation"] == "get" && labels["protocol"] == "MQTT" && labels["result"] == "rejected" && labels["code"] == "404" {
				found = m.GetCounter().GetValue() == 1
			}
		}
	}
	if !found {
		t.Fatal("no get/MQTT/rejected/404 count of 1")
	}
}

// TestConfig: the block's defaults and its checks.
func TestConfig(t *testing.T) {
	cfg, err := config.Default(Section)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeConfig(cfg)
	if err != nil || !c.Enabled || c.DocumentSizeLimitBytes != 8192 || c.MaxInFlightRequests != 10 || !c.AcceptedToAllSubscribers {
		t.Fatalf("defaults %+v %v", c, err)
	}
	t.Setenv("GGBROKER_SHADOW_DOCUMENTSIZELIMITBYTES", "40000")
	cfg, err = config.Default(Section)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeConfig(cfg); err == nil || !strings.Contains(err.Error(), "shadow.documentSizeLimitBytes") {
		t.Fatalf("40000 accepted: %v", err)
	}
}

// OnUnknownCertificate: the fake host refuses no connections, so it has none to report.
func (h *fakeHost) OnUnknownCertificate(func([]*x509.Certificate)) {}
