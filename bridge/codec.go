package bridge

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	p5 "github.com/eclipse/paho.golang/packets"
	p3 "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/ggbroker/ggbroker/internal/mqttwire"
)

// The two packets the pump's traffic is made of, PUBLISH out and PUBACK in, are encoded and decoded
// here without the paho codecs: those allocate a packet struct, a properties struct and a growing
// buffer for every packet (about 2 KiB per PUBACK read, 0.8 KiB per PUBLISH written), which made the
// bridge's upstream connection a fifth of its allocations. Every other packet still goes through
// paho.

// Packet types (MQTT 5 §2.1.2, the same in 3.1.1).
const (
	typePublish = 3
	typePuback  = 4
)

// MQTT 5 property identifiers of a PUBLISH (MQTT 5 §2.2.2.2).
const (
	propMessageExpiry   = 0x02
	propContentType     = 0x03
	propResponseTopic   = 0x08
	propCorrelationData = 0x09
	propUserProperty    = 0x26
)

// appendPublish appends a QoS 1 PUBLISH of r with packet identifier id to b: MQTT 5 with r's
// properties and expiry (the remaining message expiry, 0: none), or MQTT 3.1.1 (no properties).
func appendPublish(b []byte, version byte, id uint16, r *record, retain bool, expiry uint32) []byte {
	first := byte(typePublish<<4 | 1<<1) // QoS 1
	if retain {
		first |= 1
	}
	propLen := 0
	if version == mqtt5 {
		propLen = publishPropsLen(r, expiry)
	}
	n := 2 + len(r.Topic) + 2 + len(r.Payload)
	if version == mqtt5 {
		n += mqttwire.VarintLen(propLen) + propLen
	}
	b = append(b, first)
	b = mqttwire.AppendVarint(b, n)
	b = appendString(b, r.Topic)
	b = binary.BigEndian.AppendUint16(b, id)
	if version == mqtt5 {
		b = mqttwire.AppendVarint(b, propLen)
		if expiry > 0 {
			b = append(b, propMessageExpiry)
			b = binary.BigEndian.AppendUint32(b, expiry)
		}
		if r.ContentType != "" {
			b = append(b, propContentType)
			b = appendString(b, r.ContentType)
		}
		if r.ResponseTopic != "" {
			b = append(b, propResponseTopic)
			b = appendString(b, r.ResponseTopic)
		}
		if len(r.CorrelationData) > 0 {
			b = append(b, propCorrelationData)
			b = binary.BigEndian.AppendUint16(b, uint16(len(r.CorrelationData)))
			b = append(b, r.CorrelationData...)
		}
		for _, u := range r.UserProperties {
			b = append(b, propUserProperty)
			b = appendString(b, u.Key)
			b = appendString(b, u.Value)
		}
	}
	return append(b, r.Payload...)
}

// publishPropsLen is the length of the MQTT 5 properties appendPublish writes.
func publishPropsLen(r *record, expiry uint32) int {
	n := 0
	if expiry > 0 {
		n += 5
	}
	if r.ContentType != "" {
		n += 3 + len(r.ContentType)
	}
	if r.ResponseTopic != "" {
		n += 3 + len(r.ResponseTopic)
	}
	if len(r.CorrelationData) > 0 {
		n += 3 + len(r.CorrelationData)
	}
	for _, u := range r.UserProperties {
		n += 5 + len(u.Key) + len(u.Value)
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// packetReader reads the upstream's packets: PUBACKs into a reused buffer, decoded here; every other
// packet whole, into its own buffer (a PUBLISH's payload is handed on), then decoded by paho.
type packetReader struct {
	r       *bufio.Reader
	version byte
	small   [64]byte
}

// errMalformed is a packet the reader cannot frame.
var errMalformed = errors.New("malformed packet from the upstream")

// next reads one packet: a PUBACK is returned as ack (pkt nil), anything else as its paho packet.
func (pr *packetReader) next() (a *ack, pkt any, err error) {
	first, err := pr.r.ReadByte()
	if err != nil {
		return nil, nil, err
	}
	var buf [5]byte
	buf[0] = first
	hdr, n, err := mqttwire.AppendVarintFrom(buf[:1], pr.r)
	if errors.Is(err, mqttwire.ErrMalformedVarint) {
		return nil, nil, fmt.Errorf("%w: remaining length longer than 4 bytes", errMalformed)
	}
	if err != nil {
		return nil, nil, err
	}
	if first>>4 == typePuback && n >= 2 && n <= len(pr.small) {
		body := pr.small[:n]
		if _, err := io.ReadFull(pr.r, body); err != nil {
			return nil, nil, err
		}
		// MQTT 5: a reason code follows the identifier, absent means 0x00 (§3.4.2.1); properties
		// (a reason string) after it are not needed. MQTT 3.1.1 has only the identifier.
		a := ack{id: binary.BigEndian.Uint16(body)}
		if pr.version == mqtt5 && n >= 3 {
			a.code = body[2]
		}
		return &a, nil, nil
	}
	raw := make([]byte, len(hdr)+n)
	copy(raw, hdr)
	if _, err := io.ReadFull(pr.r, raw[len(hdr):]); err != nil {
		return nil, nil, err
	}
	if pr.version == mqtt5 {
		cp, err := p5.ReadPacket(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, err
		}
		return nil, cp.Content, nil
	}
	cp, err := p3.ReadPacket(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, err
	}
	return nil, cp, nil
}
