package advisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// errDeviceClosed is what session.next returns once the device has closed the connection.
var errDeviceClosed = errors.New("the device closed the connection")

// session is one MQTT connection from the device, after a completed TLS handshake and a CONNECT.
type session struct {
	conn     *tls.Conn
	codec    *codec
	connect  *packets.Connect
	accepted time.Time // when the TCP connection arrived

	in     chan *packets.ControlPacket
	done   chan struct{}
	errMu  sync.Mutex
	err    error
	wmu    sync.Mutex
	nextID uint16
	closed time.Time
	acked  bool // a CONNACK was sent
}

func newSession(conn *tls.Conn, accepted time.Time) *session {
	return &session{conn: conn, codec: newCodec(conn), accepted: accepted, in: make(chan *packets.ControlPacket, 64), done: make(chan struct{})}
}

// readConnect reads the first packet, which must be a CONNECT, then starts the reader.
func (s *session) readConnect(deadline time.Time) error {
	_ = s.conn.SetReadDeadline(deadline)
	cp, err := s.codec.read()
	if err != nil {
		return fmt.Errorf("reading CONNECT: %w", err)
	}
	_ = s.conn.SetReadDeadline(time.Time{})
	c, ok := cp.Content.(*packets.Connect)
	if !ok {
		return fmt.Errorf("first packet is %s, not CONNECT", cp.PacketType())
	}
	s.connect = c
	go s.readLoop()
	return nil
}

func (s *session) readLoop() {
	defer close(s.done)
	for {
		cp, err := s.codec.read()
		if err != nil {
			s.errMu.Lock()
			s.err = err
			s.errMu.Unlock()
			return
		}
		select {
		case s.in <- cp:
		case <-time.After(time.Minute):
			return
		}
	}
}

// next returns the device's next packet, errDeviceClosed when it closed the connection, or the
// context's error.
func (s *session) next(ctx context.Context) (*packets.ControlPacket, error) {
	select {
	case cp := <-s.in:
		return cp, nil
	default:
	}
	select {
	case cp := <-s.in:
		return cp, nil
	case <-s.done:
		select {
		case cp := <-s.in:
			return cp, nil
		default:
		}
		return nil, errDeviceClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// version is the protocol level of the CONNECT: "MQTT 3.1.1" or "MQTT 5".
func (s *session) version() string {
	if s.codec.version == mqtt5 {
		return "MQTT 5"
	}
	return "MQTT 3.1.1"
}

func (s *session) send(cp *packets.ControlPacket) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.conn != nil {
		_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	return s.codec.write(cp)
}

func (s *session) connack(sessionPresent bool) error {
	cp := packets.NewControlPacket(packets.CONNACK)
	cp.Content.(*packets.Connack).SessionPresent = sessionPresent
	s.acked = true
	return s.send(cp)
}

func (s *session) puback(id uint16) error {
	cp := packets.NewControlPacket(packets.PUBACK)
	cp.Content.(*packets.Puback).PacketID = id
	return s.send(cp)
}

// suback grants every filter of the SUBSCRIBE at its QoS, at most 1 (AWS IoT has no QoS 2).
func (s *session) suback(sub *packets.Subscribe) error {
	cp := packets.NewControlPacket(packets.SUBACK)
	ack := cp.Content.(*packets.Suback)
	ack.PacketID = sub.PacketID
	for _, o := range sub.Subscriptions {
		ack.Reasons = append(ack.Reasons, min(o.QoS, 1))
	}
	return s.send(cp)
}

func (s *session) pingresp() error { return s.send(packets.NewControlPacket(packets.PINGRESP)) }

// publish sends a message to the device and returns its packet ID (0 for QoS 0).
func (s *session) publish(topic string, qos byte, payload []byte) (uint16, error) {
	cp := packets.NewControlPacket(packets.PUBLISH)
	p := cp.Content.(*packets.Publish)
	p.Topic, p.QoS, p.Payload = topic, qos, payload
	if qos > 0 {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		p.PacketID = s.nextID
	}
	return p.PacketID, s.send(cp)
}

// close drops the connection. An MQTT 5 device that got its CONNACK is sent a DISCONNECT first
// (MQTT 5 §3.14: not before the CONNACK); MQTT 3.1.1 has no server DISCONNECT.
func (s *session) close() {
	if s.codec.version == mqtt5 && s.acked {
		cp := packets.NewControlPacket(packets.DISCONNECT)
		cp.Content.(*packets.Disconnect).ReasonCode = 0x80 // unspecified error
		_ = s.send(cp)
	}
	s.conn.Close()
	s.closed = time.Now()
}

// answer replies to a packet as a normal broker does, except for the kinds block lists.
func (s *session) answer(cp *packets.ControlPacket, block blockSet) error {
	switch p := cp.Content.(type) {
	case *packets.Publish:
		if p.QoS > 0 && !block.puback {
			return s.puback(p.PacketID)
		}
	case *packets.Subscribe:
		if !block.suback {
			return s.suback(p)
		}
	case *packets.Pingreq:
		if !block.pingresp {
			return s.pingresp()
		}
	case *packets.Unsubscribe:
		ack := packets.NewControlPacket(packets.UNSUBACK)
		ack.Content.(*packets.Unsuback).PacketID = p.PacketID
		for range p.Topics {
			ack.Content.(*packets.Unsuback).Reasons = append(ack.Content.(*packets.Unsuback).Reasons, 0)
		}
		return s.send(ack)
	}
	return nil
}

// blockSet names the responses a case withholds.
type blockSet struct{ puback, suback, pingresp bool }

// acceptSession waits for the device to connect with a completed handshake (normal certificate) and a
// CONNECT. Handshakes that fail are noted and waited past: the device may be retrying.
func (tc *testCtx) acceptSession(ctx context.Context) (*session, error) {
	for {
		raw, err := tc.accept(ctx)
		if err != nil {
			return nil, err
		}
		at := time.Now()
		conn, err := tc.handshake(ctx, raw, tc.run.certs.normal, nil)
		if err != nil {
			tc.notef("TLS handshake from %s failed: %v", raw.RemoteAddr(), err)
			if classifyHandshake(err) == handshakeNotDevice {
				tc.lastRefusal = err.Error()
			}
			continue
		}
		s := newSession(conn, at)
		deadline, _ := ctx.Deadline()
		if err := s.readConnect(deadline); err != nil {
			conn.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			tc.notef("connection from %s: %v", raw.RemoteAddr(), err)
			continue
		}
		return s, nil
	}
}
