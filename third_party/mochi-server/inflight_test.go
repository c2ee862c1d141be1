package mqtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestInflightIDSpaces (patch 7): the acknowledgement of a client's message N and the server's
// outgoing message N live side by side; removing one leaves the other.
func TestInflightIDSpaces(t *testing.T) {
	i := NewInflights()
	out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 5, Payload: []byte("to the client")}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: 5}
	if !i.Set(out) || !i.Set(ack) {
		t.Fatal("Set: both are new")
	}
	if i.Len() != 2 {
		t.Fatalf("Len %d, want 2", i.Len())
	}
	if m, ok := i.Get(5); !ok || m.FixedHeader.Type != packets.Publish {
		t.Fatalf("Get(5) = %v %v, want the outgoing PUBLISH", m, ok)
	}
	if m, ok := i.GetInbound(5); !ok || m.FixedHeader.Type != packets.Pubrec {
		t.Fatalf("GetInbound(5) = %v %v, want the PUBREC", m, ok)
	}
	if !i.DeleteInbound(5) {
		t.Fatal("DeleteInbound(5): not found")
	}
	if _, ok := i.Get(5); !ok {
		t.Fatal("the outgoing message went with the client's acknowledgement")
	}
	if !i.Remove(out) || i.Len() != 0 {
		t.Fatalf("Remove: %d left", i.Len())
	}
}

// TestInflightOrder (patch 8): GetAll returns messages in the order their packet IDs were first set
// (a session's publish order), whatever their IDs and creation times; replacing a message (PUBLISH
// by its PUBREL, or a waiting message by the sent one) keeps its place, and a clone keeps the order.
func TestInflightOrder(t *testing.T) {
	i := NewInflights()
	ids := []uint16{65534, 65535, 1, 2, 9, 10, 3}
	for n, id := range ids {
		i.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, Created: int64(1000 - n%2)})
	}
	i.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 1})
	for _, in := range []*Inflight{i, i.Clone()} {
		var got []uint16
		for _, m := range in.GetAll(false) {
			got = append(got, m.PacketID)
		}
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("GetAll order %v, want %v", got, ids)
		}
	}
}

// TestHeldMessagesKeepTheirExpiry (patch 21): a message waiting for send quota keeps its expiry, is
// released in order, and expires like any other.
func TestHeldMessagesKeepTheirExpiry(t *testing.T) {
	s := newTestServer(t)
	cl := s.NewClient(nil, "t", "c1", false)
	now := time.Now().Unix()
	soon := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, Created: now, Expiry: now + 5}
	later := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2, Created: now, Expiry: now + 500}
	cl.State.Inflight.Hold(soon)
	cl.State.Inflight.Hold(later)
	if m, ok := cl.State.Inflight.NextImmediate(); !ok || m.PacketID != 1 || m.Expiry != now+5 {
		t.Fatalf("NextImmediate = %v %v, want message 1 with its expiry", m.PacketID, ok)
	}
	cl.State.Inflight.Hold(soon) // still waiting
	cl.ClearExpiredInflights(now+10, s.Options.Capabilities.MaximumMessageExpiryInterval)
	if _, ok := cl.State.Inflight.Get(1); ok {
		t.Error("a held message past its expiry is still there")
	}
	if m, ok := cl.State.Inflight.NextImmediate(); !ok || m.PacketID != 2 || m.Expiry != now+500 {
		t.Fatalf("NextImmediate = %v %v, want message 2 with its expiry", m.PacketID, ok)
	}
}
