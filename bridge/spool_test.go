package bridge

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/service"
)

func TestSpoolKeepsOrderAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), SpoolFile)
	sp, err := openSpool(path, SpoolConfig{MaxMessages: 100, MaxBytes: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := &record{Topic: "a/b", Payload: []byte("x"), Retain: true, Enqueued: time.Unix(100, 5), ContentType: "text/plain",
		ResponseTopic: "r", CorrelationData: []byte{1}, MessageExpiry: 60, UserProperties: []service.UserProperty{{Key: "k", Value: "v"}}}
	if err := sp.append(in); err != nil {
		t.Fatal(err)
	}
	for i := range 9 {
		if err := sp.append(&record{Topic: "t", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	sp, err = openSpool(path, SpoolConfig{MaxMessages: 100, MaxBytes: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if n, _ := sp.stats(); n != 10 {
		t.Fatalf("count after reopen %d", n)
	}
	recs, err := sp.read(0, 100)
	if err != nil || len(recs) != 10 {
		t.Fatalf("read %d, %v", len(recs), err)
	}
	got := recs[0]
	if got.Topic != in.Topic || string(got.Payload) != "x" || !got.Retain || !got.Enqueued.Equal(in.Enqueued) || got.ContentType != in.ContentType ||
		got.ResponseTopic != "r" || got.CorrelationData[0] != 1 || got.MessageExpiry != 60 || got.UserProperties[0] != in.UserProperties[0] {
		t.Fatalf("record changed: %+v", got)
	}
	for i, r := range recs[1:] {
		if string(r.Payload) != fmt.Sprint(i) || r.Seq <= recs[i].Seq {
			t.Fatalf("out of order at %d: %+v", i, r)
		}
	}
	if err := sp.remove([]uint64{recs[0].Seq, recs[1].Seq, 999}); err != nil {
		t.Fatal(err)
	}
	if n, _ := sp.stats(); n != 8 {
		t.Fatalf("count after remove %d", n)
	}
	rest, _ := sp.read(recs[1].Seq, 100)
	if len(rest) != 8 || string(rest[0].Payload) != "1" {
		t.Fatalf("after remove: %d, %+v", len(rest), rest[0])
	}
}

func TestSpoolDropsOldestWhenFull(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits SpoolConfig
		want   []string
	}{
		{"by messages", SpoolConfig{MaxMessages: 3, MaxBytes: 1 << 20}, []string{"7", "8", "9"}},
		// A record of a 1-byte payload on topic "t" is 25 bytes (+8 for its key): 100 bytes hold 3.
		{"by bytes", SpoolConfig{MaxMessages: 100, MaxBytes: 100}, []string{"7", "8", "9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			dropped := 0
			sp, err := openSpool(filepath.Join(t.TempDir(), SpoolFile), tc.limits, func(n int) { mu.Lock(); dropped += n; mu.Unlock() })
			if err != nil {
				t.Fatal(err)
			}
			defer sp.close()
			for i := range 10 {
				if err := sp.append(&record{Topic: "t", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
					t.Fatal(err)
				}
			}
			recs, _ := sp.read(0, 100)
			var got []string
			for _, r := range recs {
				got = append(got, string(r.Payload))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || dropped != 10-len(tc.want) {
				t.Fatalf("kept %v, dropped %d; want %v", got, dropped, tc.want)
			}
			if _, bytes := sp.stats(); bytes > tc.limits.MaxBytes {
				t.Fatalf("bytes %d over the limit", bytes)
			}
		})
	}
	sp, err := openSpool(filepath.Join(t.TempDir(), SpoolFile), SpoolConfig{MaxMessages: 10, MaxBytes: 1024}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if err := sp.append(&record{Topic: "t", Payload: make([]byte, 2000)}); !errors.Is(err, errTooLarge) {
		t.Fatalf("oversized record: %v", err)
	}
}

// TestSpoolRefusesAfterClose: a write that cannot be stored is an error (the device's message is
// refused), never a silent success.
func TestSpoolRefusesAfterClose(t *testing.T) {
	sp, err := openSpool(filepath.Join(t.TempDir(), SpoolFile), SpoolConfig{MaxMessages: 10, MaxBytes: 1024}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	if err := sp.append(&record{Topic: "t"}); !errors.Is(err, errClosed) {
		t.Fatalf("append after close: %v", err)
	}
	sp.removeLater([]uint64{1}) // no panic
}

// TestSpoolConcurrentAppends: many writers share commits and every record is stored once.
func TestSpoolConcurrentAppends(t *testing.T) {
	sp, err := openSpool(filepath.Join(t.TempDir(), SpoolFile), SpoolConfig{MaxMessages: 10000, MaxBytes: 1 << 24}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for i := range 25 {
				if err := sp.append(&record{Topic: fmt.Sprintf("w/%d", w), Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	recs, _ := sp.read(0, 1000)
	if len(recs) != 500 {
		t.Fatalf("%d records", len(recs))
	}
	next := map[string]int{}
	for _, r := range recs {
		if string(r.Payload) != fmt.Sprint(next[r.Topic]) {
			t.Fatalf("writer %s out of order: %s", r.Topic, r.Payload)
		}
		next[r.Topic]++
	}
}

// BenchmarkSpoolAppend is the spool's write cost per message (fsynced), for one publisher and for
// several publishing at once (they share commits):
//
//	go test -run '^$' -bench BenchmarkSpoolAppend ./bridge/
func BenchmarkSpoolAppend(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			sp, err := openSpool(filepath.Join(b.TempDir(), SpoolFile), SpoolConfig{MaxMessages: 1 << 30, MaxBytes: 1 << 40}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer sp.close()
			payload := make([]byte, 64)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				n := b.N / writers
				if w < b.N%writers {
					n++
				}
				wg.Go(func() {
					for range n {
						if err := sp.append(&record{Topic: "bench/data", Payload: payload, Enqueued: time.Now()}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}
