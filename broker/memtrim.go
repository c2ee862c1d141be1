package broker

import (
	"context"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"

	"go.uber.org/zap"
)

// A burst of connects (a gateway's devices reconnecting after a restart or an outage) leaves the
// TLS handshakes' garbage in the heap and every connection's goroutine on the large stack its
// handshake grew. Go collects that garbage only when the heap reaches twice what was live at the
// last collection, shrinks a parked stack by half per collection, and returns free memory to the
// operating system slowly: an idle gateway would hold up to twice the memory it needs, for
// minutes. So, once a burst is over, the broker collects twice (a stack shrinks by half each time:
// a handshake's 16 KiB goes to the 4 KiB an idle connection parks in, idleconn.go) and returns the
// free heap at once (limits.trimMemoryAfterConnects).

// burstWatch decides, once a second, whether a burst of connects has just ended.
type burstWatch struct {
	threshold     int64 // connects since the last trim that make a burst
	last, trimmed int64 // the connect count at the last tick and at the last trim
}

// tick takes the connect count now and reports a burst to trim after: at least threshold connects
// since the last trim, and none since the last tick.
func (w *burstWatch) tick(now int64) (burst int64, trim bool) {
	if now == w.last && now-w.trimmed >= w.threshold {
		burst, trim = now-w.trimmed, true
		w.trimmed = now
	}
	w.last = now
	return burst, trim
}

// trimMemory watches the broker's connect counter once a second and trims after each burst
// (burstWatch), when limits.trimMemoryAfterConnects asks; it returns when ctx ends.
func (b *Broker) trimMemory(ctx context.Context) {
	threshold := b.cfg.Limits.TrimMemoryAfterConnects
	if threshold <= 0 {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	n := b.metrics.connects.Load()
	w := burstWatch{threshold: threshold, last: n, trimmed: n}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		burst, trim := w.tick(b.metrics.connects.Load())
		if !trim {
			continue
		}
		start := time.Now()
		before := memoryHeld()
		runtime.GC()
		debug.FreeOSMemory() // a second collection, then the free heap back to the OS
		b.log.Debug("memory trimmed after a burst of connects", zap.Int64("connects", burst),
			zap.Uint64("heldBytesBefore", before), zap.Uint64("heldBytesAfter", memoryHeld()),
			zap.Duration("took", time.Since(start)))
	}
}

// memoryHeld is the memory the Go runtime holds from the operating system and has not returned.
func memoryHeld() uint64 {
	s := []rtmetrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}
