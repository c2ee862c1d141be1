package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ggbroker/ggbroker/service"
)

// record is one message on its way upstream: already addressed to its target topic.
type record struct {
	Seq      uint64 // spool order; set by append
	Topic    string
	Payload  []byte
	Retain   bool
	Enqueued time.Time // when it entered the spool, for the MQTT 5 message expiry
	// MQTT 5 properties passed on (services/bridge.md §2: the bridge forwards them).
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	MessageExpiry   uint32
	UserProperties  []service.UserProperty
}

// recordSize is what a record counts against spool.maxBytes: its encoding and 8 bytes of sequence
// number (what it took as a key and value in the bbolt spool before the log).
func recordSize(encoded int) int64 { return int64(encoded) + 8 }

var (
	// spoolBucket is where the spool's records were kept before the log (bbolt, one commit with two
	// fdatasyncs per batch); openSpool moves what it finds there into the log.
	spoolBucket = []byte("spool")
	// subsBucket remembers what the bridge subscribed to upstream, so that a filter no mapping names
	// any more can be unsubscribed from the persistent session: "session" is the endpoint and client
	// ID the filters ("f/<filter>") belong to.
	subsBucket = []byte("upstreamSubscriptions")
)

// errTooLarge refuses a message that could never fit in the spool.
var errTooLarge = errors.New("message is larger than bridge.spool.maxBytes")

// spoolCacheMax bounds the bytes of spooled records also kept in memory, so that the pump sends
// them without reading and decoding them again; records that arrive while it is full are read back
// from their segment when their turn comes (after an outage, or after a restart).
const spoolCacheMax = 16 << 20

// spool is the on-disk queue of messages for the upstream: an append-only log of segment files
// (segment.go) in <stateDir>/bridge-spool/, and an index of its live records in memory. Every
// append is on disk (one write and one fdatasync) before it returns, because the device's PUBACK
// follows it; concurrent appends share one commit (one goroutine writes: whoever arrives while a
// commit runs goes into the next one), so a hundred publishing devices cost about one fdatasync per
// commit, not a hundred. Deletes of acknowledged records are written without a flush of their own
// and reach the disk with the next append's: one lost in a power cut only sends its message again
// (QoS 1 is at least once), and a kill -9 loses none (they are in the page cache). When a limit is
// reached the oldest records are dropped to make room (Greengrass' spooler drops the oldest too,
// services/bridge.md §2 "Offline behaviour"), and the drop is reported to onDrop.
//
// The upstream subscriptions are kept apart, in the bbolt file bridge-spool.db (written rarely).
type spool struct {
	meta        *bolt.DB
	dir         string
	maxMessages int
	maxBytes    int64
	cacheMax    int64
	segMax      int64 // segmentMax; smaller in tests
	onDrop      func(n int)

	// The writer's queue: requests wait in queue for the next commit, and those that wait for it share
	// ticket; wake (capacity 1) tells the writer there is work. One lock and no channel operation per
	// request: a hundred devices' messages cost the writer one wake-up, not a hundred.
	qmu    sync.Mutex
	queue  []*spoolWrite
	ticket *commitTicket
	closed bool
	wake   chan struct{}
	done   chan struct{}
	// count and bytes are the live records; only the writer goroutine changes them.
	count atomic.Int64
	bytes atomic.Int64
	// added receives a token after every append that stored something (capacity 1: a wake-up).
	added chan struct{}

	// mu guards index, cached and the segments' live counts: the writer changes them, read looks.
	mu     sync.Mutex
	index  []entry // by sequence number, oldest first; deleted ones until they reach the front
	cached int64   // bytes of the records index holds in memory

	// The writer goroutine's own (and openSpool's, before it starts).
	segs    []*segment // oldest first; the last one is written to
	nextSeq uint64
	buf     []byte
	pending []pendingRecord
	// The next segment, made in the background (prepareSpare): sparing says one is made or being
	// made and will arrive on spare.
	sparing bool
	spare   chan spareSegment
	spareWG sync.WaitGroup
	// broken is set when a failed write could not be undone: the log's end is unknown, so nothing
	// more is appended (and acknowledged) until a restart reads it again.
	broken error
}

// entry is one record of the log in the index.
type entry struct {
	seq     uint64
	seg     *segment
	off     int64   // of its encoding in seg
	n       int32   // length of its encoding
	rec     *record // the record, when it is kept in memory
	deleted bool
}

func (e *entry) size() int64 { return recordSize(int(e.n)) }

// spoolWrite is one request to the writer goroutine: records to append or sequence numbers to delete.
type spoolWrite struct {
	add    []*record
	delete []uint64
	t      *commitTicket // the commit it waits for; nil when nobody waits (removeLater)
	err    error         // its outcome, set before t.done closes
}

// wait returns once the request's commit is done, with its outcome.
func (w *spoolWrite) wait() error {
	<-w.t.done
	return w.err
}

// commitTicket is one commit, closed when it is done.
type commitTicket struct{ done chan struct{} }

// pendingRecord is a record of the commit being written.
type pendingRecord struct {
	r       *record
	off     int // of its encoding in the commit's buffer
	n       int
	dropped bool // dropped to make room for later records of the same commit
}

// openSpool opens the spool in stateDir (the log directory SpoolDir, made 0700, and the bbolt file
// SpoolFile, 0600), moving the records a bbolt spool of an earlier version left into the log.
func openSpool(stateDir string, limits SpoolConfig, onDrop func(n int)) (*spool, error) {
	metaPath := filepath.Join(stateDir, SpoolFile)
	db, err := bolt.Open(metaPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("bridge spool %s: %w", metaPath, err)
	}
	s := &spool{
		meta: db, dir: filepath.Join(stateDir, SpoolDir), maxMessages: limits.MaxMessages, maxBytes: limits.MaxBytes,
		cacheMax: min(limits.MaxBytes, spoolCacheMax), segMax: segmentMax, onDrop: onDrop,
		wake: make(chan struct{}, 1), done: make(chan struct{}), added: make(chan struct{}, 1),
		spare: make(chan spareSegment, 1),
	}
	type oldRecord struct {
		seq uint64
		enc []byte
	}
	var old []oldRecord
	var oldSeq uint64
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(subsBucket); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(spoolBucket)
		if err != nil {
			return err
		}
		oldSeq = b.Sequence()
		return b.ForEach(func(k, v []byte) error {
			old = append(old, oldRecord{seq: binary.BigEndian.Uint64(k), enc: bytes.Clone(v)})
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bridge spool %s: %w", metaPath, err)
	}
	if err := s.openLog(oldSeq); err != nil {
		s.closeFiles()
		return nil, err
	}
	if len(old) > 0 {
		// Into the log first, durably, then out of bbolt: a crash in between finds them in both, and
		// the log's copies win (records at or below the log's last sequence number are skipped).
		last := uint64(0)
		if len(s.index) > 0 {
			last = s.index[len(s.index)-1].seq
		}
		seg := s.segs[len(s.segs)-1]
		s.buf = s.buf[:0]
		var moved []pendingRecord
		for _, o := range old {
			if o.seq <= last {
				continue
			}
			start := len(s.buf)
			s.buf = appendFrame(s.buf, kindRecord, o.seq, func(b []byte) []byte { return append(b, o.enc...) })
			moved = append(moved, pendingRecord{r: &record{Seq: o.seq}, off: start + frameHeaderLen + 9, n: len(o.enc)})
		}
		if len(moved) > 0 {
			if err := s.writeCommit(seg, true); err != nil {
				s.closeFiles()
				return nil, fmt.Errorf("bridge spool %s: moving the records of %s: %w", seg.path, metaPath, err)
			}
			for _, p := range moved {
				s.index = append(s.index, entry{seq: p.r.Seq, seg: seg, off: seg.size + int64(p.off), n: int32(p.n)})
				seg.live++
				s.count.Add(1)
				s.bytes.Add(recordSize(p.n))
			}
			seg.size += int64(len(s.buf))
		}
		err := db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(spoolBucket); err != nil {
				return err
			}
			_, err := tx.CreateBucket(spoolBucket)
			return err
		})
		if err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("bridge spool %s: %w", metaPath, err)
		}
	}
	go s.writer()
	if s.count.Load() > 0 {
		s.added <- struct{}{}
	}
	return s, nil
}

// openLog reads the log's segments into the index; floor is a sequence number already used (by the
// bbolt spool of an earlier version).
func (s *spool) openLog(floor uint64) error {
	if err := os.Mkdir(s.dir, 0o700); err == nil {
		if err := syncDir(filepath.Dir(s.dir)); err != nil {
			return fmt.Errorf("bridge spool %s: %w", s.dir, err)
		}
	} else if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("bridge spool %s: %w", s.dir, err)
	}
	// A spare segment is only ever half made or unused: never a segment.
	if err := os.Remove(filepath.Join(s.dir, spareName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bridge spool: %w", err)
	}
	files, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("bridge spool %s: %w", s.dir, err)
	}
	deleted := map[uint64]bool{}
	next := floor + 1
	for i, sf := range files {
		seg, recs, dels, dirty, err := scanSegment(sf.path, sf.first)
		if err != nil {
			return fmt.Errorf("bridge spool: %w", err)
		}
		s.segs = append(s.segs, seg)
		if dirty && i == len(files)-1 {
			// The end of a write that never completed; appends go on from the last whole frame.
			if err := zeroTail(seg); err != nil {
				return fmt.Errorf("bridge spool %s: %w", sf.path, err)
			}
		}
		next = max(next, seg.first)
		for _, r := range recs {
			if len(s.index) > 0 && r.seq <= s.index[len(s.index)-1].seq {
				continue // a record moved from bbolt twice (see openSpool)
			}
			next = max(next, r.seq+1)
			s.index = append(s.index, entry{seq: r.seq, seg: seg, off: r.off, n: int32(r.n)})
			seg.live++
		}
		for _, d := range dels {
			deleted[d] = true
			next = max(next, d+1)
		}
	}
	s.nextSeq = next
	var count, bytes int64
	for i := range s.index {
		e := &s.index[i]
		if deleted[e.seq] {
			e.deleted = true
			e.seg.live--
			continue
		}
		count++
		bytes += e.size()
	}
	s.count.Store(count)
	s.bytes.Store(bytes)
	s.trim()
	if len(s.segs) == 0 {
		seg, err := createSegment(s.dir, s.nextSeq, s.segMax)
		if err != nil {
			return fmt.Errorf("bridge spool %s: %w", s.dir, err)
		}
		s.segs = []*segment{seg}
	}
	s.prune()
	return nil
}

// stats is the number of records and their bytes.
func (s *spool) stats() (int64, int64) { return s.count.Load(), s.bytes.Load() }

// append stores records durably, in order, after everything appended before; it returns once they are
// on disk. Records it had to drop older ones for are reported to onDrop after the commit.
func (s *spool) append(recs ...*record) error {
	if len(recs) == 0 {
		return nil
	}
	w := &spoolWrite{add: recs}
	if err := s.send(w, true); err != nil {
		return err
	}
	return w.wait()
}

// appendStarted queues the records for the next commit; the request's wait returns once they are on
// disk. The records must not change after: the spool keeps them, to send them from memory.
func (s *spool) appendStarted(recs ...*record) (*spoolWrite, error) {
	w := &spoolWrite{add: recs}
	if len(recs) == 0 {
		w.t = doneTicket
		return w, nil
	}
	if err := s.send(w, true); err != nil {
		return nil, err
	}
	return w, nil
}

// doneTicket is the commit of a request with nothing to write.
var doneTicket = func() *commitTicket {
	t := &commitTicket{done: make(chan struct{})}
	close(t.done)
	return t
}()

// remove deletes acknowledged records; missing ones (dropped meanwhile) are skipped. It returns once
// read no longer returns them; the delete is written, not flushed (see spool).
func (s *spool) remove(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	w := &spoolWrite{delete: seqs}
	if err := s.send(w, true); err != nil {
		return err
	}
	return w.wait()
}

// removeLater queues a remove without waiting for it; the writer handles requests in the order they
// come, so a later remove (or append) returns only after it.
func (s *spool) removeLater(seqs []uint64) {
	_ = s.send(&spoolWrite{delete: seqs}, false)
}

// errClosed refuses writes after close (a message then is refused, not acknowledged).
var errClosed = errors.New("bridge spool closed")

// send queues w for the next commit (joining its ticket if waited) and wakes the writer.
func (s *spool) send(w *spoolWrite, waited bool) error {
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return errClosed
	}
	if waited {
		if s.ticket == nil {
			s.ticket = &commitTicket{done: make(chan struct{})}
		}
		w.t = s.ticket
	}
	s.queue = append(s.queue, w)
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// writer is the one goroutine that writes: it takes every request waiting and commits them together,
// until close, after the requests queued before it.
func (s *spool) writer() {
	defer close(s.done)
	var spare []*spoolWrite
	for {
		s.qmu.Lock()
		for len(s.queue) == 0 && !s.closed {
			s.qmu.Unlock()
			<-s.wake
			s.qmu.Lock()
		}
		batch, t := s.queue, s.ticket
		s.queue, s.ticket = spare[:0], nil
		s.qmu.Unlock()
		if len(batch) == 0 {
			return // closed, and nothing is left
		}
		s.commit(batch)
		if t != nil {
			close(t.done)
		}
		clear(batch)
		spare = batch
	}
}

// commit applies one batch with one write, and one fdatasync if it appends. Deletes take effect at
// once (read stops returning them); appended records become visible to read only once they are on
// disk. A request refused on its own (too large) gets its error and the others go on; a failed
// write fails every append of the batch, and none of them is sent upstream.
func (s *spool) commit(batch []*spoolWrite) {
	errs := make([]error, len(batch))
	s.buf = s.buf[:0]
	s.pending = s.pending[:0]
	var dels []uint64
	droppedOld, droppedNew := 0, 0

	s.mu.Lock()
	count, bytes := s.count.Load(), s.bytes.Load()
	for _, w := range batch {
		for _, seq := range w.delete {
			if e := s.find(seq); e != nil {
				s.deleteEntry(e)
				count--
				bytes -= e.size()
				dels = append(dels, seq)
			}
		}
	}
	oldest := 0    // the next committed record to drop for room
	oldestNew := 0 // the next record of this commit to drop, once no committed one is left
	for i, w := range batch {
		if len(w.add) == 0 {
			continue
		}
		if s.broken != nil {
			errs[i] = s.broken
			continue
		}
		start, seq0, first := len(s.buf), s.nextSeq, len(s.pending)
		for _, r := range w.add {
			r.Seq = s.nextSeq
			s.nextSeq++
			at := len(s.buf)
			s.buf = appendFrame(s.buf, kindRecord, r.Seq, func(b []byte) []byte { return appendRecord(b, r) })
			n := len(s.buf) - at - frameHeaderLen - 9
			if size := recordSize(n); size > s.maxBytes {
				errs[i] = fmt.Errorf("%w (%d > %d bytes)", errTooLarge, size, s.maxBytes)
				break
			}
			s.pending = append(s.pending, pendingRecord{r: r, off: at + frameHeaderLen + 9, n: n})
		}
		if errs[i] != nil {
			s.buf, s.nextSeq, s.pending = s.buf[:start], seq0, s.pending[:first]
			continue
		}
		for j := first; j < len(s.pending); j++ {
			size := recordSize(s.pending[j].n)
			for count+1 > int64(s.maxMessages) || bytes+size > s.maxBytes {
				for oldest < len(s.index) && s.index[oldest].deleted {
					oldest++
				}
				if oldest < len(s.index) {
					e := &s.index[oldest]
					s.deleteEntry(e)
					count--
					bytes -= e.size()
					dels = append(dels, e.seq)
					droppedOld++
					continue
				}
				for s.pending[oldestNew].dropped {
					oldestNew++
				}
				p := &s.pending[oldestNew]
				p.dropped = true
				count--
				bytes -= recordSize(p.n)
				dels = append(dels, p.r.Seq)
				droppedNew++
			}
			count++
			bytes += size
		}
	}
	s.trim()
	s.mu.Unlock()

	if len(dels) > 0 {
		s.buf = appendFrame(s.buf, kindDelete, 0, func(b []byte) []byte {
			for _, seq := range dels {
				b = binary.BigEndian.AppendUint64(b, seq)
			}
			return b
		})
	}
	seg := s.segs[len(s.segs)-1]
	if len(s.pending) > 0 && seg.size >= s.segMax {
		// A new segment for these records (a failure to make one leaves them in the current one).
		if next, err := s.nextSegment(s.pending[0].r.Seq); err == nil {
			s.segs = append(s.segs, next)
			seg = next
		}
	}
	err := s.writeCommit(seg, len(s.pending) > 0)
	if seg.size+int64(len(s.buf)) >= s.segMax/2 {
		s.prepareSpare()
	}

	s.mu.Lock()
	added := 0
	if err == nil {
		for _, p := range s.pending {
			if p.dropped {
				continue
			}
			e := entry{seq: p.r.Seq, seg: seg, off: seg.size + int64(p.off), n: int32(p.n)}
			if size := e.size(); s.cached+size <= s.cacheMax {
				e.rec = p.r
				s.cached += size
			}
			s.index = append(s.index, e)
			seg.live++
			added++
		}
		seg.size += int64(len(s.buf))
		droppedOld += droppedNew
	} else {
		err = fmt.Errorf("bridge spool %s: %w", seg.path, err)
		for _, p := range s.pending {
			if !p.dropped {
				count--
				bytes -= recordSize(p.n)
			}
		}
	}
	s.count.Store(count)
	s.bytes.Store(bytes)
	s.trim()
	s.prune()
	s.mu.Unlock()
	if droppedOld > 0 && s.onDrop != nil {
		s.onDrop(droppedOld) // before the appends return, as append says
	}
	for i, w := range batch {
		switch {
		case errs[i] != nil:
			w.err = errs[i]
		case err != nil && len(w.add) > 0:
			w.err = err
		}
	}
	for i := range s.pending {
		s.pending[i] = pendingRecord{}
	}
	if added > 0 {
		select {
		case s.added <- struct{}{}:
		default:
		}
	}
}

// spareSegment is a segment file made in the background (makeSpare).
type spareSegment struct {
	f   *os.File
	err error
}

// prepareSpare starts making the next segment, unless one is made or being made.
func (s *spool) prepareSpare() {
	if s.sparing {
		return
	}
	s.sparing = true
	s.spareWG.Add(1)
	go func() {
		defer s.spareWG.Done()
		f, err := makeSpare(filepath.Join(s.dir, spareName), s.segMax)
		s.spare <- spareSegment{f, err}
	}()
}

// nextSegment installs the segment for first: the spare (waiting for it if it is being made), or one
// made now.
func (s *spool) nextSegment(first uint64) (*segment, error) {
	var f *os.File
	if s.sparing {
		sp := <-s.spare
		s.sparing = false
		f = sp.f
	}
	if f == nil {
		var err error
		if f, err = makeSpare(filepath.Join(s.dir, spareName), s.segMax); err != nil {
			return nil, err
		}
	}
	return installSegment(s.dir, f, first)
}

// writeCommit writes s.buf at the end of seg and flushes it if sync. A failed write is cut off again,
// so that the next commit's frames follow the last whole one; when that fails too the spool is broken.
func (s *spool) writeCommit(seg *segment, sync bool) error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := seg.f.WriteAt(s.buf, seg.size)
	if err == nil && sync {
		err = fdatasync(seg.f)
	}
	if err != nil {
		if terr := seg.f.Truncate(seg.size); terr != nil {
			s.broken = fmt.Errorf("bridge spool %s cannot be written until a restart: %w (and cutting off the failed write: %v)", seg.path, err, terr)
		}
	}
	return err
}

// find is the live entry of seq, or nil (mu held).
func (s *spool) find(seq uint64) *entry {
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq >= seq })
	if i == len(s.index) || s.index[i].seq != seq || s.index[i].deleted {
		return nil
	}
	return &s.index[i]
}

// deleteEntry marks e deleted and lets go of its record (mu held).
func (s *spool) deleteEntry(e *entry) {
	e.deleted = true
	e.seg.live--
	if e.rec != nil {
		s.cached -= e.size()
		e.rec = nil
	}
}

// trim drops the deleted entries at the front of the index (mu held).
func (s *spool) trim() {
	i := 0
	for i < len(s.index) && s.index[i].deleted {
		s.index[i] = entry{}
		i++
	}
	s.index = s.index[i:]
}

// prune removes the oldest segments while they hold no live record; the last one stays, it is
// written to. A file that cannot be removed is left behind: read again at the next start, its
// records are deleted by the frames of the segments after it, or at worst sent once more.
func (s *spool) prune() {
	for len(s.segs) > 1 && s.segs[0].live == 0 {
		seg := s.segs[0]
		_ = seg.f.Close()
		_ = os.Remove(seg.path)
		s.segs[0] = nil
		s.segs = s.segs[1:]
	}
}

// read returns up to max records with sequence numbers above after, in order.
func (s *spool) read(after uint64, max int) ([]*record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.index), func(i int) bool { return s.index[i].seq > after })
	var out []*record
	for ; i < len(s.index) && len(out) < max; i++ {
		e := &s.index[i]
		if e.deleted {
			continue
		}
		r := e.rec
		if r == nil {
			enc := make([]byte, e.n)
			if _, err := e.seg.f.ReadAt(enc, e.off); err != nil {
				return nil, fmt.Errorf("bridge spool %s: record %d: %w", e.seg.path, e.seq, err)
			}
			var err error
			if r, err = decodeRecord(enc); err != nil {
				return nil, fmt.Errorf("bridge spool %s: record %d: %w", e.seg.path, e.seq, err)
			}
			r.Seq = e.seq
		}
		out = append(out, r)
	}
	return out, nil
}

// subscribed returns the filters recorded for the upstream session named key ("" for none, or for
// another session).
func (s *spool) subscribed(key string) ([]string, error) {
	var out []string
	err := s.meta.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(subsBucket)
		if string(b.Get([]byte("session"))) != key {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.Seek([]byte("f/")); k != nil && bytes.HasPrefix(k, []byte("f/")); k, _ = c.Next() {
			out = append(out, string(k[2:]))
		}
		return nil
	})
	return out, err
}

// setSubscribed records the filters of the upstream session named key.
func (s *spool) setSubscribed(key string, filters []string) error {
	return s.meta.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(subsBucket); err != nil {
			return err
		}
		b, err := tx.CreateBucket(subsBucket)
		if err != nil {
			return err
		}
		if err := b.Put([]byte("session"), []byte(key)); err != nil {
			return err
		}
		for _, f := range filters {
			if err := b.Put([]byte("f/"+f), nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// close stops the writer after the requests already queued and closes the files.
func (s *spool) close() error {
	s.qmu.Lock()
	s.closed = true
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
	s.spareWG.Wait()
	if s.sparing {
		if sp := <-s.spare; sp.f != nil {
			_ = sp.f.Close() // removed at the next start
		}
		s.sparing = false
	}
	return s.closeFiles()
}

func (s *spool) closeFiles() error {
	var errs []error
	for _, seg := range s.segs {
		if err := seg.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.segs = nil
	if err := s.meta.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// The record encoding: a version byte, flags, the enqueue time, then length-prefixed fields.
const recordVersion = 1

// encodeRecord is appendRecord into a new slice.
func encodeRecord(r *record) []byte {
	return appendRecord(make([]byte, 0, 32+len(r.Topic)+len(r.Payload)), r)
}

// appendRecord appends r's encoding to b.
func appendRecord(b []byte, r *record) []byte {
	b = append(b, recordVersion)
	var flags byte
	if r.Retain {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Enqueued.UnixNano()))
	b = binary.AppendUvarint(b, uint64(r.MessageExpiry))
	b = appendField(b, r.Topic)
	b = appendField(b, r.Payload)
	b = appendField(b, r.ContentType)
	b = appendField(b, r.ResponseTopic)
	b = appendField(b, r.CorrelationData)
	b = binary.AppendUvarint(b, uint64(len(r.UserProperties)))
	for _, p := range r.UserProperties {
		b = appendField(b, p.Key)
		b = appendField(b, p.Value)
	}
	return b
}

func appendField[T string | []byte](b []byte, v T) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errCorrupt = errors.New("corrupt spool record")

func decodeRecord(b []byte) (*record, error) {
	if len(b) < 10 || b[0] != recordVersion {
		return nil, errCorrupt
	}
	r := &record{Retain: b[1]&1 != 0, Enqueued: time.Unix(0, int64(binary.BigEndian.Uint64(b[2:10])))}
	b = b[10:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	bytesField := func() ([]byte, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(b)) {
			return nil, false
		}
		v := append([]byte(nil), b[:n]...)
		b = b[n:]
		return v, true
	}
	exp, ok := uv()
	if !ok {
		return nil, errCorrupt
	}
	r.MessageExpiry = uint32(exp)
	fields := make([][]byte, 5)
	for i := range fields {
		if fields[i], ok = bytesField(); !ok {
			return nil, errCorrupt
		}
	}
	r.Topic, r.Payload, r.ContentType, r.ResponseTopic = string(fields[0]), fields[1], string(fields[2]), string(fields[3])
	if len(fields[4]) > 0 {
		r.CorrelationData = fields[4]
	}
	if len(r.Payload) == 0 {
		r.Payload = nil
	}
	n, ok := uv()
	if !ok || n > uint64(len(b)) {
		return nil, errCorrupt
	}
	for range n {
		k, ok1 := bytesField()
		v, ok2 := bytesField()
		if !ok1 || !ok2 {
			return nil, errCorrupt
		}
		r.UserProperties = append(r.UserProperties, service.UserProperty{Key: string(k), Value: string(v)})
	}
	return r, nil
}
