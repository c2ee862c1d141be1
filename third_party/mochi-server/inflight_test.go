package mqtt

import (
	"testing"

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
