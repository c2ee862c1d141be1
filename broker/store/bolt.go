package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// errStoreClosed is a write after the persistence file was closed (a late hook call during shutdown).
var errStoreClosed = errors.New("persistence file is closed")

// boltStore is the persistence file: one bbolt bucket with mochi's bolt hook's keys and JSON records
// (hooks/storage/bolt), so a file written by either can be read by the other, with group commit.
//
// mochi's hook runs every put and delete in its own bbolt transaction, so every CONNECT, SUBSCRIBE
// and QoS 1 message costs one or more fsyncs, one after the other across all clients. Here writes go
// to one committer: while it commits a transaction, the writes that arrive meanwhile (from any number
// of client goroutines) queue up, and the next transaction commits all of them with one fsync. A lone
// writer waits for its own commit only (no batching delay, unlike bbolt's DB.Batch with its
// MaxBatchDelay); under load the batch grows with the load. Every commit is fsynced (NoSync stays
// off): write returns once its records are on disk.
type boltStore struct {
	db     *bbolt.DB
	bucket []byte
	log    *zap.Logger

	mu      sync.Mutex
	pending []record      // in arrival order: a put and a later delete of one key end deleted
	next    *commitResult // the result of the commit that will take pending
	closed  bool
	wake    chan struct{} // capacity 1: there are pending records
	stopped chan struct{}

	commits atomic.Uint64 // transactions committed, for tests and figures
}

// record is one change to the bucket: a put (value set), a delete (value nil), or the removal of
// everything stored for a client (purge set).
type record struct {
	key, value []byte
	purge      string
}

type commitResult struct {
	done chan struct{}
	err  error
}

// openBoltStore opens (or creates) the file and its bucket and starts the committer.
func openBoltStore(path, bucket string, opts *bbolt.Options, log *zap.Logger) (*boltStore, error) {
	db, err := bbolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(bucket))
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	b := &boltStore{db: db, bucket: []byte(bucket), log: log, wake: make(chan struct{}, 1), stopped: make(chan struct{}),
		next: &commitResult{done: make(chan struct{})}}
	go b.run()
	return b, nil
}

// close commits what is queued and closes the file.
func (b *boltStore) close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.wake) // under mu: no writer can signal a closed channel
	b.mu.Unlock()
	<-b.stopped
	return b.db.Close()
}

// write applies the records in one transaction, with whatever other writers queued meanwhile, and
// returns once that transaction is committed and fsynced.
func (b *boltStore) write(recs ...record) error {
	r := b.enqueue(recs)
	if r == nil {
		return errStoreClosed
	}
	<-r.done
	return r.err
}

// writeLater queues the records for the next commit and returns at once. Only for records whose loss
// in a crash costs nothing but a duplicate: the removal of a delivered message (QoS 1 is at least
// once). Records are applied in the order they were queued, so a later put of the same key wins.
func (b *boltStore) writeLater(recs ...record) {
	if b.enqueue(recs) == nil {
		b.log.Debug("write after the persistence file was closed", zap.Int("records", len(recs)))
	}
}

func (b *boltStore) enqueue(recs []record) *commitResult {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.pending = append(b.pending, recs...)
	select {
	case b.wake <- struct{}{}:
	default: // already signalled
	}
	return b.next
}

// run is the committer: one transaction per round, with everything queued since the last one.
func (b *boltStore) run() {
	defer close(b.stopped)
	var spare []record
	for range b.wake {
		b.mu.Lock()
		batch, r := b.pending, b.next
		if len(batch) == 0 {
			b.mu.Unlock()
			continue
		}
		b.pending, b.next = spare[:0], &commitResult{done: make(chan struct{})}
		b.mu.Unlock()
		r.err = b.commit(batch)
		close(r.done)
		clear(batch) // drop the references to the records' bytes
		spare = batch
	}
}

func (b *boltStore) commit(batch []record) error {
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(b.bucket)
		if bk == nil {
			return fmt.Errorf("bucket %q is missing", b.bucket)
		}
		for _, rec := range batch {
			var err error
			switch {
			case rec.purge != "":
				err = purgeClient(bk, rec.purge)
			case rec.value == nil:
				err = bk.Delete(rec.key)
			default:
				err = bk.Put(rec.key, rec.value)
			}
			switch {
			case errors.Is(err, berrors.ErrKeyRequired), errors.Is(err, berrors.ErrKeyTooLarge), errors.Is(err, berrors.ErrValueTooLarge):
				// One record bbolt cannot hold (a 64 KB topic filter in a key) must not fail the others'
				// commit: bbolt checks these before changing anything, so skip it.
				b.log.Error("record not stored", zap.ByteString("key", rec.key[:min(len(rec.key), 200)]), zap.Error(err))
			case err != nil:
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.log.Error("persistence write failed", zap.Int("records", len(batch)), zap.Error(err))
		return err
	}
	b.commits.Add(1)
	return nil
}

// purgeClient deletes every record of a client: its session, subscriptions, inflight messages and
// disconnect time. mochi's keys put the client ID before a ':' that IDs may contain too ("a" and
// "a:b"), so a subscription or message is matched on the client named in its record.
func purgeClient(bk *bbolt.Bucket, id string) error {
	var doomed [][]byte
	for _, prefix := range []string{storage.SubscriptionKey + "_" + id + ":", storage.InflightKey + "_" + id + ":"} {
		c := bk.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			var owner struct {
				Client string `json:"client"`
			}
			if json.Unmarshal(v, &owner) == nil && owner.Client == id {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
	}
	doomed = append(doomed, []byte(storage.ClientKey+"_"+id), []byte(disconnectedKey(id)))
	for _, k := range doomed {
		if err := bk.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// has says whether a key is stored (committed).
func (b *boltStore) has(key string) bool {
	found := false
	_ = b.db.View(func(tx *bbolt.Tx) error {
		if bk := tx.Bucket(b.bucket); bk != nil {
			found = bk.Get([]byte(key)) != nil
		}
		return nil
	})
	return found
}

// load decodes every record whose key starts with prefix+"_", as mochi's hook reads them back; a
// record that does not decode is skipped (checkStore has refused a file with any at start).
func load[T any, P interface {
	*T
	storage.Serializable
}](b *boltStore, prefix string) ([]T, error) {
	var out []T
	p := []byte(prefix + "_")
	err := b.db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(b.bucket)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var obj T
			if P(&obj).UnmarshalBinary(v) == nil {
				out = append(out, obj)
			}
		}
		return nil
	})
	return out, err
}

// The records, built exactly as mochi's bolt hook builds them.

func putRecord(key string, v storage.Serializable) record {
	raw, _ := v.MarshalBinary() // JSON of plain structs: cannot fail
	return record{key: []byte(key), value: raw}
}

func deleteRecord(key string) record { return record{key: []byte(key)} }

func clientKey(id string) string { return storage.ClientKey + "_" + id }

func subscriptionKey(id, filter string) string {
	return storage.SubscriptionKey + "_" + id + ":" + filter
}

func retainedKey(topic string) string { return storage.RetainedKey + "_" + topic }

// inflightKey is where a session's inflight record is kept. The client's packet IDs and the server's
// are separate spaces (MQTT; mochi patch 7), so the server's PUBREC for a client's QoS 2 message N is
// kept apart (":in:N") from the server's queued message N: keyed alike, one overwrote the other on
// disk and the PUBREL deleted the queued message, which only showed after a restart.
func inflightKey(id string, pk packets.Packet) string {
	if pk.FixedHeader.Type == packets.Pubrec {
		return storage.InflightKey + "_" + id + ":in:" + pk.FormatID()
	}
	return storage.InflightKey + "_" + id + ":" + pk.FormatID()
}

// disconnectedKey is where a persistent session's disconnect time is kept (an inflight record of a
// pseudo client, see disconnectedPrefix).
func disconnectedKey(id string) string {
	return inflightKey(disconnectedPrefix+id, packets.Packet{})
}

func clientRecord(cl *mqtt.Client) record {
	props := cl.Properties.Props.Copy(false)
	return putRecord(clientKey(cl.ID), &storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: props.SessionExpiryInterval,
			AuthenticationMethod:  props.AuthenticationMethod,
			AuthenticationData:    props.AuthenticationData,
			RequestProblemInfo:    props.RequestProblemInfo,
			RequestResponseInfo:   props.RequestResponseInfo,
			ReceiveMaximum:        props.ReceiveMaximum,
			TopicAliasMaximum:     props.TopicAliasMaximum,
			User:                  props.User,
			MaximumPacketSize:     props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
}

func subscriptionRecord(id string, f packets.Subscription, qos byte) record {
	key := subscriptionKey(id, f.Filter)
	return putRecord(key, &storage.Subscription{
		ID:                key,
		T:                 storage.SubscriptionKey,
		Client:            id,
		Qos:               qos,
		Filter:            f.Filter,
		Identifier:        f.Identifier,
		NoLocal:           f.NoLocal,
		RetainHandling:    f.RetainHandling,
		RetainAsPublished: f.RetainAsPublished,
	})
}

func messageProperties(p packets.Properties) storage.MessageProperties {
	props := p.Copy(false)
	return storage.MessageProperties{
		PayloadFormat:          props.PayloadFormat,
		MessageExpiryInterval:  props.MessageExpiryInterval,
		ContentType:            props.ContentType,
		ResponseTopic:          props.ResponseTopic,
		CorrelationData:        props.CorrelationData,
		SubscriptionIdentifier: props.SubscriptionIdentifier,
		TopicAlias:             props.TopicAlias,
		User:                   props.User,
	}
}

func retainedRecord(id string, pk packets.Packet) record {
	key := retainedKey(pk.TopicName)
	return putRecord(key, &storage.Message{
		ID:          key,
		T:           storage.RetainedKey,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		Client:      id,
		Origin:      pk.Origin,
		Properties:  messageProperties(pk.Properties),
	})
}

func inflightRecord(id string, pk packets.Packet, sent int64) record {
	key := inflightKey(id, pk)
	return putRecord(key, &storage.Message{
		ID:          key,
		T:           storage.InflightKey,
		Client:      id,
		Origin:      pk.Origin,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Sent:        sent,
		Created:     pk.Created,
		Properties:  messageProperties(pk.Properties),
	})
}

func sysInfoRecord(sys *system.Info) record {
	return putRecord(storage.SysInfoKey, &storage.SystemInfo{ID: storage.SysInfoKey, T: storage.SysInfoKey, Info: *sys})
}
