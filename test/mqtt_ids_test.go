package test

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
)

// TestClientPacketIDsAreTheirOwn (issue 17): the client and the server choose packet IDs
// independently. mochi kept both directions in one table, so a device's QoS 1 PUBLISH with ID N
// deleted the broker's unacknowledged message N to it (lost on reconnect), and a SUBSCRIBE with
// such an ID was answered 0x91 (not even a 3.1.1 code).
func TestClientPacketIDsAreTheirOwn(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	pub := h.dialRaw(4)
	pub.mustConnect("ids-pub", true)
	sub := h.dialRaw(4)
	sub.mustConnect("ids-sub", false)
	if ack := sub.subscribe(100, nil, subFilter{"ids/t", 1}, subFilter{"ids/marker", 0}); ack.body[2] != 1 {
		t.Fatalf("SUBACK %v", ack)
	}
	for _, m := range []string{"m1", "m2", "m3"} {
		pub.send(publishPacket(4, 1, false, "ids/t", 7, m))
		pub.expect(pPuback)
	}
	pub.send(publishPacket(4, 0, false, "ids/marker", 0, ""))
	got := sub.collectUntil("ids/marker")
	if len(got) != 4 {
		t.Fatalf("received %d messages, want 3 and the marker: %v", len(got)-1, got)
	}
	// Not acknowledged: the broker's IDs got[0..2].id are in flight. The device now uses the same
	// IDs for its own PUBLISH and SUBSCRIBE, as a device that restarted its counter does.
	sub.send(publishPacket(4, 1, false, "ids/own", got[0].id, "own"))
	if ack := sub.expect(pPuback); binary.BigEndian.Uint16(ack.body) != got[0].id {
		t.Fatalf("PUBACK %v, want ID %d", ack, got[0].id)
	}
	ack := sub.subscribe(got[1].id, nil, subFilter{"ids/u", 1})
	if binary.BigEndian.Uint16(ack.body) != got[1].id || ack.body[2] != 1 {
		t.Fatalf("SUBACK %v: want ID %d granted QoS 1", ack, got[1].id)
	}

	// Reconnect: every unacknowledged message comes again, marked DUP (their order is
	// TestQueuedMessagesKeepTheirOrder's).
	sub.c.Close()
	again := h.dialRaw(4)
	if ca := again.connect("ids-sub", false); ca.body[0] != 1 || ca.body[1] != 0 {
		t.Fatalf("CONNACK %v: want session present", ca)
	}
	// The broker resends before it reads the new connection's first packet: all of it is in before
	// the PINGRESP.
	var payloads []string
	for _, p := range again.ping() {
		m := parsePublish(t, 4, p)
		if !m.dup {
			t.Errorf("resent %q without DUP", m.payload)
		}
		payloads = append(payloads, m.payload)
	}
	slices.Sort(payloads)
	if !slices.Equal(payloads, []string{"m1", "m2", "m3"}) {
		t.Fatalf("resent %v, want [m1 m2 m3]", payloads)
	}
}

// TestQueuedMessagesKeepTheirOrder (issue 17): QoS 1 messages queued for an offline persistent
// session come in publish order when it reconnects ([MQTT-4.6.0-6]), after a restart too. mochi
// sorted them by their creation second cast to uint16 with an unstable sort (shuffled on every
// reconnect), and the persistence file hands them back by key (packet ID 10 before 9).
func TestQueuedMessagesKeepTheirOrder(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "reconnect", true: "restart"}[restart], func(t *testing.T) {
			h := startLocalBroker(t, allowAllPolicy)
			sub := h.dialRaw(4)
			sub.mustConnect("order-sub", false)
			sub.subscribe(1, nil, subFilter{"order/t", 1})
			sub.c.Close()
			pub := h.dialRaw(4)
			pub.mustConnect("order-pub", true)
			var want []string
			for i := range 40 {
				want = append(want, fmt.Sprint("m", i))
				pub.send(publishPacket(4, 1, false, "order/t", uint16(i+1), want[i]))
				pub.expect(pPuback)
			}
			// The PUBACK goes out before the message is queued for its subscribers; the broker reads
			// the publisher's next packet only once the last one is queued.
			pub.ping()
			if restart {
				h.stop()
				h = startWith(t, h.cfg)
			}
			again := h.dialRaw(4)
			if ca := again.connect("order-sub", false); ca.body[0] != 1 || ca.body[1] != 0 {
				t.Fatalf("CONNACK %v: want session present", ca)
			}
			var got []string
			for _, p := range again.ping() { // resent before the new connection's first packet is read
				got = append(got, parsePublish(t, 4, p).payload)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("resent\n%v\nwant\n%v", got, want)
			}
		})
	}
}

// TestLiveMessagesWaitForResends: messages published while a persistent session reconnects go out
// after the ones it had queued, not between them ([MQTT-4.6.0-6]). mochi started the connection's
// writer before it resent the queue, so a message published in that moment could overtake it.
func TestLiveMessagesWaitForResends(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	sub := h.dialRaw(4)
	sub.mustConnect("live-sub", false)
	sub.subscribe(1, nil, subFilter{"live/t", 1})
	sub.c.Close()
	pub := h.dialRaw(4)
	pub.mustConnect("live-pub", true)
	const queued, total = 300, 600
	pk := func(i int) []byte { return publishPacket(4, 0, false, "live/t", 0, fmt.Sprint(i)) }
	for i := range queued {
		pub.send(publishPacket(4, 1, false, "live/t", uint16(i+1), fmt.Sprint(i)))
		pub.expect(pPuback)
	}
	pub.ping()
	done := make(chan struct{})
	go func() { // not pub.send: no t.Fatal outside the test's goroutine
		defer close(done)
		for i := queued; i < total; i++ {
			if _, err := pub.c.Write(pk(i)); err != nil {
				return
			}
		}
	}()
	again := h.dialRaw(4)
	again.connect("live-sub", false)
	<-done
	// QoS 0 messages published before the new connection took the session over are not delivered;
	// this one, after its CONNACK, is.
	pub.send(publishPacket(4, 1, false, "live/t", 1, fmt.Sprint(total)))
	last, seen := -1, map[int]bool{}
	for !seen[total] {
		p := again.read()
		m := parsePublish(t, 4, p)
		if m.qos > 0 {
			again.send(pubackPacket(m.id))
		}
		var i int
		fmt.Sscan(m.payload, &i)
		if seen[i] {
			continue // a resend of what was delivered already: QoS 1 allows it
		}
		if i < last {
			t.Fatalf("message %d came after %d", i, last)
		}
		seen[i], last = true, i
	}
	for i := range queued {
		if !seen[i] {
			t.Fatalf("queued message %d not delivered", i)
		}
	}
}

// TestResendKeepsReceiveMaximum: a reconnecting MQTT 5 client with Receive Maximum 5 and 20 queued
// messages gets 5, then one more for each PUBACK, in order, each once ([MQTT-3.3.4-9]: no more than
// Receive Maximum unacknowledged QoS 1 PUBLISHes). mochi resent the whole queue at once (and the
// session it resumed lost the send quota), marked DUP even the messages never sent.
func TestResendKeepsReceiveMaximum(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	rm := propU16(0x21, 5)
	sub := h.dialRaw(5)
	sub.mustConnect("rm-sub", false, propU32(0x11, 600), rm)
	sub.subscribe(1, nil, subFilter{"rm/t", 1})
	sub.c.Close()
	pub := h.dialRaw(5)
	pub.mustConnect("rm-pub", true)
	for i := range 20 {
		pub.send(publishPacket(5, 1, false, "rm/t", uint16(i+1), fmt.Sprint(i)))
		pub.expect(pPuback)
	}
	pub.ping()

	again := h.dialRaw(5)
	if ca := again.connect("rm-sub", false, propU32(0x11, 600), rm); ca.body[0] != 1 {
		t.Fatalf("CONNACK %v: want session present", ca)
	}
	first := again.ping() // resent before the new connection's first packet is read
	if len(first) != 5 {
		t.Fatalf("%d messages before the first PUBACK, want Receive Maximum 5", len(first))
	}
	var got []string
	pending := first
	for len(got) < 20 {
		// A message the last PUBACK released is queued for the client's writer and may come just
		// after the PINGRESP, which the read loop writes itself: ask again before calling it a stall.
		for try := 0; len(pending) == 0 && try < 5; try++ {
			pending = again.ping()
		}
		if len(pending) == 0 {
			t.Fatalf("stalled after %v", got)
		}
		m := parsePublish(t, 5, pending[0])
		pending = pending[1:]
		got = append(got, m.payload)
		again.send(pubackPacket(m.id))
		pending = append(pending, again.ping()...) // what the PUBACK released, before the PINGRESP
	}
	want := make([]string, 20)
	for i := range want {
		want[i] = fmt.Sprint(i)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
