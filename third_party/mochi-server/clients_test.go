package mqtt

import (
	"bufio"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestTooLargePacketFlushesWhatWasQueued (patch 11): a message that was written while another was
// queued behind it is in the write buffer; when that last one exceeds the client's Maximum Packet
// Size, the buffered one must still go out.
func TestTooLargePacketFlushesWhatWasQueued(t *testing.T) {
	s := newTestServer(t)
	cl, conn := newTestClient(t, s, "c1")
	cl.Properties.Props.MaximumPacketSize = 100
	small := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "t/small", Payload: []byte("x")}
	big := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "t/big", Payload: make([]byte, 200)}
	cl.State.outbound.push(&small)
	cl.State.outbound.push(&big)
	go cl.WriteLoop()

	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	fh := new(packets.FixedHeader)
	b, err := r.ReadByte()
	if err != nil {
		t.Fatalf("the message before the too-large one was not sent: %v", err)
	}
	if err := fh.Decode(b); err != nil || fh.Type != packets.Publish {
		t.Fatalf("got packet type %d (%v), want PUBLISH", fh.Type, err)
	}
}

// TestTooLargePublishIsCompleted (patch 13): a QoS 1 message too large for the client is discarded
// "as if it had completed" [MQTT-3.1.2-25]: out of the inflight store, its send quota given back.
func TestTooLargePublishIsCompleted(t *testing.T) {
	s := newTestServer(t)
	cl, conn := newTestClient(t, s, "c1")
	go drain(conn)
	cl.Properties.Props.MaximumPacketSize = 100
	cl.State.Inflight.ResetSendQuota(10)
	big := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 3, TopicName: "t/big", Payload: make([]byte, 200)}
	cl.State.Inflight.Set(big)
	cl.State.Inflight.DecreaseSendQuota()
	if err := cl.WritePacket(big); err != packets.ErrPacketTooLarge {
		t.Fatalf("WritePacket: %v, want ErrPacketTooLarge", err)
	}
	if _, ok := cl.State.Inflight.Get(3); ok {
		t.Error("the discarded message is still inflight")
	}
	if q := cl.State.Inflight.sendQuota; q != 10 {
		t.Errorf("send quota %d, want 10", q)
	}
}

// TestResendWithinSendQuota (patch 20): resending a session's queue sends as many PUBLISHes as the
// send quota allows, oldest first, and leaves the rest waiting, in order.
func TestResendWithinSendQuota(t *testing.T) {
	s := newTestServer(t)
	cl := s.NewClient(nil, "t", "c1", false) // no connection: WritePacket writes nothing
	cl.State.Inflight.ResetSendQuota(2)
	for id := uint16(1); id <= 5; id++ {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, TopicName: "t"}
		if id == 5 {
			pk.Expiry = -1 // waiting for quota: never sent
		}
		cl.State.Inflight.Set(pk)
	}
	cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 9, Expiry: -1})
	if err := cl.ResendInflightMessages(true); err != nil {
		t.Fatal(err)
	}
	if q := cl.State.Inflight.sendQuota; q != 0 {
		t.Fatalf("send quota %d after resending, want 0", q)
	}
	var next []uint16
	for {
		m, ok := cl.State.Inflight.NextImmediate()
		if !ok {
			break
		}
		next = append(next, m.PacketID)
	}
	if fmt.Sprint(next) != "[3 4 5 9]" {
		t.Fatalf("waiting after the resend: %v, want [3 4 5 9]", next)
	}
}
