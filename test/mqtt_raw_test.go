package test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/config"
)

// Raw MQTT for the conformance tests: packets written byte by byte over a real TCP connection to the
// local plain-TCP listener of the real broker, and read back the same way, so that a test sees
// exactly what goes over the wire (a client library would hide or "fix" much of it).

// MQTT control packet types, as in the first byte's high nibble.
const (
	pConnect     = 1
	pConnack     = 2
	pPublish     = 3
	pPuback      = 4
	pPubrec      = 5
	pPubrel      = 6
	pPubcomp     = 7
	pSubscribe   = 8
	pSuback      = 9
	pUnsubscribe = 10
	pUnsuback    = 11
	pPingreq     = 12
	pPingresp    = 13
	pDisconnect  = 14
)

// allowAllPolicy lets the local listener's identity do anything: the conformance tests are about the
// protocol, not the policy engine.
const allowAllPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}`

// startLocalBroker starts a broker whose local listener gives every client the identity "local-raw"
// with the policy doc; mutate, if given, adjusts the config further.
func startLocalBroker(t testing.TB, doc string, mutate ...func(*config.Config)) *harness {
	t.Helper()
	return startBroker(t, func(c *config.Config) {
		c.LocalListener = config.LocalListener{Enabled: true, Listen: "127.0.0.1:0", Anonymous: "local-raw", Policy: "local-raw"}
		dir := c.PolicyDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "local-raw.json"), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, m := range mutate {
			m(c)
		}
	})
}

// rawClient is one raw TCP connection to the local listener.
type rawClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
	v byte // protocol version: 4 (3.1.1) or 5
}

// dialRaw opens a connection to the local listener; nothing is sent yet.
func (h *harness) dialRaw(v byte) *rawClient {
	h.t.Helper()
	return dialRawTo(h.t, h.broker.LocalAddr().String(), v)
}

// dialRawTo opens a connection to addr for the test t (closed when t ends).
func dialRawTo(t testing.TB, addr string, v byte) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, r: bufio.NewReader(c), v: v}
}

// rawPacket is one packet read off the wire.
type rawPacket struct {
	typ, flags byte
	body       []byte
}

func (p rawPacket) String() string {
	return fmt.Sprintf("type %d flags %x body % x", p.typ, p.flags, p.body)
}

// send writes packets in one write.
func (c *rawClient) send(pks ...[]byte) {
	c.t.Helper()
	if _, err := c.c.Write(bytes.Join(pks, nil)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read reads the next packet, failing the test after waitFor.
func (c *rawClient) read() rawPacket {
	c.t.Helper()
	p, err := c.readWithin(waitFor)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// readWithin reads the next packet or returns the read error (io.EOF when the broker closed).
func (c *rawClient) readWithin(d time.Duration) (rawPacket, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	first, err := c.r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, err := binary.ReadUvarint(c.r) // MQTT's Variable Byte Integer is a little-endian base-128 varint
	if err != nil {
		return rawPacket{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return rawPacket{}, err
	}
	return rawPacket{typ: first >> 4, flags: first & 0x0f, body: body}, nil
}

// expect reads the next packet and fails unless it is of type typ.
func (c *rawClient) expect(typ byte) rawPacket {
	c.t.Helper()
	p := c.read()
	if p.typ != typ {
		c.t.Fatalf("got %v, want packet type %d", p, typ)
	}
	return p
}

// expectClosed reads until the broker closes the connection and returns the packets it sent first.
func (c *rawClient) expectClosed() []rawPacket {
	c.t.Helper()
	var got []rawPacket
	for {
		p, err := c.readWithin(waitFor)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("connection not closed; received %v", got)
			}
			return got
		}
		got = append(got, p)
	}
}

// connect sends CONNECT and returns the CONNACK.
func (c *rawClient) connect(clientID string, clean bool, props ...[]byte) rawPacket {
	c.t.Helper()
	c.send(connectPacket(c.v, clientID, clean, 0, props...))
	return c.expect(pConnack)
}

// mustConnect connects and fails unless the CONNACK accepts.
func (c *rawClient) mustConnect(clientID string, clean bool, props ...[]byte) rawPacket {
	c.t.Helper()
	ack := c.connect(clientID, clean, props...)
	if len(ack.body) < 2 || ack.body[1] != 0 {
		c.t.Fatalf("CONNACK %v", ack)
	}
	return ack
}

// ping sends PINGREQ and reads up to its PINGRESP, returning what came before it.
func (c *rawClient) ping() []rawPacket {
	c.t.Helper()
	c.send([]byte{pPingreq << 4, 0})
	var got []rawPacket
	for {
		p := c.read()
		if p.typ == pPingresp {
			return got
		}
		got = append(got, p)
	}
}

// subscribe sends SUBSCRIBE and returns its SUBACK (publishes that arrive first are skipped).
func (c *rawClient) subscribe(id uint16, props []byte, filters ...subFilter) rawPacket {
	c.t.Helper()
	c.send(subscribePacket(c.v, id, props, filters...))
	for {
		p := c.read()
		if p.typ == pSuback {
			return p
		}
		if p.typ != pPublish {
			c.t.Fatalf("got %v waiting for SUBACK", p)
		}
	}
}

// subFilter is one filter of a SUBSCRIBE with its options byte.
type subFilter struct {
	filter string
	opts   byte
}

// packet builds a packet from its first byte and its body.
func packet(first byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	out := []byte{first}
	out = binary.AppendUvarint(out, uint64(len(b)))
	return append(out, b...)
}

func str(s string) []byte { return binary.BigEndian.AppendUint16(nil, uint16(len(s))) }

// mqttString is a UTF-8 string with its two-byte length.
func mqttString(s string) []byte { return append(str(s), s...) }

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// props is an MQTT 5 property list with its length.
func props(ps ...[]byte) []byte {
	b := bytes.Join(ps, nil)
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

func propByte(id, v byte) []byte          { return []byte{id, v} }
func propU16(id byte, v uint16) []byte    { return append([]byte{id}, u16(v)...) }
func propU32(id byte, v uint32) []byte    { return binary.BigEndian.AppendUint32([]byte{id}, v) }
func propVarint(id byte, v uint64) []byte { return binary.AppendUvarint([]byte{id}, v) }
func propUser(k, v string) []byte {
	return append(append([]byte{0x26}, mqttString(k)...), mqttString(v)...)
}

// connectPacket is a CONNECT without will, username or password.
func connectPacket(v byte, clientID string, clean bool, keepAlive uint16, ps ...[]byte) []byte {
	flags := byte(0)
	if clean {
		flags |= 0x02
	}
	body := [][]byte{mqttString("MQTT"), {v, flags}, u16(keepAlive)}
	if v == 5 {
		body = append(body, props(ps...))
	}
	body = append(body, mqttString(clientID))
	return packet(pConnect<<4, body...)
}

// publishPacket is a PUBLISH; ps are its properties (MQTT 5 only).
func publishPacket(v, qos byte, retain bool, topic string, id uint16, payload string, ps ...[]byte) []byte {
	first := byte(pPublish<<4) | qos<<1
	if retain {
		first |= 1
	}
	body := [][]byte{mqttString(topic)}
	if qos > 0 {
		body = append(body, u16(id))
	}
	if v == 5 {
		body = append(body, props(ps...))
	}
	body = append(body, []byte(payload))
	return packet(first, body...)
}

// subscribePacket is a SUBSCRIBE; ps is its property list (MQTT 5 only, nil for none).
func subscribePacket(v byte, id uint16, ps []byte, filters ...subFilter) []byte {
	body := [][]byte{u16(id)}
	if v == 5 {
		if ps == nil {
			ps = props()
		}
		body = append(body, ps)
	}
	for _, f := range filters {
		body = append(body, mqttString(f.filter), []byte{f.opts})
	}
	return packet(pSubscribe<<4|0x02, body...)
}

// pubackPacket acknowledges a QoS 1 PUBLISH.
func pubackPacket(id uint16) []byte { return packet(pPuback<<4, u16(id)) }

// rawPublish is a PUBLISH as read.
type rawPublish struct {
	qos     byte
	dup     bool
	retain  bool
	topic   string
	id      uint16
	props   []rawProp
	payload string
}

// rawProp is one MQTT 5 property: its identifier and its encoded value.
type rawProp struct {
	id  byte
	val []byte
}

// prop returns the first property with this identifier.
func (p rawPublish) prop(id byte) (rawProp, bool) { return findProp(p.props, id) }

func findProp(ps []rawProp, id byte) (rawProp, bool) {
	for _, p := range ps {
		if p.id == id {
			return p, true
		}
	}
	return rawProp{}, false
}

// parsePublish decodes a PUBLISH of protocol version v.
func parsePublish(t testing.TB, v byte, p rawPacket) rawPublish {
	t.Helper()
	if p.typ != pPublish {
		t.Fatalf("got %v, want PUBLISH", p)
	}
	out := rawPublish{qos: p.flags >> 1 & 3, dup: p.flags&8 != 0, retain: p.flags&1 != 0}
	b := p.body
	n := int(binary.BigEndian.Uint16(b))
	out.topic, b = string(b[2:2+n]), b[2+n:]
	if out.qos > 0 {
		out.id, b = binary.BigEndian.Uint16(b), b[2:]
	}
	if v == 5 {
		var err error
		out.props, b, err = parseProps(b)
		if err != nil {
			t.Fatalf("PUBLISH properties: %v (%v)", err, p)
		}
	}
	out.payload = string(b)
	return out
}

// parseProps decodes a property list with its length and returns the rest of b.
func parseProps(b []byte) ([]rawProp, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || int(n) > len(b)-k {
		return nil, nil, errors.New("bad property length")
	}
	list, rest := b[k:k+int(n)], b[k+int(n):]
	var out []rawProp
	for len(list) > 0 {
		id := list[0]
		list = list[1:]
		var size int
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2a:
			size = 1
		case 0x13, 0x21, 0x22, 0x23:
			size = 2
		case 0x02, 0x11, 0x18, 0x27:
			size = 4
		case 0x0b:
			_, size = binary.Uvarint(list)
		case 0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1a, 0x1c, 0x1f:
			if len(list) < 2 {
				return nil, nil, errors.New("short property")
			}
			size = 2 + int(binary.BigEndian.Uint16(list))
		case 0x26:
			if len(list) < 2 {
				return nil, nil, errors.New("short property")
			}
			k := 2 + int(binary.BigEndian.Uint16(list))
			if len(list) < k+2 {
				return nil, nil, errors.New("short property")
			}
			size = k + 2 + int(binary.BigEndian.Uint16(list[k:]))
		default:
			return nil, nil, fmt.Errorf("unknown property %#x", id)
		}
		if size <= 0 || size > len(list) {
			return nil, nil, fmt.Errorf("short property %#x", id)
		}
		out = append(out, rawProp{id: id, val: list[:size]})
		list = list[size:]
	}
	return out, rest, nil
}

// connackProps returns an MQTT 5 CONNACK's properties.
func connackProps(t testing.TB, p rawPacket) []rawProp {
	t.Helper()
	ps, _, err := parseProps(p.body[2:])
	if err != nil {
		t.Fatalf("CONNACK properties: %v (%v)", err, p)
	}
	return ps
}

// collectUntil reads PUBLISHes, acknowledging none, up to and including the first on topic
// marker (another client publishes it after what the test sent: the broker delivers one publisher's
// messages in order, so once the marker is here, anything sent before it would be too). No sleeps.
func (c *rawClient) collectUntil(marker string) []rawPublish {
	c.t.Helper()
	var out []rawPublish
	for {
		p := c.read()
		if p.typ != pPublish {
			c.t.Fatalf("got %v waiting for PUBLISH %s", p, marker)
		}
		pub := parsePublish(c.t, c.v, p)
		out = append(out, pub)
		if pub.topic == marker {
			return out
		}
	}
}
