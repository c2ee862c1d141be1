package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ggbroker/ggbroker/service"
)

func TestSpoolKeepsOrderAcrossReopen(t *testing.T) {
	path := t.TempDir()
	sp, err := openSpool(path, SpoolConfig{MaxMessages: 100, MaxBytes: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := &record{Topic: "a/b", Payload: []byte("x"), Retain: true, Enqueued: time.Unix(100, 5), ContentType: "text/plain",
		ResponseTopic: "r", CorrelationData: []byte{1}, MessageExpiry: 60, UserProperties: []service.UserProperty{{Key: "k", Value: "v"}}}
	if err := sp.append(in); err != nil {
		t.Fatal(err)
	}
	appendNumbered(t, sp, 9)
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
			sp, err := openSpool(t.TempDir(), tc.limits, func(n int) { mu.Lock(); dropped += n; mu.Unlock() })
			if err != nil {
				t.Fatal(err)
			}
			defer sp.close()
			appendNumbered(t, sp, 10)
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
	sp, err := openSpool(t.TempDir(), SpoolConfig{MaxMessages: 10, MaxBytes: 1024}, nil)
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
	sp, err := openSpool(t.TempDir(), SpoolConfig{MaxMessages: 10, MaxBytes: 1024}, nil)
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
	sp, err := openSpool(t.TempDir(), SpoolConfig{MaxMessages: 10000, MaxBytes: 1 << 24}, nil)
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
			sp, err := openSpool(b.TempDir(), SpoolConfig{MaxMessages: 1 << 30, MaxBytes: 1 << 40}, nil)
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

// appendNumbered appends n records on topic t with the payloads "0" to "n-1".
func appendNumbered(t *testing.T, sp *spool, n int) {
	t.Helper()
	for i := range n {
		if err := sp.append(&record{Topic: "t", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// payloads reads the whole spool's payloads, in order.
func payloads(t *testing.T, sp *spool) []string {
	t.Helper()
	recs, err := sp.read(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Payload))
	}
	return out
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := listSegments(filepath.Join(dir, SpoolDir))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range segs {
		paths = append(paths, s.path)
	}
	return paths
}

// TestSpoolSegments: the log moves on to a new segment past its size, removes the oldest ones once
// everything in them is acknowledged, and a reopen finds exactly the records not removed, in order,
// with new records after them.
func TestSpoolSegments(t *testing.T) {
	dir := t.TempDir()
	limits := SpoolConfig{MaxMessages: 10000, MaxBytes: 1 << 24}
	sp, err := openSpool(dir, limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp.segMax = 1024
	appendNumbered(t, sp, 300)
	if n := len(segmentFiles(t, dir)); n < 10 {
		t.Fatalf("%d segments for 300 records of 1 KiB segments", n)
	}
	recs, _ := sp.read(0, 1000)
	var seqs []uint64
	for _, r := range recs[:290] {
		seqs = append(seqs, r.Seq)
	}
	sp.removeLater(seqs[:100])
	if err := sp.remove(seqs[100:]); err != nil {
		t.Fatal(err)
	}
	if n := len(segmentFiles(t, dir)); n > 2 {
		t.Fatalf("%d segments left for 10 records", n)
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	sp, err = openSpool(dir, limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if err := sp.append(&record{Topic: "t", Payload: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	want := []string{"290", "291", "292", "293", "294", "295", "296", "297", "298", "299", "new"}
	if got := payloads(t, sp); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopen %v, want %v", got, want)
	}
	recs, _ = sp.read(0, 100)
	if last := recs[len(recs)-1]; last.Seq <= recs[len(recs)-2].Seq {
		t.Fatalf("new record's sequence number %d not after %d", last.Seq, recs[len(recs)-2].Seq)
	}
	if n, _ := sp.stats(); n != 11 {
		t.Fatalf("count %d", n)
	}
}

// TestSpoolCutTail: a write cut short by a crash (half a frame, or garbage) at the end of the log
// costs nothing that was committed; appends go on after the last whole frame and survive a reopen.
func TestSpoolCutTail(t *testing.T) {
	for name, tail := range map[string][]byte{"half a frame": nil, "garbage": []byte("\x00\x00\x00\x10garbage")} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			limits := SpoolConfig{MaxMessages: 100, MaxBytes: 1 << 20}
			sp, err := openSpool(dir, limits, nil)
			if err != nil {
				t.Fatal(err)
			}
			appendNumbered(t, sp, 3)
			if err := sp.close(); err != nil {
				t.Fatal(err)
			}
			paths := segmentFiles(t, dir)
			last := paths[len(paths)-1]
			if tail == nil {
				// The record frame of a fourth message, cut in the middle.
				frame := appendFrame(nil, kindRecord, 4, func(b []byte) []byte { return appendRecord(b, &record{Topic: "t", Payload: []byte("3")}) })
				tail = frame[:len(frame)/2]
			}
			// Where the next frame would have gone, in the segment's preallocated zeros.
			seg, _, _, dirty, err := scanSegment(last, 0)
			if err != nil || dirty {
				t.Fatalf("segment before the cut: %v, dirty %v", err, dirty)
			}
			if _, err := seg.f.WriteAt(tail, seg.size); err != nil {
				t.Fatal(err)
			}
			seg.f.Close()
			for round := range 2 {
				sp, err = openSpool(dir, limits, nil)
				if err != nil {
					t.Fatal(err)
				}
				if round == 0 {
					if err := sp.append(&record{Topic: "t", Payload: []byte("after")}); err != nil {
						t.Fatal(err)
					}
				}
				if got := payloads(t, sp); fmt.Sprint(got) != "[0 1 2 after]" {
					t.Fatalf("round %d: %v", round, got)
				}
				if err := sp.close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestSpoolMovesBboltRecords: the records a bbolt spool (before the log) left in bridge-spool.db
// move into the log, in order, once; new records come after them.
func TestSpoolMovesBboltRecords(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, SpoolFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(spoolBucket)
		if err != nil {
			return err
		}
		for i := range 5 {
			seq, _ := b.NextSequence()
			if i == 1 {
				continue // acknowledged and deleted before the upgrade
			}
			if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), encodeRecord(&record{Topic: "old", Payload: fmt.Appendf(nil, "%d", i)})); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	limits := SpoolConfig{MaxMessages: 100, MaxBytes: 1 << 20}
	sp, err := openSpool(dir, limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.append(&record{Topic: "t", Payload: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if got := payloads(t, sp); fmt.Sprint(got) != "[0 2 3 4 new]" {
		t.Fatalf("after the move %v", got)
	}
	recs, _ := sp.read(0, 10)
	if recs[4].Seq != 6 {
		t.Fatalf("new record has sequence number %d, want 6 (after the bbolt spool's 5)", recs[4].Seq)
	}
	if err := sp.remove([]uint64{recs[0].Seq}); err != nil {
		t.Fatal(err)
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	sp, err = openSpool(dir, limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if got := payloads(t, sp); fmt.Sprint(got) != "[2 3 4 new]" {
		t.Fatalf("after a reopen %v (moved twice, or a delete lost?)", got)
	}
}

// TestSpoolDropsWithinOneCommit: records of one commit that do not fit with each other drop the
// oldest of them too.
func TestSpoolDropsWithinOneCommit(t *testing.T) {
	dropped := 0
	sp, err := openSpool(t.TempDir(), SpoolConfig{MaxMessages: 3, MaxBytes: 1 << 20}, func(n int) { dropped += n })
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if err := sp.append(&record{Topic: "t", Payload: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	var recs []*record
	for i := range 5 {
		recs = append(recs, &record{Topic: "t", Payload: fmt.Appendf(nil, "%d", i)})
	}
	if err := sp.append(recs...); err != nil {
		t.Fatal(err)
	}
	if got := payloads(t, sp); fmt.Sprint(got) != "[2 3 4]" || dropped != 3 {
		t.Fatalf("kept %v, dropped %d", got, dropped)
	}
	if n, _ := sp.stats(); n != 3 {
		t.Fatalf("count %d", n)
	}
}
