package bridge

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	p5 "github.com/eclipse/paho.golang/packets"
	p3 "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ggbroker/ggbroker/service"
)

// TestAppendPublishDecodesWithPaho: the hand-written PUBLISH is what paho's decoders read back, every
// property included, for MQTT 5 and 3.1.1, and with a payload long enough for a multi-byte length.
func TestAppendPublishDecodesWithPaho(t *testing.T) {
	full := &record{Topic: "a/b", Payload: []byte("hello"), ContentType: "text/plain", ResponseTopic: "r/t",
		CorrelationData: []byte{1, 2}, UserProperties: []service.UserProperty{{Key: "k", Value: "v"}, {Key: "k2", Value: ""}}}
	big := &record{Topic: "big", Payload: bytes.Repeat([]byte("x"), 70000)}
	for _, tc := range []struct {
		name   string
		r      *record
		retain bool
		expiry uint32
	}{{"properties", full, true, 30}, {"bare", &record{Topic: "t"}, false, 0}, {"large", big, false, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			raw := appendPublish(nil, mqtt5, 513, tc.r, tc.retain, tc.expiry)
			cp, err := p5.ReadPacket(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			p := cp.Content.(*p5.Publish)
			if p.Topic != tc.r.Topic || !bytes.Equal(p.Payload, tc.r.Payload) || p.QoS != 1 || p.Retain != tc.retain || p.PacketID != 513 {
				t.Fatalf("MQTT 5 publish: %+v", p)
			}
			pr := p.Properties
			if pr.ContentType != tc.r.ContentType || pr.ResponseTopic != tc.r.ResponseTopic || !bytes.Equal(pr.CorrelationData, tc.r.CorrelationData) ||
				len(pr.User) != len(tc.r.UserProperties) {
				t.Fatalf("MQTT 5 properties: %+v", pr)
			}
			for i, u := range tc.r.UserProperties {
				if pr.User[i].Key != u.Key || pr.User[i].Value != u.Value {
					t.Fatalf("user property %d: %+v", i, pr.User[i])
				}
			}
			if (tc.expiry == 0) != (pr.MessageExpiry == nil) || (pr.MessageExpiry != nil && *pr.MessageExpiry != tc.expiry) {
				t.Fatalf("message expiry %v, want %d", pr.MessageExpiry, tc.expiry)
			}

			raw = appendPublish(nil, mqtt311, 7, tc.r, tc.retain, tc.expiry)
			c3, err := p3.ReadPacket(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			q := c3.(*p3.PublishPacket)
			if q.TopicName != tc.r.Topic || !bytes.Equal(q.Payload, tc.r.Payload) || q.Qos != 1 || q.Retain != tc.retain || q.MessageID != 7 {
				t.Fatalf("MQTT 3.1.1 publish: %+v", q)
			}
		})
	}
}

// TestPacketReader: PUBACKs of every form decode to identifier and reason code; other packets come
// through paho, in order.
func TestPacketReader(t *testing.T) {
	var in bytes.Buffer
	_, _ = (&p5.Puback{PacketID: 1}).WriteTo(&in)                   // no reason code: 0x00
	_, _ = (&p5.Puback{PacketID: 2, ReasonCode: 0x97}).WriteTo(&in) // quota exceeded
	_, _ = (&p5.Puback{PacketID: 3, ReasonCode: 0x87, Properties: &p5.Properties{ReasonString: strings.Repeat("no ", 40)}}).WriteTo(&in)
	_, _ = (&p5.Publish{Topic: "down", Payload: []byte("p"), QoS: 1, PacketID: 9}).WriteTo(&in)
	_, _ = (&p5.Pingresp{}).WriteTo(&in)
	pr := &packetReader{r: bufio.NewReader(&in), version: mqtt5}
	want := []ack{{1, 0}, {2, 0x97}}
	for _, w := range want {
		a, _, err := pr.next()
		if err != nil || a == nil || *a != w {
			t.Fatalf("got %+v, %v; want %+v", a, err, w)
		}
	}
	// A PUBACK with a long reason string takes paho's path.
	if _, p, err := pr.next(); err != nil || p.(*p5.Puback).PacketID != 3 || p.(*p5.Puback).ReasonCode != 0x87 {
		t.Fatalf("long PUBACK: %+v, %v", p, err)
	}
	if _, p, err := pr.next(); err != nil || string(p.(*p5.Publish).Payload) != "p" {
		t.Fatalf("publish: %+v, %v", p, err)
	}
	if _, p, err := pr.next(); err != nil {
		t.Fatalf("pingresp: %T, %v", p, err)
	}
	if _, _, err := pr.next(); err == nil {
		t.Fatal("read past the end")
	}

	in.Reset()
	a3 := p3.NewControlPacket(p3.Puback).(*p3.PubackPacket)
	a3.MessageID = 300
	_ = a3.Write(&in)
	pr = &packetReader{r: bufio.NewReader(&in), version: mqtt311}
	if a, _, err := pr.next(); err != nil || a == nil || *a != (ack{300, 0}) {
		t.Fatalf("3.1.1 PUBACK: %+v, %v", a, err)
	}
}
