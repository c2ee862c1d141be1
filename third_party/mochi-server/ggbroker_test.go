package mqtt

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// dropCounter is a hook that counts OnQosDropped.
type dropCounter struct {
	HookBase
	dropped atomic.Int32
}

func (d *dropCounter) ID() string                           { return "drops" }
func (d *dropCounter) Provides(b byte) bool                 { return b == OnQosDropped }
func (d *dropCounter) OnQosDropped(*Client, packets.Packet) { d.dropped.Add(1) }

// TestTakeoverKeepsTheInheritedMessages (patch: inheritClientSession forgets the old connection's
// copy): a session taken over by a new connection keeps its queued messages, the hooks are not told
// they were dropped (a storage hook would delete them from disk) and the inflight count is unchanged.
func TestTakeoverKeepsTheInheritedMessages(t *testing.T) {
	s := newTestServer(t)
	d := &dropCounter{}
	if err := s.AddHook(d, nil); err != nil {
		t.Fatal(err)
	}
	old, conn := newTestClient(t, s, "c1")
	go drain(conn)
	for id := uint16(1); id <= 3; id++ {
		if old.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, TopicName: "t"}) {
			atomic.AddInt64(&s.Info.Inflight, 1)
		}
	}
	fresh := s.NewClient(nil, "t", "c1", false)
	fresh.Properties.ProtocolVersion = 5
	if present := s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{Clean: false}}, fresh); !present {
		t.Fatal("session not present")
	}
	if n := fresh.State.Inflight.Len(); n != 3 {
		t.Fatalf("%d messages inherited, want 3", n)
	}
	if n := d.dropped.Load(); n != 0 {
		t.Fatalf("the hooks were told %d inherited messages were dropped", n)
	}
	if n := atomic.LoadInt64(&s.Info.Inflight); n != 3 {
		t.Fatalf("inflight count %d after the takeover, want 3", n)
	}
}

// BenchmarkDeepTopic (patch 30): subscribing to and matching a 20,000-level topic costs what its
// length does, not its levels squared (seconds each before).
func BenchmarkDeepTopic(b *testing.B) {
	deep := strings.Repeat("x/", 20000) + "end"
	x := NewTopicsIndex()
	x.Subscribe("c1", packets.Subscription{Filter: deep})
	for i := 0; i < b.N; i++ {
		x.Subscribe("c2", packets.Subscription{Filter: deep})
		if subs := x.Subscribers(deep); len(subs.Subscriptions) != 2 {
			b.Fatalf("%d subscribers", len(subs.Subscriptions))
		}
	}
}

// stateReader is a hook that, asked about a delivery, reads the state it keeps on the client.
type stateReader struct {
	HookBase
	seen atomic.Value
}

func (h *stateReader) ID() string           { return "state-reader" }
func (h *stateReader) Provides(b byte) bool { return b == OnACLCheck }
func (h *stateReader) OnACLCheck(cl *Client, _ string, write bool) bool {
	if !write {
		h.seen.Store(cl.HookState.Load())
	}
	return true
}

// TestHookStateIsTheHooks (patch 52): a delivery check is asked with the subscriber's client, whose
// HookState holds what the hook put there; the server does not carry it to a new connection that
// inherits the session (the hook sets it for the new connection when that one is authenticated).
func TestHookStateIsTheHooks(t *testing.T) {
	s := newTestServer(t)
	h := &stateReader{}
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	sub, conn := newTestClient(t, s, "sub")
	go drain(conn)
	sub.HookState.Store("state of sub")
	s.Topics.Subscribe("sub", packets.Subscription{Filter: "a/b"})
	s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte("x")})
	if got := h.seen.Load(); got != "state of sub" {
		t.Fatalf("the delivery check saw HookState %v, want the subscriber's", got)
	}
	fresh := s.NewClient(nil, "t", "sub", false)
	fresh.Properties.ProtocolVersion = 5
	s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{Clean: false}}, fresh)
	if got := fresh.HookState.Load(); got != nil {
		t.Fatalf("a new connection inherited HookState %v", got)
	}
}

// TestHasSubscribersKeepsOneOffTopicsOutOfTheCache (patch 53): asked about topics whose first level
// no subscription has, HasSubscribers answers no without adding them to the subscriber cache; with
// a filter that could match, the answer is still right ($ topics are not matched by a top-level #).
func TestHasSubscribersKeepsOneOffTopicsOutOfTheCache(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("c1", packets.Subscription{Filter: "dt/+/temp"})
	for i := 0; i < 100; i++ {
		if x.HasSubscribers(fmt.Sprintf("$aws/events/presence/connected/device-%d", i)) {
			t.Fatal("a lifecycle topic has subscribers")
		}
	}
	if n := x.cache.size.Load(); n != 0 {
		t.Fatalf("%d one-off topics were cached", n)
	}
	if !x.HasSubscribers("dt/sensor-1/temp") || x.HasSubscribers("dt/sensor-1/hum") {
		t.Fatal("wrong answer for a topic under a subscribed first level")
	}
	x.Subscribe("c3", packets.Subscription{Filter: "$share/workers/jobs/#"})
	if !x.HasSubscribers("jobs/42") {
		t.Fatal("a shared subscription's topic has no subscribers")
	}
	x.Subscribe("c2", packets.Subscription{Filter: "#"})
	if x.HasSubscribers("$aws/events/presence/connected/device-1") {
		t.Fatal("a top-level # matched a $ topic [MQTT-4.7.1-2]")
	}
	if !x.HasSubscribers("anything/else") {
		t.Fatal("# does not match a plain topic")
	}
}
