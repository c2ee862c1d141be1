package test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// MQTT conformance, checked with raw packets over real TCP against the real broker (issue 18
// "MQTT conformance", issue 17, issue 10). Each test names the defect it reproduced before the fix in
// the mochi copy (third_party/mochi-server/PATCHES.md).

// TestSubscribeWindowChecksReceive (issue 10): mochi makes each filter of a SUBSCRIBE live before it
// asks about the next and before OnSubscribed. The broker used to tell a filter check from a delivery
// check by whether the topic equalled a filter of the SUBSCRIBE in progress, so a message on such a
// topic published in that window was delivered on the iot:Subscribe verdict, without its iot:Receive
// check. Here the policy allows subscribing to secret/t but not receiving from it; a publisher floods
// secret/t while a long SUBSCRIBE (secret/t first) is processed: nothing on secret/t may arrive.
func TestSubscribeWindowChecksReceive(t *testing.T) {
	const doc = `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":["iot:Connect","iot:Publish","iot:Subscribe"],"Resource":"*"},
		{"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:*:*:topic/ok/*"}]}`
	h := startLocalBroker(t, doc)
	pub := h.dialRaw(4)
	pub.mustConnect("window-pub", true)
	sub := h.dialRaw(4)
	sub.mustConnect("window-sub", true)

	filters := []subFilter{{"secret/t", 0}}
	for i := range 900 { // the greengrass profile allows 1000 subscriptions per session
		filters = append(filters, subFilter{fmt.Sprintf("ok/f/%d", i), 0})
	}
	filters = append(filters, subFilter{"ok/marker", 0})

	flood := make([][]byte, 400)
	for i := range flood {
		flood[i] = publishPacket(4, 0, false, "secret/t", 0, "leak")
	}
	for round := range 5 {
		// The flood and the SUBSCRIBE go out at once, on two connections.
		var wg sync.WaitGroup
		wg.Go(func() { // not pub.send: no t.Fatal outside the test's goroutine
			for i := 0; i < len(flood); i += 20 {
				if _, err := pub.c.Write(bytes.Join(flood[i:i+20], nil)); err != nil {
					return
				}
			}
		})
		sub.send(subscribePacket(4, uint16(round+1), nil, filters...))
		for {
			p := sub.read()
			if p.typ == pSuback {
				break
			}
			if m := parsePublish(t, 4, p); m.topic == "secret/t" {
				t.Fatalf("round %d: a message on secret/t was delivered without iot:Receive", round)
			}
		}
		wg.Wait()
	}
	pub.send(publishPacket(4, 0, false, "ok/marker", 0, "end"))
	for _, m := range sub.collectUntil("ok/marker") {
		if m.topic == "secret/t" {
			t.Fatal("a message on secret/t was delivered without iot:Receive")
		}
	}
	h.record(t, "not authorized", map[string]string{"clientId": "window-sub", "action": "iot:Receive"})
}

// TestPublishAckIsPlain (issue 18 #1, mochi #474): the PUBACK of a QoS 1 PUBLISH with User Properties
// had reason code 0x01 (not a PUBACK code, [MQTT-3.4.2-1]) and echoed the properties, which crashed
// paho-mqtt 1.6's network loop. PUBREC (QoS 2) likewise.
func TestPublishAckIsPlain(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	c := h.dialRaw(5)
	c.mustConnect("ack-plain", true)
	for _, tc := range []struct {
		qos byte
		ack byte
	}{{1, pPuback}, {2, pPubrec}} {
		c.send(publishPacket(5, tc.qos, false, "ack/t", 9, "x", propUser("k", "v"), propByte(0x01, 1)))
		ack := c.expect(tc.ack)
		if binary.BigEndian.Uint16(ack.body) != 9 {
			t.Fatalf("QoS %d: ack %v for another ID", tc.qos, ack)
		}
		if len(ack.body) > 2 && ack.body[2] != 0x00 {
			t.Errorf("QoS %d: reason code %#x, want 0x00", tc.qos, ack.body[2])
		}
		if len(ack.body) > 3 {
			if ps, _, err := parseProps(ack.body[3:]); err != nil || len(ps) > 0 {
				t.Errorf("QoS %d: acknowledgement carries properties %v (%v)", tc.qos, ps, err)
			}
		}
		if tc.qos == 2 {
			c.send(packet(pPubrel<<4|0x02, u16(9)))
			c.expect(pPubcomp)
		}
	}
}

// TestNoExpiryUnlessPublisherSetOne (issue 18 #2): a message without Message Expiry Interval was
// forwarded with one of 86400 (mochi's MaximumMessageExpiryInterval; retained messages and queues
// were deleted after it too, see the copy's TestOnlyMessagesWithAnExpiryExpire). MQTT 5 section
// 3.3.2.3.3: absent, the message does not expire; present, it is forwarded with what is left of it.
func TestNoExpiryUnlessPublisherSetOne(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	v3 := h.dialRaw(4)
	v3.mustConnect("exp-v3", true)
	v3.send(publishPacket(4, 1, true, "exp/retained", 1, "r"))
	v3.expect(pPuback)
	sub := h.dialRaw(5)
	sub.mustConnect("exp-sub", true)
	sub.subscribe(1, nil, subFilter{"exp/#", 1})
	pub := h.dialRaw(5)
	pub.mustConnect("exp-pub", true)
	pub.send(publishPacket(5, 1, false, "exp/none", 1, "n"))
	pub.expect(pPuback)
	pub.send(publishPacket(5, 1, false, "exp/some", 2, "s", propU32(0x02, 100)))
	pub.expect(pPuback)
	pub.send(publishPacket(5, 0, false, "exp/marker", 0, ""))
	for _, m := range sub.collectUntil("exp/marker") {
		p, has := m.prop(0x02)
		switch m.topic {
		case "exp/some":
			if v := binary.BigEndian.Uint32(p.val); !has || v == 0 || v > 100 {
				t.Errorf("exp/some forwarded with expiry %v (%v), want 1..100", v, has)
			}
		default:
			if has {
				t.Errorf("%s forwarded with Message Expiry Interval %d; its publisher set none", m.topic, binary.BigEndian.Uint32(p.val))
			}
		}
	}
}

// TestTooLargeMessageDoesNotHoldBackOthers (issue 18 #3): when a message exceeded the subscriber's
// Maximum Packet Size, the messages queued before it stayed in the write buffer until the next
// packet to that client, never with keep-alive 0. (The copy's TestTooLargePacketFlushesWhatWasQueued
// pins the case down; here the real listener, where it depends on the writer being behind.)
func TestTooLargeMessageDoesNotHoldBackOthers(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	for round := range 5 {
		sub := h.dialRaw(5)
		sub.mustConnect(fmt.Sprint("big-sub-", round), true, propU32(0x27, 200))
		sub.subscribe(1, nil, subFilter{"big/#", 0})
		pub := h.dialRaw(5)
		pub.mustConnect(fmt.Sprint("big-pub-", round), true)
		var burst [][]byte
		for i := range 30 {
			burst = append(burst, publishPacket(5, 0, false, "big/small", 0, fmt.Sprint(i)))
		}
		pub.send(append(burst, publishPacket(5, 0, false, "big/large", 0, strings.Repeat("x", 500)))...)
		for i := range 30 {
			p, err := sub.readWithin(2 * time.Second)
			if err != nil {
				t.Fatalf("round %d: small message %d of 30 not delivered: %v", round, i, err)
			}
			if m := parsePublish(t, 5, p); m.topic != "big/small" {
				t.Fatalf("round %d: got %s, want big/small (the large one exceeds the subscriber's maximum)", round, m.topic)
			}
		}
	}
}

// TestTopicAliases (issue 18 #4): CONNACK never advertised Topic Alias Maximum (so a client may use
// none, MQTT 5 section 3.2.2.3.8), yet aliases were accepted; and a PUBLISH with an empty topic and
// an alias never set was acknowledged and dropped instead of being a Protocol Error (DISCONNECT 0x82).
func TestTopicAliases(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	sub := h.dialRaw(5)
	sub.mustConnect("alias-sub", true)
	sub.subscribe(1, nil, subFilter{"alias/#", 0})
	c := h.dialRaw(5)
	ack := c.mustConnect("alias-pub", true)
	p, ok := findProp(connackProps(t, ack), 0x22)
	if !ok || binary.BigEndian.Uint16(p.val) == 0 {
		t.Fatalf("CONNACK %v advertises no Topic Alias Maximum", ack)
	}
	// An alias set, then used: delivered on its topic.
	c.send(publishPacket(5, 0, false, "alias/t", 0, "set", propU16(0x23, 1)),
		publishPacket(5, 0, false, "", 0, "used", propU16(0x23, 1)))
	for _, want := range []string{"set", "used"} {
		if m := parsePublish(t, 5, sub.read()); m.topic != "alias/t" || m.payload != want {
			t.Fatalf("got %s %q, want alias/t %q", m.topic, m.payload, want)
		}
	}
	// Alias 2 was never set.
	c.send(publishPacket(5, 1, false, "", 5, "lost", propU16(0x23, 2)))
	got := c.expectClosed()
	if len(got) != 1 || got[0].typ != pDisconnect || got[0].body[0] != 0x82 {
		t.Fatalf("got %v, want DISCONNECT 0x82 and the connection closed", got)
	}
}

// TestUserPropertiesAreForwarded (issue 18 #5): a PUBLISH's User Properties were stripped when the
// subscriber set Request Problem Information 0 ([MQTT-3.1.2-29] exempts PUBLISH), and when they made
// the packet exceed the subscriber's Maximum Packet Size: then the message must be discarded whole
// and treated as delivered ([MQTT-3.1.2-25]), not sent without them.
func TestUserPropertiesAreForwarded(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	quiet := h.dialRaw(5)
	quiet.mustConnect("up-quiet", true, propByte(0x17, 0))
	quiet.subscribe(1, nil, subFilter{"up/#", 1})
	small := h.dialRaw(5)
	small.mustConnect("up-small", false, propU32(0x11, 600), propU32(0x27, 60))
	small.subscribe(1, nil, subFilter{"up/#", 1})
	pub := h.dialRaw(5)
	pub.mustConnect("up-pub", true)
	pub.send(publishPacket(5, 1, false, "up/t", 1, "x", propUser("trace", strings.Repeat("t", 40))))
	pub.expect(pPuback)
	pub.send(publishPacket(5, 1, false, "up/marker", 2, ""))
	pub.expect(pPuback)

	got := quiet.collectUntil("up/marker")
	if p, ok := got[0].prop(0x26); got[0].topic != "up/t" || !ok || !strings.Contains(string(p.val), "trace") {
		t.Errorf("Request Problem Information 0: got %v, want up/t with its User Property", got[0])
	}
	got = small.collectUntil("up/marker")
	if len(got) != 1 {
		t.Fatalf("Maximum Packet Size 60: got %v, want the too-large message discarded, not stripped", got)
	}
	small.send(pubackPacket(got[0].id))
	// Discarded counts as delivered: nothing is resent on reconnect.
	small.c.Close()
	again := h.dialRaw(5)
	if ca := again.connect("up-small", false, propU32(0x11, 600), propU32(0x27, 60)); ca.body[0] != 1 {
		t.Fatalf("CONNACK %v: want session present", ca)
	}
	if resent := again.ping(); len(resent) != 0 {
		t.Fatalf("resent %v after reconnect, want nothing", resent)
	}
}

// TestDisconnectWithWillReasonOnly (issue 18 #6): a DISCONNECT of Remaining Length 1 carrying reason
// 0x04 (Disconnect with Will Message), as libmosquitto sends it, was read as 0x00 and the will lost.
func TestDisconnectWithWillReasonOnly(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	sub := h.dialRaw(5)
	sub.mustConnect("will-sub", true)
	sub.subscribe(1, nil, subFilter{"will/#", 0})
	c := h.dialRaw(5)
	c.send(packet(pConnect<<4, mqttString("MQTT"), []byte{5, 0x02 | 0x04}, u16(0), props(), mqttString("will-dev"),
		props(), mqttString("will/gone"), mqttString("bye")))
	if ack := c.expect(pConnack); ack.body[1] != 0 {
		t.Fatalf("CONNACK %v", ack)
	}
	c.send([]byte{pDisconnect << 4, 1, 0x04})
	if m := parsePublish(t, 5, sub.read()); m.topic != "will/gone" || m.payload != "bye" {
		t.Fatalf("got %v, want the will", m)
	}
}

// TestRetainedCarrySubscriptionIdentifier (issue 18 #7): retained messages sent on subscribe lacked
// the SUBSCRIBE's Subscription Identifier ([MQTT-3.3.4-3]); live messages had it.
func TestRetainedCarrySubscriptionIdentifier(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	pub := h.dialRaw(5)
	pub.mustConnect("sid-pub", true)
	pub.send(publishPacket(5, 1, true, "sid/r", 1, "kept"))
	pub.expect(pPuback)
	sub := h.dialRaw(5)
	sub.mustConnect("sid-sub", true)
	sub.subscribe(1, props(propVarint(0x0b, 42)), subFilter{"sid/#", 0})
	pub.send(publishPacket(5, 0, false, "sid/live", 0, "now"))
	for _, m := range sub.collectUntil("sid/live") {
		p, ok := m.prop(0x0b)
		if id, _ := binary.Uvarint(p.val); !ok || id != 42 {
			t.Errorf("%s (retained %v) carries Subscription Identifier %v (%v), want 42", m.topic, m.retain, id, ok)
		}
	}
}

// TestSubscribeProtocolErrors (issue 18 #8): Subscription Identifier 0 was granted and No Local on a
// shared subscription answered SUBACK 0x82 (not a SUBACK code): both are Protocol Errors (MQTT 5
// section 3.8.2.1.2, [MQTT-3.8.3-4]): DISCONNECT 0x82. $share//t and $share/g/ have no ShareName or
// no filter [MQTT-4.8.2-1] [MQTT-4.8.2-2]: SUBACK 0x8F (Topic Filter invalid), like any bad filter.
func TestSubscribeProtocolErrors(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	for name, pk := range map[string][]byte{
		"identifier 0":       subscribePacket(5, 1, props(propVarint(0x0b, 0)), subFilter{"se/t", 1}),
		"two identifiers":    subscribePacket(5, 1, props(propVarint(0x0b, 1), propVarint(0x0b, 2)), subFilter{"se/t", 1}),
		"no local on $share": subscribePacket(5, 1, nil, subFilter{"$share/g/se/t", 0x04 | 1}),
		"no local, 2nd of 2": subscribePacket(5, 1, nil, subFilter{"se/t", 1}, subFilter{"$share/g/se/#", 0x04}),
	} {
		c := h.dialRaw(5)
		c.mustConnect("se-"+strings.ReplaceAll(name, " ", "-"), true)
		c.send(pk)
		got := c.expectClosed()
		if name == "two identifiers" && len(got) == 0 {
			continue // refused as the packet is decoded: closed without DISCONNECT, which MQTT 5 allows (4.13.1)
		}
		if len(got) != 1 || got[0].typ != pDisconnect || got[0].body[0] != 0x82 {
			t.Errorf("%s: got %v, want DISCONNECT 0x82 and the connection closed", name, got)
		}
	}
	c := h.dialRaw(5)
	c.mustConnect("se-filters", true)
	ack := c.subscribe(2, nil, subFilter{"$share//se/t", 1}, subFilter{"$share/g/", 1}, subFilter{"$share/g/se/t", 1})
	if want := []byte{0x8f, 0x8f, 0x01}; string(ack.body[3:]) != string(want) {
		t.Errorf("SUBACK codes % x, want % x", ack.body[3:], want)
	}
}

// TestSharedWildcardSkipsDollarTopics (issue 17, low): $share/g/# matched $ topics; a filter with a
// top-level wildcard must not, shared or not ([MQTT-4.7.2-1]).
func TestSharedWildcardSkipsDollarTopics(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	sub := h.dialRaw(5)
	sub.mustConnect("dollar-sub", true)
	sub.subscribe(1, nil, subFilter{"$share/g/#", 0}, subFilter{"$share/g/+/x", 0})
	pub := h.dialRaw(5)
	pub.mustConnect("dollar-pub", true)
	pub.send(publishPacket(5, 0, false, "$app/x", 0, "dollar"), publishPacket(5, 0, false, "plain/marker", 0, ""))
	for _, m := range sub.collectUntil("plain/marker") {
		if m.topic == "$app/x" {
			t.Fatal("$share/g/# (or $share/g/+/x) matched $app/x")
		}
	}
}

// TestMQTT311GetsMQTT311 (issue 17, low): MQTT 5 codes and packets went to 3.1.1 clients: CONNACK
// 0x80 for an empty client ID with clean session 0 (3.1.1: 0x02, [MQTT-3.1.3-8]), SUBACK 0x91 for a
// packet ID in use (3.1.1 has 0x00-0x02 and 0x80), DISCONNECT at shutdown (3.1.1: the server closes
// the connection; DISCONNECT is the client's packet).
func TestMQTT311GetsMQTT311(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	c := h.dialRaw(4)
	if ack := c.connect("", false); len(ack.body) != 2 || ack.body[1] != 0x02 {
		t.Errorf("empty client ID, clean session 0: CONNACK %v, want return code 0x02", ack)
	}

	c = h.dialRaw(4)
	c.mustConnect("v3-ids", true)
	c.send(publishPacket(4, 2, false, "v3/t", 7, "q2")) // its PUBREC keeps ID 7 in use until PUBREL
	c.expect(pPubrec)
	if ack := c.subscribe(7, nil, subFilter{"v3/t", 1}); ack.body[2] != 0x01 {
		t.Errorf("SUBSCRIBE with the ID of the client's own QoS 2 flow: SUBACK %v, want 0x01", ack)
	}

	h.stop()
	if got := c.expectClosed(); len(got) != 0 {
		t.Errorf("at shutdown a 3.1.1 client got %v, want the connection closed", got)
	}
}

// TestDuplicatePropertyIsProtocolError (issue 17, low): a CONNECT with Session Expiry Interval twice
// was accepted (the last one won); it is a Protocol Error (MQTT 5 section 3.1.2.11.2): no session.
func TestDuplicatePropertyIsProtocolError(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	c := h.dialRaw(5)
	c.send(connectPacket(5, "dup-props", true, 0, propU32(0x11, 10), propU32(0x11, 0)))
	for _, p := range c.expectClosed() {
		if p.typ == pConnack && p.body[1] < 0x80 {
			t.Fatalf("CONNACK %v: the CONNECT was accepted", p)
		}
	}
}

// TestQueuedMessagesKeepTheirExpiry (issue 18 #2, the other half): a message queued beyond the
// subscriber's send quota (Receive Maximum, or an offline session's backlog) lost its expiry: mochi
// marked such messages with expiry -1, so they never expired and went out with the interval as
// published, not what was left of it. The copy's TestHeldMessagesKeepTheirExpiry checks that they
// expire; here, what they carry.
func TestQueuedMessagesKeepTheirExpiry(t *testing.T) {
	h := startLocalBroker(t, allowAllPolicy)
	rm := propU16(0x21, 2)
	sub := h.dialRaw(5)
	sub.mustConnect("qexp-sub", false, propU32(0x11, 600), rm)
	sub.subscribe(1, nil, subFilter{"qexp/t", 1})
	sub.c.Close()
	pub := h.dialRaw(5)
	pub.mustConnect("qexp-pub", true)
	for i := range 6 {
		pub.send(publishPacket(5, 1, false, "qexp/t", uint16(i+1), fmt.Sprint(i), propU32(0x02, 100)))
		pub.expect(pPuback)
	}
	pub.ping()
	// Message Expiry Interval counts in whole seconds: after two, every copy must say less than 100.
	time.Sleep(2100 * time.Millisecond)
	again := h.dialRaw(5)
	again.connect("qexp-sub", false, propU32(0x11, 600), rm)
	pending := again.ping()
	for n := 0; n < 6; n++ {
		if len(pending) == 0 {
			t.Fatalf("stalled after %d messages", n)
		}
		m := parsePublish(t, 5, pending[0])
		pending = pending[1:]
		p, ok := m.prop(0x02)
		if v := binary.BigEndian.Uint32(p.val); !ok || v == 0 || v > 98 {
			t.Errorf("message %s: Message Expiry Interval %d (%v) two seconds on, want 1..98", m.payload, v, ok)
		}
		again.send(pubackPacket(m.id))
		pending = append(pending, again.ping()...)
	}
}
