package jobs

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/netip"
	"sort"
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
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/service"
)

// memStore is an in-memory service.Store; fail makes every write fail (a full disk).
type memStore struct {
	mu   sync.Mutex
	data map[string][]byte
	fail bool
}

func newMemStore() *memStore { return &memStore{data: map[string][]byte{}} }

func (m *memStore) Get(key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.data[key]; ok {
		return append([]byte(nil), v...), nil
	}
	return nil, nil
}

func (m *memStore) Put(key string, value []byte) error {
	return m.Update(func(tx service.Tx) error { return tx.Put(key, value) })
}

func (m *memStore) Delete(key string) error {
	return m.Update(func(tx service.Tx) error { return tx.Delete(key) })
}

func (m *memStore) ForEach(prefix string, fn func(string, []byte) error) error {
	m.mu.Lock()
	keys := make([]string, 0, len(m.data))
	for k := range m.data {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = append([]byte(nil), m.data[k]...)
	}
	m.mu.Unlock()
	for i, k := range keys {
		if err := fn(k, vals[i]); err != nil {
			return err
		}
	}
	return nil
}

type memTx struct {
	puts map[string][]byte
	dels map[string]bool
	base *memStore
}

func (t *memTx) Get(key string) ([]byte, error) {
	if t.dels[key] {
		return nil, nil
	}
	if v, ok := t.puts[key]; ok {
		return v, nil
	}
	return t.base.data[key], nil
}
func (t *memTx) Put(key string, v []byte) error {
	delete(t.dels, key)
	t.puts[key] = append([]byte(nil), v...)
	return nil
}
func (t *memTx) Delete(key string) error { delete(t.puts, key); t.dels[key] = true; return nil }

func (m *memStore) Update(fn func(service.Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("disk full")
	}
	tx := &memTx{puts: map[string][]byte{}, dels: map[string]bool{}, base: m}
	if err := fn(tx); err != nil {
		return err
	}
	for k := range tx.dels {
		delete(m.data, k)
	}
	for k, v := range tx.puts {
		m.data[k] = v
	}
	return nil
}

// sent is one message the service sent: to a client (SendTo) or to the subscribers (Publish, to nil).
type sent struct {
	to  *service.Client
	msg service.Message
}

// fakeHost is a service.Host for unit tests: messages are recorded, routes served by plain muxes.
type fakeHost struct {
	mu       sync.Mutex
	store    *memStore
	handlers []service.Handler
	out      []sent
	api      map[string]*http.ServeMux
	device   *http.ServeMux
	reg      *prometheus.Registry
	log      *zap.Logger
	logs     *observer.ObservedLogs
	deny     func(c *service.Client, action, resource string) bool
}

func newFakeHost(store *memStore) *fakeHost {
	core, logs := observer.New(zapcore.DebugLevel)
	return &fakeHost{store: store, api: map[string]*http.ServeMux{}, device: http.NewServeMux(), reg: prometheus.NewRegistry(), log: zap.New(core), logs: logs}
}

func (h *fakeHost) Handle(filter string, fn service.Handler) error {
	h.handlers = append(h.handlers, fn)
	return nil
}

func (h *fakeHost) Publish(m service.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.out = append(h.out, sent{nil, m})
	return nil
}

func (h *fakeHost) SendTo(to *service.Client, m service.Message, opts service.SendOptions) error {
	if opts.RequireSubscription {
		return errors.New("jobs answers must not require a subscription")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.out = append(h.out, sent{to, m})
	return nil
}

func (h *fakeHost) Authorize(c *service.Client, action, resource string) authz.Verdict {
	if c != nil && h.deny != nil && h.deny(c, action, resource) {
		return authz.Verdict{Action: action, Resource: resource, Decision: policy.ImplicitDeny, Reason: "no statement allows"}
	}
	return authz.Allow
}

func (h *fakeHost) Store(bucket string) (service.Store, error) { return h.store, nil }

func (h *fakeHost) HandleAPI(signingName, pattern string, hd http.Handler) error {
	if h.api[signingName] == nil {
		h.api[signingName] = http.NewServeMux()
	}
	h.api[signingName].Handle(pattern, hd)
	return nil
}

func (h *fakeHost) HandleDevice(pattern string, hd http.Handler) error {
	h.device.Handle(pattern, hd)
	return nil
}

func (h *fakeHost) Clients() []*service.Client               { return nil }
func (h *fakeHost) Disconnect(*service.Client, string) error { return nil }
func (h *fakeHost) Metrics() prometheus.Registerer           { return h.reg }
func (h *fakeHost) Upstream() service.Upstream               { return nil }
func (h *fakeHost) Log() *zap.Logger                         { return h.log }
func (h *fakeHost) take() []sent                             { h.mu.Lock(); defer h.mu.Unlock(); o := h.out; h.out = nil; return o }
func (h *fakeHost) publish(ctx context.Context, m *service.Message) error {
	var err error
	for _, fn := range h.handlers {
		err = fn(ctx, m)
	}
	return err
}

// clock is a settable clock for the tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a started service on a fake host with a fake clock.
type fixture struct {
	t      *testing.T
	svc    *Service
	host   *fakeHost
	clock  *clock
	cancel context.CancelFunc
	dev    *service.Client
}

func startFixture(t *testing.T, store *memStore, clk *clock) *fixture {
	t.Helper()
	cfg, err := config.Default(Section)
	if err != nil {
		t.Fatal(err)
	}
	if clk == nil {
		clk = &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	}
	svc, err := newService(service.Deps{Config: cfg}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	host := newFakeHost(store)
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.Start(ctx, host); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, svc: svc, host: host, clock: clk, cancel: cancel,
		dev: service.NewClient(service.Client{ClientID: "t1", ThingName: "t1", SourceIP: netip.MustParseAddr("127.0.0.1"), SourcePort: 5000, ProtocolVersion: 5}, nil)}
	t.Cleanup(func() { cancel(); _ = svc.Stop() })
	return f
}

// OnUnknownCertificate: the fake host refuses no connections, so it has none to report.
func (h *fakeHost) OnUnknownCertificate(func([]*x509.Certificate)) {}
