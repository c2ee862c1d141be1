package advisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/eclipse/paho.golang/packets"
	"github.com/ggbroker/ggbroker/internal/mqttwire"
)

// MQTT protocol levels in CONNECT.
const (
	mqtt311 = 4
	mqtt5   = 5
)

// maxPacketSize bounds what the endpoint reads from a device: AWS IoT's 128 KB message limit plus
// headers (aws-iot-core/limits-iot.md).
const maxPacketSize = 128*1024 + 1024

// codec reads and writes MQTT control packets on one connection with paho.golang's packets package,
// which speaks MQTT 5 only. For an MQTT 3.1.1 device it rewrites each packet body on the way in (an
// empty property length is inserted where MQTT 5 has properties) and on the way out (the empty
// property length that packets writes is removed), so one implementation of every test case serves
// both protocol levels.
type codec struct {
	r       *bufio.Reader
	w       io.Writer
	version byte // 0 until the CONNECT is read
}

func newCodec(rw io.ReadWriter) *codec {
	return &codec{r: bufio.NewReader(rw), w: rw}
}

// read returns the next packet. The first packet must be a CONNECT: its protocol level sets the
// version for the rest of the connection.
func (c *codec) read() (*packets.ControlPacket, error) {
	first, err := c.r.ReadByte()
	if err != nil {
		return nil, err
	}
	length, err := mqttwire.ReadVarint(c.r)
	if err != nil {
		return nil, err
	}
	if length > maxPacketSize {
		return nil, fmt.Errorf("packet of %d bytes is larger than %d", length, maxPacketSize)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return nil, err
	}
	typ := first >> 4
	if c.version == 0 {
		if typ != packets.CONNECT {
			return nil, fmt.Errorf("first packet is %s, not CONNECT", packetName(typ))
		}
		if v, err := connectVersion(body); err != nil {
			return nil, err
		} else if v != mqtt311 && v != mqtt5 {
			return nil, fmt.Errorf("CONNECT protocol level %d: only MQTT 3.1.1 (4) and 5 are supported", v)
		} else {
			c.version = v
		}
	}
	switch {
	case typ == packets.DISCONNECT && len(body) == 0:
		// MQTT 3.1.1, or MQTT 5 with reason code 0 and no properties: packets cannot unpack an empty body.
		cp := packets.NewControlPacket(packets.DISCONNECT)
		return cp, nil
	case typ == packets.PINGREQ || typ == packets.PINGRESP:
		return packets.NewControlPacket(typ), nil
	}
	if c.version == mqtt311 {
		if body, err = to5(typ, first, body); err != nil {
			return nil, fmt.Errorf("%s: %w", packetName(typ), err)
		}
	}
	var buf bytes.Buffer
	buf.WriteByte(first)
	buf.Write(mqttwire.AppendVarint(nil, len(body)))
	buf.Write(body)
	cp, err := packets.ReadPacket(&buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", packetName(typ), err)
	}
	return cp, nil
}

// write sends one packet in the connection's protocol level.
func (c *codec) write(cp *packets.ControlPacket) error {
	var buf bytes.Buffer
	if _, err := cp.WriteTo(&buf); err != nil {
		return err
	}
	if c.version != mqtt311 {
		_, err := c.w.Write(buf.Bytes())
		return err
	}
	raw := buf.Bytes()
	first := raw[0]
	body, err := splitHeader(raw)
	if err != nil {
		return err
	}
	body, err = to311(first>>4, first, body)
	if err != nil {
		return err
	}
	out := mqttwire.AppendVarint([]byte{first}, len(body))
	_, err = c.w.Write(append(out, body...))
	return err
}

// to5 inserts MQTT 5's empty property lengths into an MQTT 3.1.1 packet body.
func to5(typ, first byte, b []byte) ([]byte, error) {
	switch typ {
	case packets.CONNECT:
		if len(b) < 2 {
			return nil, errors.New("truncated")
		}
		at := 2 + (int(b[0])<<8 | int(b[1]))
		at += 4 // level, flags, keep alive
		if len(b) < at+2 {
			return nil, errors.New("truncated")
		}
		flags := b[at-3]
		b = insertZero(b, at)
		if flags&0x04 != 0 { // will flag: will properties come after the client ID
			idAt := at + 1
			if len(b) < idAt+2 {
				return nil, errors.New("truncated")
			}
			willAt := idAt + 2 + (int(b[idAt])<<8 | int(b[idAt+1]))
			if willAt > len(b) {
				return nil, errors.New("truncated")
			}
			b = insertZero(b, willAt)
		}
		return b, nil
	case packets.PUBLISH:
		if len(b) < 2 {
			return nil, errors.New("truncated")
		}
		at := 2 + (int(b[0])<<8 | int(b[1]))
		if (first>>1)&3 > 0 {
			at += 2
		}
		if len(b) < at {
			return nil, errors.New("truncated")
		}
		return insertZero(b, at), nil
	case packets.SUBSCRIBE, packets.UNSUBSCRIBE:
		if len(b) < 2 {
			return nil, errors.New("truncated")
		}
		return insertZero(b, 2), nil
	case packets.CONNACK:
		return append(b, 0), nil
	case packets.SUBACK, packets.UNSUBACK:
		if len(b) < 2 {
			return nil, errors.New("truncated")
		}
		return insertZero(b, 2), nil
	}
	return b, nil // PUBACK, PUBREC, PUBREL, PUBCOMP: two bytes read the same in both
}

// to311 removes the empty property lengths that packets writes for MQTT 5.
func to311(typ, first byte, b []byte) ([]byte, error) {
	switch typ {
	case packets.CONNACK:
		return b[:2], nil
	case packets.PUBACK, packets.PUBREC, packets.PUBREL, packets.PUBCOMP, packets.UNSUBACK:
		return b[:2], nil // MQTT 3.1.1's UNSUBACK has no reason codes
	case packets.SUBACK:
		return removeAt(b, 2), nil
	case packets.PUBLISH:
		at := 2 + (int(b[0])<<8 | int(b[1]))
		if (first>>1)&3 > 0 {
			at += 2
		}
		return removeAt(b, at), nil
	case packets.CONNECT:
		at := 2 + (int(b[0])<<8 | int(b[1])) + 4
		flags := b[at-3]
		b = removeAt(b, at)
		if flags&0x04 != 0 {
			b = removeAt(b, at+2+(int(b[at])<<8|int(b[at+1])))
		}
		return b, nil
	case packets.SUBSCRIBE, packets.UNSUBSCRIBE:
		return removeAt(b, 2), nil
	case packets.DISCONNECT:
		return nil, nil
	}
	return b, nil
}

func insertZero(b []byte, at int) []byte {
	out := make([]byte, 0, len(b)+1)
	out = append(out, b[:at]...)
	out = append(out, 0)
	return append(out, b[at:]...)
}

func removeAt(b []byte, at int) []byte {
	if at >= len(b) {
		return b
	}
	return append(b[:at:at], b[at+1:]...)
}

// connectVersion reads the protocol level from a CONNECT body.
func connectVersion(b []byte) (byte, error) {
	if len(b) < 2 {
		return 0, errors.New("CONNECT: truncated")
	}
	n := int(b[0])<<8 | int(b[1])
	if len(b) < 2+n+1 {
		return 0, errors.New("CONNECT: truncated")
	}
	if name := string(b[2 : 2+n]); name != "MQTT" {
		return 0, fmt.Errorf("CONNECT: protocol name %q is not MQTT (MQTT 3.1 is not supported)", name)
	}
	return b[2+n], nil
}

// splitHeader returns the body of an encoded packet.
func splitHeader(raw []byte) ([]byte, error) {
	r := bytes.NewReader(raw[1:])
	if _, err := mqttwire.ReadVarint(r); err != nil {
		return nil, err
	}
	return raw[len(raw)-r.Len():], nil
}

func packetName(typ byte) string {
	return (&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: typ}}).PacketType()
}
