package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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

// size is what a record counts against spool.maxBytes: its stored key and value.
func (r *record) size(encoded []byte) int64 { return int64(len(encoded)) + 8 }

var (
	spoolBucket = []byte("spool")
	// subsBucket remembers what the bridge subscribed to upstream, so that a filter no mapping names
	// any more can be unsubscribed from the persistent session: "session" is the endpoint and client
	// ID the filters ("f/<filter>") belong to.
	subsBucket = []byte("upstreamSubscriptions")
)

// errTooLarge refuses a message that could never fit in the spool.
var errTooLarge = errors.New("message is larger than bridge.spool.maxBytes")

// spool is the on-disk queue of messages for the upstream, in its own bbolt file. Every append is
// fsynced before it returns, because the device's PUBACK follows it; concurrent appends share one
// commit (one goroutine writes: whoever arrives while a commit runs goes into the next one), so a
// hundred publishing devices cost about one fsync per commit, not a hundred. When a limit is
// reached the oldest records are dropped to make room (Greengrass' spooler drops the oldest too,
// services/bridge.md §2 "Offline behaviour"), and the drop is reported to onDrop.
type spool struct {
	db          *bolt.DB
	maxMessages int
	maxBytes    int64
	onDrop      func(n int)

	// closeMu guards writes against close: senders hold it shared, close exclusively.
	closeMu sync.RWMutex
	closed  bool
	writes  chan *spoolWrite
	done    chan struct{}
	// count and bytes mirror the bucket; only the writer goroutine changes them.
	count atomic.Int64
	bytes atomic.Int64
	// added receives a token after every append that stored something (capacity 1: a wake-up).
	added chan struct{}
}

// spoolWrite is one request to the writer goroutine: records to append or sequence numbers to delete.
type spoolWrite struct {
	add    []*record
	delete []uint64
	err    chan error
}

// openSpool opens (creating it 0600) the spool file at path.
func openSpool(path string, limits SpoolConfig, onDrop func(n int)) (*spool, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("bridge spool %s: %w", path, err)
	}
	s := &spool{
		db: db, maxMessages: limits.MaxMessages, maxBytes: limits.MaxBytes, onDrop: onDrop,
		writes: make(chan *spoolWrite, 256), done: make(chan struct{}), added: make(chan struct{}, 1),
	}
	var count, bytes int64
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(subsBucket); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(spoolBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(_, v []byte) error {
			count++
			bytes += int64(len(v)) + 8
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bridge spool %s: %w", path, err)
	}
	s.count.Store(count)
	s.bytes.Store(bytes)
	go s.writer()
	if count > 0 {
		s.added <- struct{}{}
	}
	return s, nil
}

// stats is the number of records and their bytes.
func (s *spool) stats() (int64, int64) { return s.count.Load(), s.bytes.Load() }

// append stores records durably, in order, after everything appended before; it returns once they are
// fsynced. Records it had to drop older ones for are reported to onDrop after the commit.
func (s *spool) append(recs ...*record) error {
	if len(recs) == 0 {
		return nil
	}
	return s.do(&spoolWrite{add: recs})
}

// appendStarted queues the records for the next commit and returns the wait for that commit (once).
func (s *spool) appendStarted(recs ...*record) (wait func() error, err error) {
	if len(recs) == 0 {
		return func() error { return nil }, nil
	}
	w := &spoolWrite{add: recs, err: make(chan error, 1)}
	if err := s.send(w); err != nil {
		return nil, err
	}
	return func() error { return <-w.err }, nil
}

// remove deletes acknowledged records; missing ones (dropped meanwhile) are skipped.
func (s *spool) remove(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	return s.do(&spoolWrite{delete: seqs})
}

// removeLater queues a remove without waiting for its commit; the writer commits requests in the
// order they come, so a later remove (or append) returns only after it.
func (s *spool) removeLater(seqs []uint64) {
	_ = s.send(&spoolWrite{delete: seqs, err: make(chan error, 1)})
}

func (s *spool) do(w *spoolWrite) error {
	w.err = make(chan error, 1)
	if err := s.send(w); err != nil {
		return err
	}
	return <-w.err
}

// errClosed refuses writes after close (a message then is refused, not acknowledged).
var errClosed = errors.New("bridge spool closed")

func (s *spool) send(w *spoolWrite) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return errClosed
	}
	s.writes <- w
	return nil
}

// writer is the one goroutine that writes: it takes every request waiting and commits them together.
func (s *spool) writer() {
	defer close(s.done)
	for w := range s.writes {
		batch := []*spoolWrite{w}
	more:
		for len(batch) < 1024 {
			select {
			case w, ok := <-s.writes:
				if !ok {
					break more
				}
				batch = append(batch, w)
			default:
				break more
			}
		}
		s.commit(batch)
	}
}

// commit applies one batch in one transaction. A request refused on its own (too large) gets its error
// and the others go on; a failed commit fails all of them, and nothing of it counts.
func (s *spool) commit(batch []*spoolWrite) {
	count, bytes := s.count.Load(), s.bytes.Load()
	errs := make([]error, len(batch))
	dropped, added := 0, false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(spoolBucket)
		for i, w := range batch {
			for _, seq := range w.delete {
				k := seqKey(seq)
				if v := b.Get(k); v != nil {
					count--
					bytes -= int64(len(v)) + 8
					if err := b.Delete(k); err != nil {
						return err
					}
				}
			}
			enc := make([][]byte, len(w.add))
			for j, r := range w.add {
				enc[j] = encodeRecord(r)
				if size := r.size(enc[j]); size > s.maxBytes {
					errs[i] = fmt.Errorf("%w (%d > %d bytes)", errTooLarge, size, s.maxBytes)
				}
			}
			if errs[i] != nil {
				continue
			}
			for j, r := range w.add {
				seq, err := b.NextSequence()
				if err != nil {
					return err
				}
				r.Seq = seq
				v := enc[j]
				size := r.size(v)
				c := b.Cursor()
				for ok, ov := c.First(); ok != nil && (count+1 > int64(s.maxMessages) || bytes+size > s.maxBytes); ok, ov = c.First() {
					if err := c.Delete(); err != nil {
						return err
					}
					count--
					bytes -= int64(len(ov)) + 8
					dropped++
				}
				if err := b.Put(seqKey(seq), v); err != nil {
					return err
				}
				count++
				bytes += size
				added = true
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("bridge spool: %w", err)
	} else {
		s.count.Store(count)
		s.bytes.Store(bytes)
		if dropped > 0 && s.onDrop != nil {
			s.onDrop(dropped)
		}
	}
	for i, w := range batch {
		if err != nil {
			w.err <- err
		} else {
			w.err <- errs[i]
		}
	}
	if err == nil && added {
		select {
		case s.added <- struct{}{}:
		default:
		}
	}
}

// read returns up to max records with sequence numbers above after, in order.
func (s *spool) read(after uint64, max int) ([]*record, error) {
	var out []*record
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(spoolBucket).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			r.Seq = binary.BigEndian.Uint64(k)
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bridge spool: %w", err)
	}
	return out, nil
}

// subscribed returns the filters recorded for the upstream session named key ("" for none, or for
// another session).
func (s *spool) subscribed(key string) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
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
	return s.db.Update(func(tx *bolt.Tx) error {
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

// close stops the writer after the requests already queued and closes the file.
func (s *spool) close() error {
	s.closeMu.Lock()
	s.closed = true
	close(s.writes)
	s.closeMu.Unlock()
	<-s.done
	return s.db.Close()
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// The record encoding: a version byte, flags, the enqueue time, then length-prefixed fields.
const recordVersion = 1

func encodeRecord(r *record) []byte {
	b := make([]byte, 0, 32+len(r.Topic)+len(r.Payload))
	b = append(b, recordVersion)
	var flags byte
	if r.Retain {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Enqueued.UnixNano()))
	b = binary.AppendUvarint(b, uint64(r.MessageExpiry))
	str := func(p []byte) {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	str([]byte(r.Topic))
	str(r.Payload)
	str([]byte(r.ContentType))
	str([]byte(r.ResponseTopic))
	str(r.CorrelationData)
	b = binary.AppendUvarint(b, uint64(len(r.UserProperties)))
	for _, p := range r.UserProperties {
		str([]byte(p.Key))
		str([]byte(p.Value))
	}
	return b
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
