// Package store is ggbroker's storage hook for mochi: sessions, subscriptions, inflight and retained
// messages in mochi's bolt layout, written with group commit, plus what ggbroker's durability promises
// need on top (a publish log so that a PUBACK means "on disk", packet IDs, disconnect times). See Hook.
package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ggbroker/ggbroker/profile"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// The bucket mochi's bolt hook keeps everything in; the file stays readable by a plain mochi broker.
const storeBucket = "mochi"

// Records ggbroker adds to mochi's, as inflight messages of pseudo clients whose IDs no device can
// have (a client ID starting with "$" is refused by the thing-name rule, and mochi never matches it to
// a session): the publish log and the disconnect times.
const (
	// publishLogPrefix: a QoS 1/2 message accepted from a client, kept from before its PUBACK is sent
	// until it has been handed to (and stored for) every subscriber. See store.OnPublish.
	publishLogPrefix = "$ggbroker/accepted/"
	// disconnectedPrefix: when a persistent session lost its connection, so that a session that
	// expired while the broker was stopped is not brought back. mochi stores no such time.
	disconnectedPrefix = "$ggbroker/disconnected/"
)

// CorruptStateError is a persistence file that cannot be opened or read back. The broker refuses to
// start on it rather than discard sessions and queued messages silently.
type CorruptStateError struct {
	Path string
	Err  error
}

func (e *CorruptStateError) Error() string {
	path := e.Path
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return fmt.Sprintf("persistence file %s is unreadable (%v): nothing was changed; move it aside (mv %s %s.bad) to start with no stored sessions, or start with `ggbroker serve --recover`, which does that for you",
		path, e.Err, path, path)
}

func (e *CorruptStateError) Unwrap() error { return e.Err }

// AccessError says that the persistence file may not be read or written by this process (err is a
// permission error), naming the user, so that the fix is a chmod or chown rather than --recover.
func AccessError(path string, err error) error {
	return fmt.Errorf("persistence file %s: permission denied for uid %d (%w): the file is not damaged; give this user read and write access to it (chown/chmod), or run ggbroker as its owner", path, os.Geteuid(), err)
}

// LockTimeout bounds the wait for the persistence file's lock: a second broker on the same state
// directory fails at once instead of hanging.
const LockTimeout = 2 * time.Second

// Check opens the persistence file read-only and reads every record back, so that a damaged file
// stops the start with a message naming it, before mochi's hook (which skips records it cannot decode)
// would silently drop sessions. A missing file is fine: it is created.
func Check(path string) (hasSysInfo bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	defer func() {
		// bbolt panics on some kinds of page corruption rather than returning an error.
		if r := recover(); r != nil {
			err = &CorruptStateError{Path: path, Err: fmt.Errorf("%v", r)}
		}
	}()
	// The broker writes the file: one it may not write is a permission problem, not damage, and
	// --recover must not move it aside.
	if f, err := os.OpenFile(path, os.O_RDWR, 0); errors.Is(err, fs.ErrPermission) {
		return false, AccessError(path, err)
	} else if err == nil {
		f.Close()
	}
	if err := checkMeta(path); err != nil {
		return false, &CorruptStateError{Path: path, Err: err}
	}
	// PreLoadFreelist reads the freelist here, in this goroutine, where a panic on a damaged page is
	// recovered; bbolt's own tx.Check would read it in a goroutine of its own, where a panic kills
	// the process (issue 17: a truncated sessions.db crashed the broker, --recover or not).
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: LockTimeout, ReadOnly: true, PreLoadFreelist: true})
	if errors.Is(err, berrors.ErrTimeout) {
		return false, fmt.Errorf("persistence file %s is locked: is another ggbroker running on this state directory?", path)
	}
	if err != nil {
		return false, &CorruptStateError{Path: path, Err: err}
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		if err := walk(tx); err != nil {
			return err
		}
		b := tx.Bucket([]byte(storeBucket))
		if b == nil {
			return nil
		}
		hasSysInfo = b.Get([]byte(storage.SysInfoKey)) != nil
		return b.ForEach(func(k, v []byte) error {
			if derr := decodeRecord(k, v); derr != nil {
				return fmt.Errorf("record %q: %w", k, derr)
			}
			return nil
		})
	})
	if err != nil {
		return false, &CorruptStateError{Path: path, Err: err}
	}
	return hasSysInfo, nil
}

// checkMeta reads bbolt's two meta pages and refuses a file shorter than either valid meta says it
// is: bbolt maps the file and would touch pages past its end, and the SIGBUS that follows cannot be
// recovered (a truncated file killed the broker). Layout: go.etcd.io/bbolt internal/common (page
// header of 16 bytes, then magic, version, pageSize, flags, root bucket, freelist, pgid, txid,
// checksum: an FNV-64a of the fields before it).
func checkMeta(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	const metaMagic = 0xED0CDAED
	head := make([]byte, 4096)
	if _, err := io.ReadFull(f, head); err != nil {
		return fmt.Errorf("file too short for a bbolt header (%d bytes)", fi.Size())
	}
	pageSize := int64(binary.LittleEndian.Uint32(head[16+8:]))
	if pageSize < 512 || pageSize > 1<<20 || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("implausible page size %d", pageSize)
	}
	valid := 0
	for i := int64(0); i < 2; i++ {
		page := make([]byte, 80)
		if _, err := f.ReadAt(page, i*pageSize); err != nil {
			continue
		}
		m := page[16:]
		h := fnv.New64a()
		h.Write(m[:56])
		if binary.LittleEndian.Uint32(m[0:]) != metaMagic || binary.LittleEndian.Uint64(m[56:]) != h.Sum64() {
			continue
		}
		freelist, pgid := binary.LittleEndian.Uint64(m[32:]), binary.LittleEndian.Uint64(m[40:])
		if int64(pgid)*pageSize > fi.Size() {
			return fmt.Errorf("file is %d bytes but its meta page %d says %d pages of %d bytes: truncated", fi.Size(), i, pgid, pageSize)
		}
		if freelist != ^uint64(0) && freelist >= pgid {
			return fmt.Errorf("meta page %d points its freelist past the end of the file", i)
		}
		valid++
	}
	if valid == 0 {
		return errors.New("neither bbolt meta page is valid")
	}
	return nil
}

// walk reads every bucket and key of the file, touching every branch and leaf page reachable, so that
// a damaged page fails (or panics, recovered by Check) here rather than later in mochi's hook.
func walk(tx *bbolt.Tx) error {
	var visit func(b *bbolt.Bucket) error
	visit = func(b *bbolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					return visit(nb)
				}
			}
			return nil
		})
	}
	return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return visit(b) })
}

// decodeRecord decodes one record as mochi's hook will.
func decodeRecord(k, v []byte) error {
	var obj storage.Serializable
	switch {
	case bytes.HasPrefix(k, []byte(storage.ClientKey+"_")):
		obj = &storage.Client{}
	case bytes.HasPrefix(k, []byte(storage.SubscriptionKey+"_")):
		obj = &storage.Subscription{}
	case bytes.HasPrefix(k, []byte(storage.RetainedKey+"_")), bytes.HasPrefix(k, []byte(storage.InflightKey+"_")):
		obj = &storage.Message{}
	case bytes.Equal(k, []byte(storage.SysInfoKey)):
		obj = &storage.SystemInfo{}
	default:
		return nil
	}
	return obj.UnmarshalBinary(v)
}

// Recover moves an unreadable persistence file aside (path.corrupt-TIMESTAMP) and returns the
// new name; the broker then starts with no stored sessions. Nothing is deleted.
func Recover(path string, now time.Time) (string, error) {
	aside := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("move %s aside: %w", path, err)
	}
	return aside, nil
}

// Hook is ggbroker's storage hook: mochi's records in mochi's layout (boltStore), written with group
// commit, and what ggbroker's guarantees need on top:
//
//   - A PUBACK means the message is on disk. mochi sends the PUBACK before it hands the message to the
//     subscribers (and before their stored copies are written), so a crash right after a PUBACK could
//     lose a message the publisher was told was received. OnPublish therefore writes the accepted
//     message to a publish log before mochi sends the PUBACK, and OnPublished removes it once every
//     subscriber's copy is stored; at start the log is replayed to the subscribers it did not reach.
//   - mochi's hook does not store an inflight message's packet ID, so after a restart several queued
//     messages of one session would share ID 0 and all but one would be lost. The ID is in the key;
//     StoredInflightMessages puts it back.
//   - mochi's hook writes and deletes the PUBACK it is about to send for every QoS 1 message: two
//     synchronous disk writes that protect nothing. They are skipped.
//   - A session that ends with its connection (MQTT 3.1.1 clean session, MQTT 5 session expiry 0) is
//     not written at all: nothing of it would be restored, and mochi's hook spent a disk write on each
//     CONNECT and DISCONNECT of such a client, and one per message queued for it.
//   - Sessions that expired while the broker was stopped are dropped at start (mochi would count their
//     expiry from the restart), and so are subscriptions and messages of sessions that no longer exist.
//
// Writes that a PUBACK, SUBACK or CONNACK may depend on return once committed (and fsynced); only the
// removal of a delivered or dropped message is left to the next commit (see boltStore.writeLater).
type Hook struct {
	mqtt.HookBase
	db         *boltStore // set by Init
	path       string
	log        *zap.Logger
	server     *mqtt.Server
	canReceive func(cl *mqtt.Client, topic string) bool
	dropped    func(reason string) // counts a refused message (metrics), nil counts nothing
	// profile and maxExpiry decide how long a stored session lives (profile.SessionExpiry).
	profile    profile.Profile
	maxExpiry  uint32
	hasSysInfo bool // the file holds a $SYS record (checkStore)

	seq       atomic.Uint64
	accepting sync.Map // *mqtt.Client -> *acceptedRecord, between OnPublish and OnPublished

	// Set while the stored state is read at start (mochi calls StoredClients, StoredSubscriptions and
	// StoredInflightMessages in that order, from Serve).
	mu    sync.Mutex
	kept  map[string]bool // client IDs of the sessions restored
	stats loadStats
}

// loadStats is what the start restored, for one log record.
type loadStats struct {
	sessions, expired, subscriptions, orphans, inflight, replayed, replayedTo int
}

// acceptedRecord is the publish log record of a message between OnPublish and OnPublished.
type acceptedRecord struct {
	key string
}

// Options configure a Hook.
type Options struct {
	// Path is the persistence file; Log the hook's logger.
	Path string
	Log  *zap.Logger
	// Server is the mochi server the hook is added to (replaying the publish log reads its
	// subscriptions and sessions).
	Server *mqtt.Server
	// CanReceive decides iot:Receive for a replayed copy; nil allows every copy.
	CanReceive func(cl *mqtt.Client, topic string) bool
	// Dropped counts a message refused because it could not be stored; nil counts nothing.
	Dropped func(reason string)
	// Profile and MaxExpiry decide how long a stored session lives (profile.SessionExpiry).
	Profile   profile.Profile
	MaxExpiry uint32
	// HasSysInfo says the file already holds a $SYS record (from Check).
	HasSysInfo bool
}

// New makes the hook; mochi opens the file when the hook is added (Init).
func New(o Options) *Hook {
	s := &Hook{path: o.Path, log: o.Log, server: o.Server, canReceive: o.CanReceive, dropped: o.Dropped,
		profile: o.Profile, maxExpiry: o.MaxExpiry, hasSysInfo: o.HasSysInfo}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.seq.Store(uint64(time.Now().UnixNano()))
	return s
}

func (s *Hook) ID() string { return "ggbroker-store" }

func (s *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnPublished, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed,
		mqtt.OnUnsubscribed, mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete,
		mqtt.OnQosDropped, mqtt.OnSysInfoTick, mqtt.OnClientExpired, mqtt.OnRetainedExpired, mqtt.StoredClients,
		mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages, mqtt.StoredSubscriptions, mqtt.StoredSysInfo:
		return true
	}
	return false
}

// Init opens the file: a lock timeout, and bbolt's defaults otherwise (every commit is fsynced).
func (s *Hook) Init(any) error {
	db, err := openBoltStore(s.path, storeBucket, &bbolt.Options{Timeout: LockTimeout}, s.log)
	if err != nil {
		return err
	}
	s.db = db
	return nil
}

// Stop commits what is queued and closes the file.
func (s *Hook) Stop() error {
	if s.db == nil {
		return nil
	}
	return s.db.close()
}

// persistent says whether a client's session outlives its connection, as mochi decides it when the
// connection ends. Nothing of one that does not is written.
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (s *Hook) write(recs ...record) {
	_ = s.db.write(recs...) // boltStore logs a failure
}

// OnPublish logs an accepted QoS 1/2 message before mochi acknowledges it. It runs after the
// authorization hook, so a refused message is never logged.
func (s *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	recs := make([]record, 0, 2)
	if prev, ok := s.accepting.LoadAndDelete(cl); ok {
		// The previous message's PUBACK could not be written, so mochi did not deliver it and the
		// publisher was told nothing: its log record promises nothing either.
		recs = append(recs, deleteRecord(prev.(*acceptedRecord).key))
	}
	logged := pk.Copy(false)
	logged.FixedHeader.Retain = false // the retained copy is written separately, before the PUBACK too
	put := inflightRecord(publishLogPrefix+strconv.FormatUint(s.seq.Add(1), 36), logged, pk.Created)
	// failed captures the topic, not pk: a closure that captured pk would move every publish's
	// 800-byte packet to the heap when OnPublish is entered, QoS 0 ones included.
	topic := pk.TopicName
	failed := func(err error) {
		s.log.Error("message refused: the publish log write failed", zap.String("clientId", cl.ID),
			zap.String("topicName", topic), zap.String("eventType", "Publish-In"), zap.String("status", "Failure"),
			zap.String("reason", "STORAGE_ERROR"), zap.Error(err))
		if s.dropped != nil {
			s.dropped("storage-error")
		}
	}
	if pk.FixedHeader.Qos == 1 {
		// The PUBACK waits for the commit, the read loop does not (mochi's DeferAck): the client's
		// next messages join the same commit. A failed commit makes mochi answer PUBACK 0x80 (MQTT 5)
		// or close the connection (3.1.1), so that the client sends the message again.
		r := s.db.enqueue(append(recs, put))
		if r == nil {
			failed(errStoreClosed)
			return s.refuse(cl, pk)
		}
		cl.DeferAck(func() error {
			<-r.done
			if r.err != nil {
				failed(r.err)
			}
			return r.err
		})
		s.accepting.Store(cl, &acceptedRecord{key: string(put.key)})
		return pk, nil
	}
	if err := s.db.write(append(recs, put)...); err != nil {
		// Not on disk, so not acknowledged: a PUBREC would promise what a crash could break.
		failed(err)
		return s.refuse(cl, pk)
	}
	s.accepting.Store(cl, &acceptedRecord{key: string(put.key)})
	return pk, nil
}

// refuse is OnPublish's answer to a message it could not log: not acknowledged.
func (s *Hook) refuse(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Properties.ProtocolVersion == 5 {
		return pk, packets.ErrUnspecifiedError // PUBACK 0x80: the client may resend
	}
	cl.Stop(packets.ErrUnspecifiedError) // MQTT 3.1.1 has no negative PUBACK: close, the client resends
	return pk, packets.ErrRejectPacket
}

// OnPublished removes the log record: every subscriber's copy has been stored. Losing the removal in a
// crash only replays the message (at least once).
func (s *Hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if v, ok := s.accepting.LoadAndDelete(cl); ok {
		s.db.writeLater(deleteRecord(v.(*acceptedRecord).key))
	}
}

// OnQosPublish stores an inflight message: an outgoing QoS 1/2 message, or the PUBREC of an incoming
// QoS 2 one. (mochi does not report the PUBACK of an incoming QoS 1 message, whose packet ID is the
// client's: the publish log covers that message.)
func (s *Hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if pk.FixedHeader.Type == packets.Puback || !persistent(cl) {
		return
	}
	s.write(inflightRecord(cl.ID, pk, sent))
}

// OnQosComplete removes an inflight message: pk is the client's acknowledgement of an outgoing
// message (PUBACK, PUBCOMP) or its PUBREL of an incoming QoS 2 one. The message was delivered: losing
// the removal in a crash only resends it.
func (s *Hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if !persistent(cl) {
		return
	}
	if pk.FixedHeader.Type == packets.Pubrel {
		// The client's PUBREL ends its own QoS 2 message: the record is the server's PUBREC of it.
		pk.FixedHeader.Type = packets.Pubrec
	}
	s.db.writeLater(deleteRecord(inflightKey(cl.ID, pk)))
}

// OnQosDropped removes a dropped inflight message.
func (s *Hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { s.OnQosComplete(cl, pk) }

// OnSessionEstablished stores a persistent session, and forgets when it was last disconnected. A
// session that ends with its connection is not stored, but it may replace a persistent one of the
// same client ID (clean start), whose records then go.
func (s *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if !persistent(cl) {
		if s.db.has(clientKey(cl.ID)) {
			s.write(record{purge: cl.ID})
		}
		return
	}
	s.write(clientRecord(cl), deleteRecord(disconnectedKey(cl.ID)))
}

// OnWillSent stores the session without its will message.
func (s *Hook) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	if persistent(cl) {
		s.write(clientRecord(cl))
	}
}

// OnDisconnect removes a session that ends with its connection; for one that outlives it, it records
// when the connection was lost.
func (s *Hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if v, ok := s.accepting.LoadAndDelete(cl); ok {
		s.db.writeLater(deleteRecord(v.(*acceptedRecord).key))
	}
	if errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) || cl.Net.Inline {
		return // the session lives on in the new connection
	}
	if expire {
		// A session that was never stored has nothing to remove, unless it was restored from the file
		// (mochi "disconnects" those at start) or an MQTT 5 client set its expiry to 0 on DISCONNECT.
		if cl.Net.Conn == nil || cl.Properties.ProtocolVersion == 5 {
			if s.db.has(clientKey(cl.ID)) {
				s.write(record{purge: cl.ID})
			}
		}
		return
	}
	// A session restored at start (no connection yet) keeps the disconnect time it has, if any: mochi
	// "disconnects" every restored session, and rewriting them all would cost a disk write each.
	if cl.Net.Conn == nil {
		return
	}
	s.write(inflightRecord(disconnectedPrefix+cl.ID, packets.Packet{Created: time.Now().Unix()}, 0))
}

// OnSubscribed stores a persistent session's subscriptions.
func (s *Hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if !persistent(cl) {
		return
	}
	recs := make([]record, 0, len(pk.Filters))
	for i, f := range pk.Filters {
		if i < len(reasonCodes) {
			recs = append(recs, subscriptionRecord(cl.ID, f, reasonCodes[i]))
		}
	}
	s.write(recs...)
}

// OnUnsubscribed removes a persistent session's subscriptions.
func (s *Hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if !persistent(cl) || len(pk.Filters) == 0 {
		return
	}
	recs := make([]record, 0, len(pk.Filters))
	for _, f := range pk.Filters {
		recs = append(recs, deleteRecord(subscriptionKey(cl.ID, f.Filter)))
	}
	s.write(recs...)
}

// OnRetainMessage stores or (r == -1) removes a topic's retained message.
func (s *Hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if r == -1 {
		s.write(deleteRecord(retainedKey(pk.TopicName)))
		return
	}
	s.write(retainedRecord(cl.ID, pk))
}

// OnRetainedExpired removes an expired retained message.
func (s *Hook) OnRetainedExpired(topic string) { s.write(deleteRecord(retainedKey(topic))) }

// OnSysInfoTick stores the $SYS counters, which mochi restores at start.
func (s *Hook) OnSysInfoTick(sys *system.Info) { s.write(sysInfoRecord(sys)) }

// OnClientExpired removes an expired session with its subscriptions and messages (mochi's hook
// removes the session record only), in one write.
func (s *Hook) OnClientExpired(cl *mqtt.Client) {
	s.write(record{purge: cl.ID})
}

// StoredRetainedMessages returns the retained messages.
func (s *Hook) StoredRetainedMessages() ([]storage.Message, error) {
	return load[storage.Message](s.db, storage.RetainedKey)
}

// StoredSysInfo returns the $SYS counters stored last, or zeros.
func (s *Hook) StoredSysInfo() (storage.SystemInfo, error) {
	var v storage.SystemInfo
	err := s.db.db.View(func(tx *bbolt.Tx) error {
		if raw := tx.Bucket([]byte(storeBucket)).Get([]byte(storage.SysInfoKey)); raw != nil {
			return v.UnmarshalBinary(raw)
		}
		return nil
	})
	return v, err
}

// StoredClients returns the stored sessions, without those that expired while the broker was
// stopped. A v5 session's expiry is what remains of it.
func (s *Hook) StoredClients() ([]storage.Client, error) {
	all, err := load[storage.Client](s.db, storage.ClientKey)
	if err != nil {
		return nil, err
	}
	inflight, err := load[storage.Message](s.db, storage.InflightKey)
	if err != nil {
		return nil, err
	}
	lost := map[string]int64{}
	for _, m := range inflight {
		if id, ok := strings.CutPrefix(m.Client, disconnectedPrefix); ok {
			lost[id] = m.Created
		}
	}
	now := time.Now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept = map[string]bool{}
	var out []storage.Client
	var expired []record
	for _, c := range all {
		persistent := c.ProtocolVersion == 5 && c.Properties.SessionExpiryInterval > 0 || c.ProtocolVersion < 5 && !c.Clean
		expiry := s.profile.SessionExpiry(c.ProtocolVersion == 5, c.Properties.SessionExpiryInterval, s.maxExpiry)
		at, wasLost := lost[c.ID]
		if !persistent {
			out = append(out, c) // mochi removes it itself, as it ends with its connection
			continue
		}
		if wasLost && profile.SessionExpired(at, now, expiry) {
			s.stats.expired++
			expired = append(expired, record{purge: c.ID})
			continue
		}
		if c.ProtocolVersion == 5 {
			// mochi does not store the flag that says the interval was given, so it would apply its
			// maximum instead; and it counts from the restart, so give it what is left.
			c.Properties.SessionExpiryIntervalFlag = true
			if wasLost {
				c.Properties.SessionExpiryInterval = uint32(max(at+int64(expiry)-now, 1))
			}
		}
		s.kept[c.ID] = true
		s.stats.sessions++
		out = append(out, c)
	}
	if len(expired) > 0 {
		s.write(expired...)
	}
	return out, nil
}

// StoredSubscriptions returns the subscriptions of restored sessions and removes the others.
func (s *Hook) StoredSubscriptions() ([]storage.Subscription, error) {
	all, err := load[storage.Subscription](s.db, storage.SubscriptionKey)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := all[:0]
	var orphans []record
	for _, sub := range all {
		if !s.kept[sub.Client] {
			s.stats.orphans++
			orphans = append(orphans, deleteRecord(subscriptionKey(sub.Client, sub.Filter)))
			continue
		}
		s.stats.subscriptions++
		out = append(out, sub)
	}
	if len(orphans) > 0 {
		s.write(orphans...)
	}
	return out, nil
}

// StoredInflightMessages returns the messages queued for restored sessions, with their packet IDs, in
// the order they were queued (mochi resends them in the order it is given them), after replaying the
// publish log (its copies come last, in the order the messages were accepted): a message
// acknowledged to its publisher but not yet stored for every subscriber is stored for them now (a
// subscriber that already had it may get it twice, which QoS 1 allows). mochi calls this after
// restoring sessions and subscriptions, and before the listeners accept anything. The replayed copies
// and the removals are one write.
func (s *Hook) StoredInflightMessages() ([]storage.Message, error) {
	all, err := load[storage.Message](s.db, storage.InflightKey)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out, accepted []storage.Message
	var recs []record
	used := map[string]map[uint16]bool{}
	for _, m := range all {
		switch {
		case strings.HasPrefix(m.Client, publishLogPrefix):
			accepted = append(accepted, m)
			continue
		case strings.HasPrefix(m.Client, disconnectedPrefix):
			continue
		}
		id, ok := packetIDOf(m)
		if !ok || !s.kept[m.Client] {
			s.stats.orphans++
			recs = append(recs, deleteRecord(m.ID))
			continue
		}
		m.PacketID = id
		if used[m.Client] == nil {
			used[m.Client] = map[uint16]bool{}
		}
		used[m.Client][id] = true
		out = append(out, m)
	}
	sortQueued(out)
	slices.SortFunc(accepted, func(a, b storage.Message) int { return strings.Compare(a.Client, b.Client) })
	for _, m := range accepted {
		copies, puts := s.replay(m, used)
		out = append(out, copies...)
		recs = append(recs, puts...)
		recs = append(recs, deleteRecord(m.ID)) // after the copies: one transaction holds both
		s.stats.replayed++
	}
	if len(recs) > 0 {
		s.write(recs...)
	}
	s.stats.inflight = len(out)
	return out, nil
}

// sortQueued puts each session's stored messages back in the order they were queued: the file keeps
// them by key, the packet ID in decimal ("10" before "9"). mochi gives a session's outgoing messages
// packet IDs in increasing order, wrapping after 65535 and skipping IDs in use, so within one second
// of Created the order is the IDs' circular order, from the largest gap between them (where the IDs
// not in use are); across seconds, Created.
func sortQueued(ms []storage.Message) {
	slices.SortFunc(ms, func(a, b storage.Message) int {
		return cmp.Or(strings.Compare(a.Client, b.Client), cmp.Compare(a.Created, b.Created), cmp.Compare(a.PacketID, b.PacketID))
	})
	for i := 0; i < len(ms); {
		j := i + 1
		for j < len(ms) && ms[j].Client == ms[i].Client && ms[j].Created == ms[i].Created {
			j++
		}
		run := ms[i:j]
		start, gap := 0, int(run[0].PacketID)+65536-int(run[len(run)-1].PacketID) // the gap across the wrap
		for k := 1; k < len(run); k++ {
			if g := int(run[k].PacketID) - int(run[k-1].PacketID); g > gap {
				start, gap = k, g
			}
		}
		copy(run, append(slices.Clone(run[start:]), run[:start]...))
		i = j
	}
}

// replay makes a logged message's copy for each restored session subscribed to its topic, as mochi's
// delivery would have: iot:Receive checked, QoS the lower of message and subscription, no-local
// honoured, one member of each shared subscription group. It returns the copies and their records.
func (s *Hook) replay(m storage.Message, used map[string]map[uint16]bool) ([]storage.Message, []record) {
	pk := m.ToPacket()
	subs := s.server.Topics.Subscribers(pk.TopicName)
	subs.SelectShared()
	subs.MergeSharedSelected()
	var out []storage.Message
	var recs []record
	for id, sub := range subs.Subscriptions {
		cl, ok := s.server.Clients.Get(id)
		if !ok || sub.NoLocal && pk.Origin == id || sub.Qos == 0 {
			continue
		}
		if s.canReceive != nil && !s.canReceive(cl, pk.TopicName) {
			continue
		}
		if used[id] == nil {
			used[id] = map[uint16]bool{}
		}
		pid, ok := freePacketID(used[id])
		if !ok {
			s.log.Warn("stored session has no free packet ID; a logged message is not queued for it", zap.String("clientId", id))
			continue
		}
		used[id][pid] = true
		pkt := pk.Copy(false)
		pkt.PacketID = pid
		pkt.FixedHeader.Qos = min(pk.FixedHeader.Qos, sub.Qos)
		pkt.FixedHeader.Dup = false
		recs = append(recs, inflightRecord(id, pkt, pkt.Created))
		out = append(out, storage.Message{
			ID: inflightKey(id, pkt), T: storage.InflightKey, Client: id, Origin: pkt.Origin,
			FixedHeader: pkt.FixedHeader, TopicName: pkt.TopicName, Payload: pkt.Payload, Created: pkt.Created, PacketID: pid,
			Properties: m.Properties,
		})
		s.stats.replayedTo++
	}
	return out, recs
}

// packetIDOf reads an inflight message's packet ID from its key, where mochi's hook keeps it.
func packetIDOf(m storage.Message) (uint16, bool) {
	if m.PacketID != 0 {
		return m.PacketID, true
	}
	i := strings.LastIndexByte(m.ID, ':')
	if i < 0 {
		return 0, false
	}
	id, err := strconv.ParseUint(m.ID[i+1:], 10, 16)
	return uint16(id), err == nil && id != 0
}

func freePacketID(used map[uint16]bool) (uint16, bool) {
	for id := 1; id <= 65535; id++ {
		if !used[uint16(id)] {
			return uint16(id), true
		}
	}
	return 0, false
}

// LogRestored writes one record of what the start restored.
func (s *Hook) LogRestored(took time.Duration) {
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	s.log.Info("persistent sessions restored", zap.String("file", s.path), zap.Int("sessions", st.sessions),
		zap.Int("subscriptions", st.subscriptions), zap.Int("queuedMessages", st.inflight),
		zap.Int("expiredWhileStopped", st.expired), zap.Int("orphanRecordsRemoved", st.orphans),
		zap.Int("acceptedMessagesReplayed", st.replayed), zap.Int("replayedCopies", st.replayedTo),
		zap.Duration("took", took))
}

// Path is the persistence file.
func (s *Hook) Path() string { return s.path }

// AddedTo finishes the hook's start once mochi has opened the file: a plain mochi broker's bolt hook
// logs an error when it finds no $SYS record, so one is written.
func (s *Hook) AddedTo() {
	if !s.hasSysInfo {
		s.OnSysInfoTick(&system.Info{})
	}
}
