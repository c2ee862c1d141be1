package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Status is what `ggbroker bridge status` shows: the bridge's state, as the running broker last wrote
// it to bridge-status.json in the state directory (about once a second while it changes).
type Status struct {
	Running       bool      `json:"running"`
	PID           int       `json:"pid"`
	Updated       time.Time `json:"updated"`
	Endpoint      string    `json:"endpoint"` // "" when no upstream is configured
	ClientID      string    `json:"clientId,omitempty"`
	Connected     bool      `json:"connected"`
	Protocol      string    `json:"protocol,omitempty"`
	Since         time.Time `json:"since"` // of the current connected or disconnected state
	LastError     string    `json:"lastError,omitempty"`
	LastErrorAt   time.Time `json:"lastErrorAt,omitzero"`
	SpoolMessages int64     `json:"spoolMessages"`
	SpoolBytes    int64     `json:"spoolBytes"`
	Forwarded     Counts    `json:"forwarded"`
	Dropped       int64     `json:"dropped"`
	Mappings      []string  `json:"mappings"`
}

// Counts are messages forwarded per direction since the broker started.
type Counts struct {
	ToUpstream   int64 `json:"toUpstream"`
	FromUpstream int64 `json:"fromUpstream"`
	Local        int64 `json:"local"`
}

// ReadStatus reads the status file of a state directory.
func ReadStatus(stateDir string) (*Status, error) {
	raw, err := os.ReadFile(filepath.Join(stateDir, StatusFile))
	if err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(stateDir, StatusFile), err)
	}
	return &s, nil
}

// statusBoard keeps the Status and writes it when it changed.
type statusBoard struct {
	path string
	b    *Bridge
	mu   sync.Mutex
	s    Status
}

func newStatusBoard(path string, b *Bridge) *statusBoard {
	sb := &statusBoard{path: path, b: b}
	sb.s = Status{Running: true, PID: os.Getpid(), Since: time.Now().UTC()}
	if up := b.set.Upstream; up != nil {
		sb.s.Endpoint, sb.s.ClientID = up.Address, up.ClientID
	}
	for _, r := range b.set.Routes {
		sb.s.Mappings = append(sb.s.Mappings, fmt.Sprintf("%s: %s %s -> %s %s", r.Name, r.Source, r.Topic, r.Target, r.target(r.Topic)))
	}
	return sb
}

func (sb *statusBoard) connected(protocol string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.s.Connected, sb.s.Protocol, sb.s.Since = true, protocol, time.Now().UTC()
}

func (sb *statusBoard) disconnected(reason string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.s.Connected, sb.s.Since = false, time.Now().UTC()
	sb.s.LastError, sb.s.LastErrorAt = reason, sb.s.Since
}

func (sb *statusBoard) failed(reason string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.s.LastError, sb.s.LastErrorAt = reason, time.Now().UTC()
}

// snapshot fills in the counters.
func (sb *statusBoard) snapshot() Status {
	sb.mu.Lock()
	s := sb.s
	sb.mu.Unlock()
	if sp := sb.b.spool; sp != nil {
		s.SpoolMessages, s.SpoolBytes = sp.stats()
	}
	m := sb.b.m
	s.Forwarded = Counts{ToUpstream: m.toUpstream.Load(), FromUpstream: m.fromUpstream.Load(), Local: m.local.Load()}
	s.Dropped = m.drops.Load()
	return s
}

// run writes the file once a second while something changed, and a last time, not running, at the end.
func (sb *statusBoard) run(ctx context.Context) {
	var last []byte
	write := func(final bool) {
		s := sb.snapshot()
		if final {
			s.Running, s.Connected = false, false
		}
		cmp := s
		cmp.Updated = time.Time{}
		key, _ := json.Marshal(cmp)
		if !final && bytes.Equal(key, last) {
			return
		}
		last = key
		s.Updated = time.Now().UTC()
		raw, _ := json.MarshalIndent(s, "", "  ")
		if err := writeAtomic(sb.path, append(raw, '\n')); err != nil {
			sb.b.log.Warn("bridge could not write its status file", zap.String("details", err.Error()))
		}
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	write(false)
	for {
		select {
		case <-t.C:
			write(false)
		case <-ctx.Done():
			write(true)
			return
		}
	}
}

// writeAtomic writes a file through a temporary file and a rename, so a reader never sees half of it.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
