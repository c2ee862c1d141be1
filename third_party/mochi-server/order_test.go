package mqtt

import (
	"bufio"
	"strconv"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestHeldMessagesKeepTheirOrder (patch 44): once a subscriber's send quota is spent, a message
// published just after a PUBACK gave a unit back does not overtake the messages held before it.
func TestHeldMessagesKeepTheirOrder(t *testing.T) {
	s := newTestServer(t)
	if err := s.AddHook(&allowAll{}, nil); err != nil {
		t.Fatal(err)
	}
	cl, conn := newTestClient(t, s, "sub")
	cl.State.Inflight.ResetSendQuota(2)
	cl.startWriter()
	got := make(chan packets.Packet, 20)
	go func() {
		r := bufio.NewReader(conn)
		for {
			b, err := r.ReadByte()
			if err != nil {
				return
			}
			fh := packets.FixedHeader{}
			if err := fh.Decode(b); err != nil {
				return
			}
			n, _, err := packets.DecodeLength(r)
			if err != nil {
				return
			}
			body := make([]byte, n)
			for off := 0; off < n; {
				k, err := r.Read(body[off:])
				if err != nil {
					return
				}
				off += k
			}
			fh.Remaining = n
			pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
			if err := pk.PublishDecode(body); err != nil {
				return
			}
			got <- pk
		}
	}()
	sub := packets.Subscription{Filter: "t", Qos: 1}
	publish := func(i int) {
		t.Helper()
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t", Payload: []byte(strconv.Itoa(i)), Created: 1}
		if _, err := s.publishToClient(cl, sub, pk); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	next := func() packets.Packet {
		t.Helper()
		select {
		case pk := <-got:
			return pk
		case <-time.After(5 * time.Second):
			t.Fatal("no message")
			return packets.Packet{}
		}
	}
	for i := 1; i <= 5; i++ { // 1 and 2 go out; 3, 4 and 5 are held
		publish(i)
	}
	want := 1
	expect := func() packets.Packet {
		t.Helper()
		pk := next()
		if string(pk.Payload) != strconv.Itoa(want) {
			t.Fatalf("message %s arrived where %d was due", pk.Payload, want)
		}
		want++
		return pk
	}
	first := expect()
	expect()
	// A PUBACK gives a unit back; before the read loop releases message 3, message 6 comes.
	if err := s.processPuback(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: first.PacketID}); err != nil {
		t.Fatal(err)
	}
	publish(6)
	for want <= 6 {
		pk := expect()
		if err := s.processPacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}); err != nil {
			t.Fatal(err)
		}
	}
}
