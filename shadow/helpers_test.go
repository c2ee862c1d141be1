package shadow

import (
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ggbroker/ggbroker/service"
)

// memStore is an in-memory service.Store; failPut makes writes fail, as a full disk would.
type memStore struct {
	mu      sync.Mutex
	m       map[string][]byte
	failPut bool
	gets    int // Get calls, to see what the cache spares the store
	// block, when not nil, holds every Put until it is closed (to keep requests in flight).
	block chan struct{}
}

func newMemStore() *memStore { return &memStore{m: map[string][]byte{}} }

var errDiskFull = errors.New("disk full")

func (s *memStore) Get(k string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	v, ok := s.m[k]
	if !ok {
		return nil, nil
	}
	return append([]byte(nil), v...), nil
}

func (s *memStore) Put(k string, v []byte) error {
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failPut {
		return errDiskFull
	}
	s.m[k] = append([]byte(nil), v...)
	return nil
}

func (s *memStore) Delete(k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

func (s *memStore) ForEach(prefix string, fn func(string, []byte) error) error {
	s.mu.Lock()
	var keys []string
	for k := range s.m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = s.m[k]
	}
	s.mu.Unlock()
	for i, k := range keys {
		if err := fn(k, vals[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Update(fn func(service.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(memTx{s})
}

type memTx struct{ s *memStore }

func (t memTx) Get(k string) ([]byte, error) { return t.s.m[k], nil }
func (t memTx) Put(k string, v []byte) error { t.s.m[k] = v; return nil }
func (t memTx) Delete(k string) error        { delete(t.s.m, k); return nil }

// obj decodes a JSON document into a generic map or fails the test.
func obj(t testing.TB, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %s: %v", raw, err)
	}
	return m
}

// at walks a dotted path ("state.desired.c") through decoded JSON; ok is false if any step is missing.
func at(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		v, ok = m[p]
		if !ok {
			return nil, false
		}
	}
	return v, true
}

// jsonOf is the canonical JSON of a decoded value, for comparisons.
func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// canon re-encodes a JSON text canonically (sorted keys).
func canon(t testing.TB, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON in test: %s: %v", s, err)
	}
	return jsonOf(v)
}
