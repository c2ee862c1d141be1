package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

func openTestStore(t *testing.T, path string) *Hook {
	t.Helper()
	s := New(Options{Path: path, Log: zap.NewNop()})
	if err := s.Init(nil); err != nil {
		t.Fatal(err)
	}
	return s
}

func keys(t *testing.T, path string) map[string]bool {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]bool{}
	_ = db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(storeBucket)).ForEach(func(k, _ []byte) error {
			out[string(k)] = true
			return nil
		})
	})
	return out
}

// Concurrent writers share commits, and every write is there after close.
func TestBoltStoreGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s := openTestStore(t, path)
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				cl := &mqtt.Client{ID: fmt.Sprintf("c%d", w)}
				s.db.write(inflightRecord(cl.ID, packets.Packet{PacketID: uint16(i + 1), TopicName: "t"}, 0))
			}
		})
	}
	wg.Wait()
	commits := s.db.commits.Load()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := len(keys(t, path)); got != writers*each {
		t.Fatalf("%d records stored, want %d", got, writers*each)
	}
	if commits >= writers*each {
		t.Fatalf("%d commits for %d writes: no group commit", commits, writers*each)
	}
	t.Logf("%d writes in %d commits", writers*each, commits)
}

// Records queued with writeLater are committed in order with the others, and by close at the latest.
func TestBoltStoreWriteLaterOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s := openTestStore(t, path)
	key := inflightKey("c", packets.Packet{PacketID: 1})
	s.db.writeLater(inflightRecord("c", packets.Packet{PacketID: 1}, 0), deleteRecord(key))
	s.db.writeLater(inflightRecord("c", packets.Packet{PacketID: 1}, 0))
	s.db.writeLater(inflightRecord("c", packets.Packet{PacketID: 2}, 0), deleteRecord(inflightKey("c", packets.Packet{PacketID: 2})))
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	got := keys(t, path)
	if !got[key] || got[inflightKey("c", packets.Packet{PacketID: 2})] {
		t.Fatalf("records after close: %v", got)
	}
}

// A file written by ggbroker's store reads back the same through mochi's own bolt hook.
func TestStoreFileReadableByMochi(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s := openTestStore(t, path)
	cl := &mqtt.Client{ID: "dev-1"}
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.SessionExpiryInterval = 600
	cl.Properties.Username = []byte("user")
	s.OnSessionEstablished(cl, packets.Packet{})
	s.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "dev-1/#", Qos: 1}, {Filter: "a:b/+", NoLocal: true}}}, []byte{1, 0})
	s.OnQosPublish(cl, packets.Packet{PacketID: 7, TopicName: "dev-1/x", Payload: []byte("p"),
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, Properties: packets.Properties{ContentType: "text/plain"}}, 5, 0)
	s.OnRetainMessage(cl, packets.Packet{TopicName: "dev-1/state", Payload: []byte("on"), FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}}, 1)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	h := new(bolt.Hook)
	if err := h.Init(&bolt.Options{Path: path, Bucket: storeBucket}); err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	clients, _ := h.StoredClients()
	subs, _ := h.StoredSubscriptions()
	msgs, _ := h.StoredInflightMessages()
	ret, _ := h.StoredRetainedMessages()
	if len(clients) != 1 || clients[0].ID != "dev-1" || clients[0].Properties.SessionExpiryInterval != 600 || string(clients[0].Username) != "user" {
		t.Fatalf("clients: %+v", clients)
	}
	if len(subs) != 2 || subs[0].Client != "dev-1" || subs[1].Client != "dev-1" {
		t.Fatalf("subscriptions: %+v", subs)
	}
	if len(msgs) != 1 || msgs[0].ID != storage.InflightKey+"_dev-1:7" || msgs[0].Sent != 5 || msgs[0].Properties.ContentType != "text/plain" {
		t.Fatalf("inflight: %+v", msgs)
	}
	if len(ret) != 1 || string(ret[0].Payload) != "on" {
		t.Fatalf("retained: %+v", ret)
	}
}

// A session that ends with its connection writes nothing; one that replaces a persistent session of
// the same client ID removes that session's records (and only those).
func TestStoreCleanSessions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s := openTestStore(t, path)
	v3 := func(id string, clean bool) *mqtt.Client {
		cl := &mqtt.Client{ID: id}
		cl.Properties.ProtocolVersion = 4
		cl.Properties.Clean = clean
		return cl
	}
	sub := packets.Packet{Filters: packets.Subscriptions{{Filter: "t/#"}}}
	msg := packets.Packet{PacketID: 3, TopicName: "t/1", FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}}

	clean := v3("clean", true)
	s.OnSessionEstablished(clean, packets.Packet{})
	s.OnSubscribed(clean, sub, []byte{1})
	s.OnQosPublish(clean, msg, 0, 0)
	s.OnDisconnect(clean, nil, true)

	for _, id := range []string{"a", "a:b"} {
		p := v3(id, false)
		s.OnSessionEstablished(p, packets.Packet{})
		s.OnSubscribed(p, sub, []byte{1})
		s.OnQosPublish(p, msg, 0, 0)
	}
	s.OnDisconnect(v3("a", false), nil, false) // no connection: a restored session, no record
	before := s.db.commits.Load()
	s.OnSessionEstablished(v3("a", true), packets.Packet{}) // clean start replaces the persistent "a"
	if s.db.commits.Load() != before+1 {
		t.Fatal("replacing a persistent session did not remove it in one write")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	got := keys(t, path)
	want := map[string]bool{"CL_a:b": true, "SUB_a:b:t/#": true, "IFM_a:b:3": true}
	if len(got) != len(want) {
		t.Fatalf("records: %v, want %v", got, want)
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("records: %v, want %v", got, want)
		}
	}
}

// The publish log record lives from OnPublish to OnPublished; a subscriber's copy goes with its
// PUBACK, while the publisher's own instant PUBACK is never written.
func TestStorePublishLogAndAcks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s := openTestStore(t, path)
	pub := &mqtt.Client{ID: "pub"}
	pub.Properties.ProtocolVersion = 4
	sub := &mqtt.Client{ID: "sub"}
	sub.Properties.ProtocolVersion = 4
	in := packets.Packet{PacketID: 9, TopicName: "t", FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}}
	if _, err := s.OnPublish(pub, in); err != nil {
		t.Fatal(err)
	}
	var logKey string
	s.accepting.Range(func(_, v any) bool { logKey = v.(*acceptedRecord).key; return false })
	// The write is under way; mochi sends the PUBACK once it is committed (DeferAck), the moment
	// this waits for.
	for deadline := time.Now().Add(5 * time.Second); !s.db.has(logKey); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no publish log record before the PUBACK")
		}
	}
	ack := packets.Packet{PacketID: 9, FixedHeader: packets.FixedHeader{Type: packets.Puback}}
	s.OnQosPublish(pub, ack, 0, 0)
	s.OnQosComplete(pub, ack)
	out := in
	out.PacketID = 4
	s.OnQosPublish(sub, out, 0, 0)
	s.OnPublished(pub, in)
	s.OnQosPublish(sub, packets.Packet{PacketID: 5, TopicName: "t", FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}}, 0, 0)
	s.OnQosComplete(sub, packets.Packet{PacketID: 4, FixedHeader: packets.FixedHeader{Type: packets.Puback}}) // the subscriber's PUBACK
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	got := keys(t, path)
	if len(got) != 1 || !got["IFM_sub:5"] {
		t.Fatalf("records: %v, want only IFM_sub:5", got)
	}
}

// TestFailedPublishLogWriteRefusesTheMessage: when the publish log cannot be written, the message is
// refused instead of acknowledged: MQTT 5 gets PUBACK 0x80 (mochi sends the code OnPublish returns),
// MQTT 3.1.1 is closed without a PUBACK (issue 10: the write error was discarded).
func TestFailedPublishLogWriteRefusesTheMessage(t *testing.T) {
	for _, v := range []byte{5, 4} {
		t.Run(fmt.Sprintf("protocol %d", v), func(t *testing.T) {
			s := openTestStore(t, filepath.Join(t.TempDir(), "sessions.db"))
			var dropped []string
			s.dropped = func(r string) { dropped = append(dropped, r) }
			server := mqtt.New(nil)
			cl := server.NewClient(nil, "t", "dev", false)
			cl.Properties.ProtocolVersion = v
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", Payload: []byte("x"), PacketID: 1}
			if _, err := s.OnPublish(cl, pk); err != nil {
				t.Fatalf("a write that works: %v", err)
			}
			_ = s.db.close() // every later write fails
			_, err := s.OnPublish(cl, pk)
			want := packets.ErrUnspecifiedError
			if v < 5 {
				want = packets.ErrRejectPacket
				if !cl.Closed() {
					t.Error("the MQTT 3.1.1 client was not closed")
				}
			}
			if !errors.Is(err, want) {
				t.Fatalf("OnPublish after a failed write: %v, want %v", err, want)
			}
			if len(dropped) != 1 || dropped[0] != "storage-error" {
				t.Fatalf("dropped counted as %v", dropped)
			}
		})
	}
}

// TestInboundAndOutboundIDsAreKeptApart: the server's PUBREC for a client's QoS 2 message 5 and the
// server's own queued message 5 are two records; the client's PUBREL removes only the first.
func TestInboundAndOutboundIDsAreKeptApart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.db")
	s := openTestStore(t, path)
	server := mqtt.New(nil)
	cl := server.NewClient(nil, "t", "dev", false)
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.SessionExpiryInterval = 3600
	queued := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a", Payload: []byte("q"), PacketID: 5}
	pubrec := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 5}
	s.OnQosPublish(cl, queued, 1, 0)
	s.OnQosPublish(cl, pubrec, 1, 0)
	s.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: 5})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	k := keys(t, path)
	if !k[inflightKey("dev", queued)] {
		t.Fatalf("the client's PUBREL 5 removed the server's queued message 5: %v", k)
	}
	if k[inflightKey("dev", pubrec)] {
		t.Fatalf("the PUBREC record outlived its PUBREL: %v", k)
	}
}

// TestQoS0PublishDoesNotAllocate: the store hook is on every publish's path (persistence is on by
// default); a QoS 0 message, which it does not log, must cost it no allocation (a closure that captured
// the packet once moved every publish's 800-byte packet to the heap).
func TestQoS0PublishDoesNotAllocate(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "s.db"))
	defer s.Stop()
	cl := &mqtt.Client{ID: "dev"}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "dev/t", Payload: []byte("x")}
	if n := testing.AllocsPerRun(1000, func() { _, _ = s.OnPublish(cl, pk) }); n != 0 {
		t.Fatalf("OnPublish of a QoS 0 message: %.1f allocations, want 0", n)
	}
}
