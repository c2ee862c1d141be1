package mqtt

import (
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// allowAll is a hook that allows every ACL question, as ggbroker's authorizer does on its
// allow path (it allocates nothing there either).
type allowAll struct{ HookBase }

func (h *allowAll) ID() string                            { return "allow-all" }
func (h *allowAll) Provides(b byte) bool                  { return b == OnACLCheck || b == OnConnectAuthenticate }
func (h *allowAll) OnACLCheck(*Client, string, bool) bool { return true }
func (h *allowAll) OnConnectAuthenticate(*Client, packets.Packet) bool {
	return true
}

// countingConn counts the bytes and the Write calls that reach the connection, and discards them.
type countingConn struct {
	net.Conn
	writes, bytes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(p)))
	return len(p), nil
}

// deliverySetup is a server with subs subscribers of "bench/#" whose write loops run and whose
// connections discard what they are sent.
func deliverySetup(b *testing.B, subs int) (*Server, []*countingConn) {
	b.Helper()
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Options.Capabilities.MaximumClientWritesPending = 1 << 20
	if err := s.AddHook(&allowAll{}, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { close(s.done) })
	conns := make([]*countingConn, subs)
	for i := range conns {
		c, r := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, r) }()
		cc := &countingConn{Conn: c}
		conns[i] = cc
		cl := s.NewClient(cc, "t", "sub"+string(rune('a'+i%26))+string(rune('a'+i/26)), false)
		cl.Properties.ProtocolVersion = 5
		s.Clients.Add(cl)
		s.Topics.Subscribe(cl.ID, packets.Subscription{Filter: "bench/#", Qos: 0})
		cl.startWriter()
		b.Cleanup(func() { cl.Stop(nil); c.Close(); r.Close() })
	}
	return s, conns
}

// waitDelivered waits until every subscriber's write loop has written want messages.
func waitDelivered(b *testing.B, s *Server, want int64) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for atomic.LoadInt64(&s.Info.MessagesSent) < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages written", atomic.LoadInt64(&s.Info.MessagesSent), want)
		}
		runtime.Gosched()
	}
}

// BenchmarkDeliverQoS0 measures the publish -> deliver path from the subscriber lookup to the
// subscriber's socket write: allocations and bytes per delivered message, and Write calls per
// message (1.0 means one syscall and one TLS record per packet; less is coalescing).
func BenchmarkDeliverQoS0(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(map[int]string{1: "subs=1", 10: "subs=10"}[n], func(b *testing.B) {
			s, conns := deliverySetup(b, n)
			pk := packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish},
				TopicName:   "bench/pub-1",
				Payload:     make([]byte, 64),
				Created:     1,
				Expiry:      0,
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.publishToSubscribers(pk)
			}
			waitDelivered(b, s, int64(b.N*n))
			b.StopTimer()
			var writes int64
			for _, c := range conns {
				writes += c.writes.Load()
			}
			b.ReportMetric(float64(writes)/float64(b.N*n), "writes/msg")
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestSubscriberCacheFollowsChanges (patch: subscriberCache): a lookup after Subscribe,
// Unsubscribe or their inline forms sees the change, though the topic's subscribers were cached
// before it.
func TestSubscriberCacheFollowsChanges(t *testing.T) {
	x := NewTopicsIndex()
	count := func() (int, int) {
		subs, _ := x.subscribersCached("a/b")
		return len(subs.Subscriptions), len(subs.InlineSubscriptions)
	}
	steps := []struct {
		name          string
		change        func()
		plain, inline int
	}{
		{"empty", func() {}, 0, 0},
		{"subscribe a/#", func() { x.Subscribe("c1", packets.Subscription{Filter: "a/#"}) }, 1, 0},
		{"subscribe a/+", func() { x.Subscribe("c2", packets.Subscription{Filter: "a/+"}) }, 2, 0},
		{"inline subscribe", func() {
			x.InlineSubscribe(InlineSubscription{Subscription: packets.Subscription{Filter: "a/b", Identifier: 1}})
		}, 2, 1},
		{"unsubscribe a/#", func() { x.Unsubscribe("a/#", "c1") }, 1, 1},
		{"inline unsubscribe", func() { x.InlineUnsubscribe(1, "a/b") }, 1, 0},
		{"unsubscribe a/+", func() { x.Unsubscribe("a/+", "c2") }, 0, 0},
	}
	for _, st := range steps {
		st.change()
		for i := 0; i < 2; i++ { // the second lookup is served from the cache
			if p, in := count(); p != st.plain || in != st.inline {
				t.Fatalf("after %s (lookup %d): %d subscribers and %d inline, want %d and %d", st.name, i+1, p, in, st.plain, st.inline)
			}
			if got, want := x.HasSubscribers("a/b"), st.plain+st.inline > 0; got != want {
				t.Fatalf("after %s (lookup %d): HasSubscribers %v, want %v", st.name, i+1, got, want)
			}
		}
	}
}

// TestSubscriberCacheSharedIsNotShared: a topic with shared subscriptions is computed per message,
// since publishToSubscribers selects one member of each group in the value it gets.
func TestSubscriberCacheSharedIsNotShared(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("c1", packets.Subscription{Filter: "$share/g/a/b"})
	a, sharedA := x.subscribersCached("a/b")
	b, _ := x.subscribersCached("a/b")
	if sharedA || a == b {
		t.Fatalf("a value with shared subscriptions was cached (shared=%v, same=%v)", sharedA, a == b)
	}
	if len(a.Shared) != 1 {
		t.Fatalf("%d shared groups, want 1", len(a.Shared))
	}
}

// TestSubscriberCacheIsBounded: past subscriberCacheMax topics, entries are evicted.
func TestSubscriberCacheIsBounded(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("c1", packets.Subscription{Filter: "#"})
	for i := 0; i < subscriberCacheMax+500; i++ {
		x.subscribersCached("t/" + strconv.Itoa(i))
	}
	if n := x.cache.size.Load(); n > subscriberCacheMax+1 {
		t.Fatalf("%d cached topics, bound %d", n, subscriberCacheMax)
	}
}

// TestSubscriberCacheUnderConcurrentChanges: publishes racing with subscribes never miss a
// subscription that was made before the lookup started (run with -race).
func TestSubscriberCacheUnderConcurrentChanges(t *testing.T) {
	x := NewTopicsIndex()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			x.subscribersCached("a/b")
		}
	}()
	for i := 0; i < 200; i++ {
		id := "c" + strconv.Itoa(i)
		x.Subscribe(id, packets.Subscription{Filter: "a/#"})
		subs, _ := x.subscribersCached("a/b")
		if _, ok := subs.Subscriptions[id]; !ok {
			t.Fatalf("subscriber %s made before the lookup is missing", id)
		}
	}
	<-done
}

// BenchmarkIdleClientFootprint: what one connected, idle MQTT client costs the server in mochi's
// own structures: goroutines and heap plus goroutine stacks, per client, after CONNECT/CONNACK over
// net.Pipe (no TLS: crypto/tls's buffers come on top in a real connection; BENCHMARKS.md itemises
// them). Patch 37 took the goroutines from 2 to 1 per client.
//
// conn=pipe is a plain net.Pipe; conn=idle-waiter wraps it in an IdleWaiter (patch 45), as ggbroker's
// TLS connections are: no read buffer is held while idle.
func BenchmarkIdleClientFootprint(b *testing.B) {
	b.Run("conn=pipe", func(b *testing.B) { benchIdleFootprint(b, func(c net.Conn) net.Conn { return c }) })
	b.Run("conn=idle-waiter", func(b *testing.B) { benchIdleFootprint(b, func(c net.Conn) net.Conn { return &peekConn{Conn: c} }) })
}

// peekConn is an IdleWaiter over any net.Conn: WaitIdle reads the next byte ahead, Read returns it first.
type peekConn struct {
	net.Conn
	b   [1]byte
	has bool
}

func (c *peekConn) WaitIdle() error {
	if c.has {
		return nil
	}
	n, err := c.Conn.Read(c.b[:])
	c.has = n == 1
	return err
}

func (c *peekConn) Read(p []byte) (int, error) {
	if c.has && len(p) > 0 {
		p[0], c.has = c.b[0], false
		return 1, nil
	}
	return c.Conn.Read(p)
}

func benchIdleFootprint(b *testing.B, wrap func(net.Conn) net.Conn) {
	const n = 1000
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Options.Capabilities.MaximumClientWritesPending = 1024 // ggbroker's limits.maxPendingWrites
	if err := s.AddHook(&allowAll{}, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { close(s.done) })
	connect := []byte{0x10, 0, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0}
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		peers := make([]net.Conn, n)
		for j := range peers {
			c, r := net.Pipe()
			peers[j] = r
			go func() { _ = s.EstablishConnection("t", wrap(c)) }()
			id := "idle-" + strconv.Itoa(j)
			pk := append(connect[:len(connect):len(connect)], byte(len(id)>>8), byte(len(id)))
			pk = append(pk, id...)
			pk[1] = byte(len(pk) - 2)
			if _, err := r.Write(pk); err != nil {
				b.Fatal(err)
			}
			ack := make([]byte, 4)
			if _, err := io.ReadFull(r, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
				b.Fatalf("CONNACK %x, %v", ack, err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		goroutines := runtime.NumGoroutine() - g0
		b.ReportMetric(float64(goroutines)/n, "goroutines/client")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-bytes/client")
		b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "bytes/client")
		for _, r := range peers {
			r.Close()
		}
		for j := 0; j < 200 && runtime.NumGoroutine() > g0; j++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestOutQueue (patch 42): a FIFO bounded by max that grows on demand, gives a large ring back once
// emptied, signals ready while it holds something and room on every pop.
func TestOutQueue(t *testing.T) {
	q := newOutQueue(100)
	if _, ok := q.pop(); ok || len(q.items) != 0 {
		t.Fatal("a new queue holds something")
	}
	pks := make([]packets.Packet, 101)
	for round := 0; round < 3; round++ { // wraps around and grows again after being given back
		for i := 0; i < 100; i++ {
			if !q.push(&pks[i]) {
				t.Fatalf("round %d: push %d refused below max", round, i)
			}
		}
		if q.push(&pks[100]) {
			t.Fatalf("round %d: push beyond max accepted", round)
		}
		select {
		case <-q.ready:
		default:
			t.Fatal("no ready token while the queue holds packets")
		}
		room := q.roomSignal()
		for i := 0; i < 100; i++ {
			pk, ok := q.pop()
			if !ok || pk != &pks[i] {
				t.Fatalf("round %d: pop %d: got %p, %v; want the packets in order", round, i, pk, ok)
			}
			if i == 0 {
				select {
				case <-room:
				default:
					t.Fatal("a pop did not signal room")
				}
			}
		}
		if q.len() != 0 || len(q.items) > outQueueKeep {
			t.Fatalf("round %d: emptied queue has %d packets and keeps a ring of %d", round, q.len(), len(q.items))
		}
	}
}
