package bridge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	p5 "github.com/eclipse/paho.golang/packets"
	p3 "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ggbroker/ggbroker/internal/mqttwire"
	"github.com/ggbroker/ggbroker/service"
)

// The MQTT protocol levels the bridge speaks upstream: MQTT 5, and 3.1.1 when the upstream refuses 5.
const (
	mqtt5   byte = 5
	mqtt311 byte = 4
)

// sessionExpiry asks the upstream to keep the bridge's session (subscriptions, queued messages) as long
// as it will; the upstream caps it (AWS IoT Core: 1 hour by default, up to 7 days) and says so in the
// CONNACK.
const sessionExpiry = 0xFFFFFFFF

// session is one live MQTT connection to the upstream. The bridge's pump writes PUBLISHes in spool
// order and waits for their PUBACKs on acks; the reader goroutine answers incoming PUBLISHes after
// onMessage has delivered them. It is written for exactly this job, on the codecs of paho.golang (MQTT 5)
// and paho.mqtt.golang (3.1.1), so that publishes can be pipelined in order and every refusal is seen
// with its reason (see README.md, "Upstream client").
type session struct {
	conn      net.Conn
	version   byte
	keepAlive time.Duration
	// receiveMax is how many QoS 1 PUBLISHes the upstream takes unacknowledged (MQTT 5 CONNACK).
	receiveMax     int
	retainOK       bool
	maxPacket      uint32 // the upstream's Maximum Packet Size (MQTT 5 CONNACK), 0: none said
	sessionPresent bool
	expiry         uint32 // session expiry the upstream granted (MQTT 5)

	wmu    sync.Mutex
	w      *bufio.Writer
	pubBuf []byte // publish's encoding buffer (wmu held)

	idmu   sync.Mutex
	nextID uint16
	// foreign are the packet identifiers of publishes sent outside the pump (the shared upstream's),
	// whose PUBACKs go to the sender instead of the pump.
	foreign map[uint16]chan byte

	// submu makes SUBSCRIBE and UNSUBSCRIBE one at a time, so that each answer reaches its request.
	submu sync.Mutex

	acks      chan ack
	subacks   chan []byte
	unsubacks chan struct{}
	onMessage func(inbound) error

	closeOnce sync.Once
	done      chan struct{}
	readDone  chan struct{} // closed when the reader goroutine has returned
	err       error
}

// ack is a PUBACK: packet ID and reason code (0 for MQTT 3.1.1).
type ack struct {
	id   uint16
	code byte
}

// inbound is a message the upstream delivered.
type inbound struct {
	service.Message
}

// refusal is a CONNACK that refused the connection.
type refusal struct {
	clientID string
	version  byte
	code     byte
	reason   string
}

func (r *refusal) Error() string {
	return fmt.Sprintf("upstream refused the connection: CONNACK %s code 0x%02x (%s)", versionName(r.version), r.code, r.reason)
}

// notAuthorized says whether a refusal is about the core device's identity: bad user name or password
// (how brokers answer an unknown certificate) or not authorized.
func (r *refusal) notAuthorized() bool {
	if r.version == mqtt5 {
		return r.code == 0x86 || r.code == 0x87
	}
	return r.code == 4 || r.code == 5
}

// protocolRefused says whether a refusal means "speak another MQTT version".
func (r *refusal) protocolRefused() bool {
	return (r.version == mqtt5 && r.code == 0x84) || r.code == 0x01
}

func versionName(v byte) string {
	if v == mqtt5 {
		return "MQTT 5"
	}
	return "MQTT 3.1.1"
}

// errNoConnack is the upstream closing the connection after CONNECT without answering it: what AWS IoT
// Core does when a policy denies iot:Connect, and what some MQTT 3.1.1-only brokers do with MQTT 5.
var errNoConnack = errors.New("upstream closed the connection without a CONNACK")

// dialSession connects to the upstream over mutual TLS and sends CONNECT with clean start false.
func dialSession(ctx context.Context, up *upstreamConfig, version byte, keepAlive time.Duration, onMessage func(inbound) error) (*session, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", up.Address)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, up.TLS)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	s := &session{
		conn: conn, version: version, keepAlive: keepAlive, receiveMax: 65535, retainOK: true,
		w: bufio.NewWriterSize(conn, 32<<10), acks: make(chan ack, 1024), subacks: make(chan []byte, 1), unsubacks: make(chan struct{}, 1),
		onMessage: onMessage, done: make(chan struct{}), readDone: make(chan struct{}),
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := s.connect(up.ClientID); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	go s.read()
	go s.ping()
	return s, nil
}

// connect writes CONNECT and reads the CONNACK.
func (s *session) connect(clientID string) error {
	ka := uint16(s.keepAlive / time.Second)
	if s.version == mqtt5 {
		expiry, recvMax := uint32(sessionExpiry), uint16(100)
		c := &p5.Connect{
			ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: clientID, KeepAlive: ka, CleanStart: false,
			Properties: &p5.Properties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax},
		}
		if _, err := c.WriteTo(s.w); err != nil {
			return err
		}
	} else {
		c := p3.NewControlPacket(p3.Connect).(*p3.ConnectPacket)
		c.ProtocolName, c.ProtocolVersion, c.ClientIdentifier, c.Keepalive, c.CleanSession = "MQTT", 4, clientID, ka, false
		if err := c.Write(s.w); err != nil {
			return err
		}
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	// The CONNACK is read raw first: a 3.1.1 server answers an MQTT 5 CONNECT with a 3.1.1 CONNACK
	// (return code 1, no properties), which an MQTT 5 decoder would call malformed.
	raw, body, err := readRawPacket(s.conn)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errNoConnack
		}
		return err
	}
	if raw[0]>>4 != 2 {
		return fmt.Errorf("upstream answered CONNECT with packet type %d, not CONNACK", raw[0]>>4)
	}
	if len(body) < 2 {
		return errors.New("upstream sent a malformed CONNACK")
	}
	s.sessionPresent = body[0]&1 != 0
	code := body[1]
	if s.version == mqtt5 && len(body) > 2 {
		cp, err := p5.ReadPacket(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("upstream CONNACK: %w", err)
		}
		ca := cp.Content.(*p5.Connack)
		if code != 0 {
			reason := ca.Reason()
			if ca.Properties != nil && ca.Properties.ReasonString != "" {
				reason += " " + ca.Properties.ReasonString
			}
			return &refusal{clientID: clientID, version: s.version, code: code, reason: reason}
		}
		if p := ca.Properties; p != nil {
			if p.ReceiveMaximum != nil {
				s.receiveMax = int(*p.ReceiveMaximum)
			}
			if p.MaximumPacketSize != nil {
				s.maxPacket = *p.MaximumPacketSize
			}
			if p.RetainAvailable != nil {
				s.retainOK = *p.RetainAvailable == 1
			}
			if p.SessionExpiryInterval != nil {
				s.expiry = *p.SessionExpiryInterval
			} else {
				s.expiry = sessionExpiry
			}
			if p.ServerKeepAlive != nil && *p.ServerKeepAlive > 0 {
				s.keepAlive = time.Duration(*p.ServerKeepAlive) * time.Second
			}
		}
		return nil
	}
	if code != 0 {
		return &refusal{clientID: clientID, version: s.version, code: code, reason: connackReason(s.version, code)}
	}
	return nil
}

// connackReason names CONNACK codes that come without a reason string.
func connackReason(version, code byte) string {
	if version == mqtt5 || code >= 0x80 {
		return (&p5.Connack{ReasonCode: code}).Reason()
	}
	switch code {
	case 1:
		return "unacceptable protocol version"
	case 2:
		return "identifier rejected"
	case 3:
		return "server unavailable"
	case 4:
		return "bad user name or password"
	case 5:
		return "not authorized"
	}
	return "unknown return code"
}

// readRawPacket reads one whole MQTT packet from r, byte by byte up to its body: raw is the packet as
// sent (fixed header included), body its variable header and payload.
func readRawPacket(r io.Reader) (raw, body []byte, err error) {
	br := mqttwire.ByteReader(r)
	first, err := br.ReadByte()
	if err != nil {
		return nil, nil, err
	}
	hdr, n, err := mqttwire.AppendVarintFrom(append(make([]byte, 0, 5), first), br)
	if err != nil {
		return nil, nil, err
	}
	if n > 1<<20 {
		return nil, nil, fmt.Errorf("CONNACK of %d bytes", n)
	}
	raw = append(hdr, make([]byte, n)...)
	if _, err := io.ReadFull(r, raw[len(hdr):]); err != nil {
		return nil, nil, err
	}
	return raw, raw[len(hdr):], nil
}

// close ends the session with err (the reason its disconnect is logged with); the first call wins.
func (s *session) close(err error) {
	s.closeOnce.Do(func() {
		s.err = err
		if err == nil || errors.Is(err, context.Canceled) {
			// A clean stop: tell the upstream, so it does not wait for the keep alive.
			s.wmu.Lock()
			_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
			if s.version == mqtt5 {
				_, _ = (&p5.Disconnect{ReasonCode: 0}).WriteTo(s.w)
			} else {
				_ = p3.NewControlPacket(p3.Disconnect).Write(s.w)
			}
			_ = s.w.Flush()
			s.wmu.Unlock()
		}
		close(s.done)
		s.conn.Close()
	})
}

// cause is why the session ended, once the reader has stopped delivering messages.
func (s *session) cause() error {
	<-s.done
	<-s.readDone
	return s.err
}

// id allocates a packet identifier (1..65535). The pump never has more than receiveMax (≤ 65535) in
// flight, so a wrapped identifier is free again.
func (s *session) id() uint16 {
	s.idmu.Lock()
	defer s.idmu.Unlock()
	return s.nextFreeID()
}

// nextFreeID is the next identifier not held by a foreign publish (idmu held).
func (s *session) nextFreeID() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, taken := s.foreign[s.nextID]; !taken {
			return s.nextID
		}
	}
}

// foreignID allocates an identifier for a publish outside the pump; its PUBACK's reason code goes to ch.
func (s *session) foreignID(ch chan byte) uint16 {
	s.idmu.Lock()
	defer s.idmu.Unlock()
	id := s.nextFreeID()
	if s.foreign == nil {
		s.foreign = map[uint16]chan byte{}
	}
	s.foreign[id] = ch
	return id
}

func (s *session) releaseForeign(id uint16) {
	s.idmu.Lock()
	defer s.idmu.Unlock()
	delete(s.foreign, id)
}

// write sends packets under the write lock and flushes once.
func (s *session) write(fn func(w io.Writer) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := fn(s.w); err != nil {
		return err
	}
	return s.w.Flush()
}

// publish writes one QoS 1 PUBLISH into w (inside write, which holds wmu: pubBuf is reused).
// expiry is the remaining message expiry.
func (s *session) publish(w io.Writer, id uint16, r *record, expiry uint32) error {
	s.pubBuf = appendPublish(s.pubBuf[:0], s.version, id, r, r.Retain && s.retainOK, expiry)
	_, err := w.Write(s.pubBuf)
	return err
}

// fits says whether r's PUBLISH stays within the upstream's Maximum Packet Size, estimated from
// above (a few bytes of headers and property identifiers more than it takes).
func (s *session) fits(r *record) bool {
	if s.maxPacket == 0 {
		return true
	}
	n := 16 + len(r.Topic) + len(r.Payload) + len(r.ContentType) + len(r.ResponseTopic) + len(r.CorrelationData) + 16
	for _, u := range r.UserProperties {
		n += 5 + len(u.Key) + len(u.Value)
	}
	return n <= int(s.maxPacket)
}

// subscription is one upstream SUBSCRIBE entry.
type subscription struct {
	Filter            string
	RetainAsPublished bool
}

// maxFiltersPerSubscribe is AWS IoT Core's limit on topic filters in one SUBSCRIBE
// (aws-iot-core quotas: "Maximum number of subscriptions per subscribe request: 8").
const maxFiltersPerSubscribe = 8

// subscribe subscribes to the filters at QoS 1, eight per SUBSCRIBE. MQTT 5 sets noLocal, so what the
// bridge publishes upstream does not come back down through an overlapping IotCore mapping. It returns
// the filters the upstream refused, with their codes.
func (s *session) subscribe(ctx context.Context, subs []subscription) (map[string]byte, error) {
	s.submu.Lock()
	defer s.submu.Unlock()
	refused := map[string]byte{}
	for len(subs) > 0 {
		n := min(len(subs), maxFiltersPerSubscribe)
		chunk := subs[:n]
		subs = subs[n:]
		id := s.id()
		err := s.write(func(w io.Writer) error {
			if s.version == mqtt5 {
				p := &p5.Subscribe{PacketID: id}
				for _, sub := range chunk {
					p.Subscriptions = append(p.Subscriptions, p5.SubOptions{Topic: sub.Filter, QoS: 1, NoLocal: true, RetainAsPublished: sub.RetainAsPublished})
				}
				_, err := p.WriteTo(w)
				return err
			}
			p := p3.NewControlPacket(p3.Subscribe).(*p3.SubscribePacket)
			p.MessageID = id
			for _, sub := range chunk {
				p.Topics = append(p.Topics, sub.Filter)
				p.Qoss = append(p.Qoss, 1)
			}
			return p.Write(w)
		})
		if err != nil {
			return nil, err
		}
		select {
		case codes := <-s.subacks:
			for i, c := range codes {
				if c >= 0x80 && i < len(chunk) {
					refused[chunk[i].Filter] = c
				}
			}
		case <-s.done:
			return nil, s.err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(30 * time.Second):
			return nil, errors.New("no SUBACK from the upstream within 30s")
		}
	}
	return refused, nil
}

// unsubscribe removes filters from the upstream session, eight per UNSUBSCRIBE.
func (s *session) unsubscribe(ctx context.Context, filters []string) error {
	s.submu.Lock()
	defer s.submu.Unlock()
	for len(filters) > 0 {
		n := min(len(filters), maxFiltersPerSubscribe)
		chunk := filters[:n]
		filters = filters[n:]
		id := s.id()
		err := s.write(func(w io.Writer) error {
			if s.version == mqtt5 {
				_, err := (&p5.Unsubscribe{PacketID: id, Topics: chunk}).WriteTo(w)
				return err
			}
			p := p3.NewControlPacket(p3.Unsubscribe).(*p3.UnsubscribePacket)
			p.MessageID, p.Topics = id, chunk
			return p.Write(w)
		})
		if err != nil {
			return err
		}
		select {
		case <-s.unsubacks:
		case <-s.done:
			return s.err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return errors.New("no UNSUBACK from the upstream within 30s")
		}
	}
	return nil
}

// read is the session's reader goroutine.
func (s *session) read() {
	defer close(s.readDone)
	pr := &packetReader{r: bufio.NewReaderSize(s.conn, 32<<10), version: s.version}
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(s.keepAlive * 3 / 2))
		a, pkt, err := pr.next()
		if err == nil {
			switch {
			case a != nil:
				s.deliverAck(*a)
			case s.version == mqtt5:
				err = s.read5(pkt)
			default:
				err = s.read3(pkt)
			}
		}
		if err != nil {
			s.close(err)
			return
		}
	}
}

func (s *session) read5(cp any) error {
	switch p := cp.(type) {
	case *p5.Puback:
		s.deliverAck(ack{id: p.PacketID, code: p.ReasonCode})
	case *p5.Suback:
		s.deliverSuback(p.Reasons)
	case *p5.Unsuback:
		s.deliverUnsuback()
	case *p5.Pingresp:
	case *p5.Disconnect:
		reason := p.Reason()
		if p.Properties != nil && p.Properties.ReasonString != "" {
			reason += " " + p.Properties.ReasonString
		}
		return fmt.Errorf("upstream sent DISCONNECT 0x%02x (%s)", p.ReasonCode, reason)
	case *p5.Publish:
		m := service.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
		if pr := p.Properties; pr != nil {
			m.ContentType, m.ResponseTopic, m.CorrelationData = pr.ContentType, pr.ResponseTopic, pr.CorrelationData
			if pr.MessageExpiry != nil {
				m.MessageExpiry = *pr.MessageExpiry
			}
			for _, u := range pr.User {
				m.UserProperties = append(m.UserProperties, service.UserProperty{Key: u.Key, Value: u.Value})
			}
		}
		if err := s.onMessage(inbound{m}); err != nil {
			return nil // not acknowledged: the upstream sends it again in the next session
		}
		if p.QoS == 1 {
			return s.write(func(w io.Writer) error {
				_, err := (&p5.Puback{PacketID: p.PacketID}).WriteTo(w)
				return err
			})
		}
	}
	return nil
}

func (s *session) deliverAck(a ack) {
	s.idmu.Lock()
	ch, foreign := s.foreign[a.id]
	s.idmu.Unlock()
	if foreign {
		select {
		case ch <- a.code:
		default:
		}
		return
	}
	select {
	case s.acks <- a:
	case <-s.done:
	}
}

func (s *session) deliverSuback(codes []byte) {
	select {
	case s.subacks <- codes:
	case <-s.done:
	}
}

func (s *session) deliverUnsuback() {
	select {
	case s.unsubacks <- struct{}{}:
	case <-s.done:
	}
}

func (s *session) read3(cp any) error {
	switch p := cp.(type) {
	case *p3.PubackPacket:
		s.deliverAck(ack{id: p.MessageID})
	case *p3.SubackPacket:
		s.deliverSuback(p.ReturnCodes)
	case *p3.UnsubackPacket:
		s.deliverUnsuback()
	case *p3.PingrespPacket:
	case *p3.PublishPacket:
		m := service.Message{Topic: p.TopicName, Payload: p.Payload, QoS: p.Qos, Retain: p.Retain}
		if err := s.onMessage(inbound{m}); err != nil {
			return nil
		}
		if p.Qos == 1 {
			return s.write(func(w io.Writer) error {
				a := p3.NewControlPacket(p3.Puback).(*p3.PubackPacket)
				a.MessageID = p.MessageID
				return a.Write(w)
			})
		}
	}
	return nil
}

// ping sends PINGREQ at half the keep alive; the reader's deadline (1.5 keep alives) notices silence.
func (s *session) ping() {
	t := time.NewTicker(s.keepAlive / 2)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			err := s.write(func(w io.Writer) error {
				if s.version == mqtt5 {
					_, err := (&p5.Pingreq{}).WriteTo(w)
					return err
				}
				return p3.NewControlPacket(p3.Pingreq).Write(w)
			})
			if err != nil {
				s.close(err)
				return
			}
		}
	}
}
