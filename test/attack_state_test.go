package test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/broker/store"
)

// TestDamagedSessionsFileIsRefusedNotPanicked (issue 17, medium): a truncated or garbled sessions.db
// made the broker panic (bbolt's consistency check reads the freelist in a goroutine of its own, where
// a panic cannot be recovered), with and without --recover. Now it is refused naming the file, and
// --recover moves it aside and starts.
func TestDamagedSessionsFileIsRefusedNotPanicked(t *testing.T) {
	h := startBroker(t, nil)
	for i := range 30 {
		connectV5Session(t, h, h.createDevice(fmt.Sprintf("dmg-%d", i)), 3600)
	}
	h.stop()
	path := h.cfg.PersistenceFile()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every way of cutting or garbling the file: none may panic; the ones that damage what the file
	// holds must be refused naming it; --recover must start on each.
	damaged := map[string][]byte{}
	for off := 4096; off < len(orig); off += 4096 {
		damaged[fmt.Sprintf("truncated at %d", off)] = orig[:off]
		g := append([]byte(nil), orig...)
		for i := off; i < off+200; i++ {
			g[i] ^= 0x5a
		}
		damaged[fmt.Sprintf("garbled at %d", off)] = g
	}
	refused := 0
	for name, data := range damaged {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := app.New(h.cfg, zap.NewNop())
		var corrupt *store.CorruptStateError
		switch {
		case errors.As(err, &corrupt) && corrupt.Path == path:
			refused++
		case err == nil:
			b.Close() // the damage was in pages the file no longer uses
		default:
			t.Fatalf("New on a file %s: %v", name, err)
		}
		b, err = app.New(h.cfg, zap.NewNop(), broker.WithRecover())
		if err != nil {
			t.Fatalf("--recover on a file %s: %v", name, err)
		}
		b.Close()
		aside, _ := filepath.Glob(path + ".corrupt-*")
		for _, a := range aside {
			os.Remove(a)
		}
	}
	if refused == 0 {
		t.Fatalf("none of %d damaged files was refused", len(damaged))
	}
	t.Logf("%d of %d damaged files refused, the others' damage was in unused pages", refused, len(damaged))
}

// TestInflightMetricAfterRestart (issue 17, low): ggbroker_inflight_messages went negative once the
// messages restored after a restart were acknowledged (mochi counted their acknowledgement, not their
// restore).
func TestInflightMetricAfterRestart(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("inflight-dev")
	pub := h.mustConnectV3(h.createDevice("inflight-pub"))
	c := connectSession(t, h.endpoint(d), "inflight-dev", false, nil)
	subscribeV3(t, c, "inflight/#", 1)
	c.Disconnect(0)
	for i := range 5 {
		publishV3(t, pub, fmt.Sprintf("inflight/%d", i), 1, false, "x")
	}
	h.stop()
	h2 := startWith(t, h.cfg)
	if v := h2.metric("ggbroker_inflight_messages"); v != 5 {
		t.Fatalf("ggbroker_inflight_messages %v after the restart, want the 5 restored", v)
	}
	got := make(chan string, 10)
	connectSession(t, h2.endpoint(d), "inflight-dev", false, got)
	for range 5 {
		<-got
	}
	h2.waitMetric("ggbroker_inflight_messages", func(v float64) bool { return v == 0 })
}
