package broker

import "testing"

// TestBurstWatch: a trim comes after a burst of at least the threshold, once a tick has seen no new
// connect, and once per burst; a trickle below the threshold, or a burst still going on, is left alone.
func TestBurstWatch(t *testing.T) {
	w := burstWatch{threshold: 100, last: 7, trimmed: 7}
	steps := []struct {
		count int64 // connects counted at this tick
		burst int64 // 0: no trim at this tick
	}{
		{57, 0},    // connects going on
		{57, 0},    // quiet, but only 50 since the start
		{117, 0},   // 110: the burst goes on
		{117, 110}, // quiet after 110: trim
		{117, 0},   // still quiet: not again
		{216, 0},
		{216, 0},   // quiet after 99 more: below the threshold
		{217, 0},   // the 100th
		{217, 100}, // quiet after 100 since the last trim
	}
	for i, s := range steps {
		burst, trim := w.tick(s.count)
		if trim != (s.burst > 0) || burst != s.burst {
			t.Fatalf("tick %d (count %d): trim %v after %d, want a trim after %d", i, s.count, trim, burst, s.burst)
		}
	}
}
