package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
)

// hook translates mochi's callbacks into calls on auth (who is this?) and the Authorizer (may they?).
// It knows nothing of certificates or policies itself.
type hook struct {
	mqtt.HookBase
	server *mqtt.Server
	authn  *auth.Authenticator
	authz  Authorizer
	events Events
	log    *zap.Logger

	// sessions maps client ID -> *sessionEntry for every live MQTT session, connected or not: messages
	// for an offline persistent session are authorised against the identity it last connected with.
	sessions sync.Map
	// conns maps *mqtt.Client -> *Session for connections, so that a connection that was taken over by
	// a newer one with the same client ID is still logged with its own identity.
	conns sync.Map
}

// sessionEntry is the session of one client ID and the connection that owns it.
type sessionEntry struct {
	client  *mqtt.Client
	session *Session

	// subscribing is set while a SUBSCRIBE is processed: mochi calls OnACLCheck(read) both for each
	// filter of a SUBSCRIBE and for each delivered message, so the filters' Subscribe verdicts are kept
	// here between OnSubscribe and OnSubscribed to tell the two apart.
	subscribing atomic.Bool
	mu          sync.Mutex
	pending     map[string]Verdict
}

func (h *hook) ID() string { return "ggbroker-auth" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnPublish, mqtt.OnClientExpired, mqtt.OnWill,
	}, []byte{b})
}

// OnConnect authenticates the client by its TLS certificate and client ID, then asks the Authorizer for
// iot:Connect. A refusal gets its CONNACK here: returning an error from OnConnect makes mochi close the
// connection without one.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	ip, port := splitAddr(remoteAddr(cl))
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return h.refuse(cl, nil, ip, port, &auth.Refusal{Reason: auth.ReasonNoCertificate, Details: "connection is not TLS", BadCredentials: true})
	}
	id, err := h.authn.Authenticate(tc.ConnectionState().PeerCertificates, cl.ID)
	if err != nil {
		var r *auth.Refusal
		if !errors.As(err, &r) {
			r = &auth.Refusal{Reason: "AUTH_ERROR", Details: err.Error()}
		}
		return h.refuse(cl, nil, ip, port, r)
	}
	addr, _ := netip.ParseAddr(ip)
	s := &Session{
		Identity:        id,
		SourceIP:        addr.Unmap(),
		SourcePort:      port,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		CleanStart:      pk.Connect.Clean,
	}
	if pk.Connect.WillFlag {
		s.WillTopic, s.WillRetain = pk.Connect.WillTopic, pk.Connect.WillRetain
	}
	if v := h.authz.Connect(s); !v.Allowed {
		return h.refuse(cl, s, ip, port, &auth.Refusal{Reason: "AUTHORIZATION_FAILURE", Details: v.Reason}, v)
	}
	// The certificate ID goes where mochi's storage hooks persist it (the session's username: ggbroker
	// authenticates by certificate, never by username), so a session restored after a restart can be
	// given its identity back; see restore.
	cl.Properties.Username = []byte(id.CertificateID)
	h.conns.Store(cl, s)
	h.sessions.Store(cl.ID, &sessionEntry{client: cl, session: s})
	h.events.Connected()
	return nil
}

// refuse sends the CONNACK for a refused connection and logs one record saying why.
func (h *hook) refuse(cl *mqtt.Client, s *Session, ip string, port int, r *auth.Refusal, v ...Verdict) error {
	code, wire := packets.ErrNotAuthorized, packets.ErrNotAuthorized.Code
	if r.BadCredentials {
		code, wire = packets.ErrBadUsernameOrPassword, packets.ErrBadUsernameOrPassword.Code
	}
	if cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 has one return code for this, 5 (not authorized); mochi maps 0x86 to it.
		code, wire = packets.ErrBadUsernameOrPassword, packets.Err3NotAuthorized.Code
	}
	fields := []zap.Field{
		zap.String("eventType", "Connect"), zap.String("status", "Failure"),
		zap.String("clientId", cl.ID), zap.String("sourceIp", ip), zap.Int("sourcePort", port),
		zap.String("reason", r.Reason), zap.String("details", r.Details),
		zap.Uint8("protocolVersion", cl.Properties.ProtocolVersion), zap.Uint8("connackCode", wire),
	}
	if s != nil {
		fields = append(fields, zap.String("principalId", s.Identity.CertificateID), zap.String("thingName", s.Identity.ClientID))
	}
	for _, v := range v {
		fields = append(fields, zap.String("action", v.Action), zap.String("resource", v.Resource), zap.String("decision", v.Decision))
	}
	h.log.Warn("connection refused", fields...)
	h.events.Refused(r.Reason)
	_ = h.server.SendConnack(cl, code, false, nil)
	return code
}

// OnConnectAuthenticate lets mochi proceed: OnConnect has already authenticated the client.
func (h *hook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnSessionEstablished logs the successful connect.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	s, ok := h.conns.Load(cl)
	if !ok {
		return
	}
	h.log.Info("client connected", h.record(cl, s.(*Session), "Connect", "Success")...)
}

// OnDisconnect logs the disconnect with AWS' disconnectReason and forgets the connection; the session
// entry is kept while the MQTT session outlives the connection.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	v, ok := h.conns.LoadAndDelete(cl)
	if !ok {
		return
	}
	reason, status := disconnectReason(cl, err)
	fields := append(h.record(cl, v.(*Session), "Disconnect", status), zap.String("disconnectReason", reason))
	if reason == "DUPLICATE_CLIENTID" {
		fields = append(fields, zap.String("reason", "DUPLICATE_CLIENT_ID"),
			zap.String("details", "A new connection was established with the same client ID"))
	} else if err != nil && status == "Failure" {
		fields = append(fields, zap.String("details", err.Error()))
	}
	h.log.Info("client disconnected", fields...)
	h.events.Disconnected(reason)
	if expire {
		h.forget(cl)
	}
}

// OnClientExpired forgets an expired persistent session.
func (h *hook) OnClientExpired(cl *mqtt.Client) { h.forget(cl) }

// forget removes the session entry of cl's client ID if cl still owns it (a newer connection with the
// same client ID may have replaced it).
func (h *hook) forget(cl *mqtt.Client) {
	if e, ok := h.sessions.Load(cl.ID); ok && e.(*sessionEntry).client == cl {
		h.sessions.CompareAndDelete(cl.ID, e)
	}
}

func (h *hook) entry(cl *mqtt.Client) (*sessionEntry, bool) {
	if e, ok := h.sessions.Load(cl.ID); ok {
		return e.(*sessionEntry), true
	}
	return h.restore(cl)
}

// restore gives a session restored from storage (after a restart; it has no connection) its identity
// back from the certificate ID kept in its username, if that certificate is still ACTIVE and attached
// to the client ID's thing, so that messages for an offline persistent session are authorized
// (iot:Receive) and kept for it.
func (h *hook) restore(cl *mqtt.Client) (*sessionEntry, bool) {
	if cl.Net.Inline || len(cl.Properties.Username) == 0 {
		return nil, false
	}
	id, err := h.authn.Restore(string(cl.Properties.Username), cl.ID)
	if err != nil {
		h.log.Warn("stored session has no usable identity; nothing is delivered to it", zap.String("clientId", cl.ID), zap.Error(err))
		return nil, false
	}
	s := &Session{Identity: id, ProtocolVersion: cl.Properties.ProtocolVersion}
	h.authz.Connect(s) // sets s.Authz; whether it may connect again is decided when it does
	e, _ := h.sessions.LoadOrStore(cl.ID, &sessionEntry{client: cl, session: s})
	return e.(*sessionEntry), true
}

// OnSubscribe decides iot:Subscribe for every filter of the packet and keeps the verdicts for the
// OnACLCheck calls mochi makes next, filter by filter.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	e, ok := h.entry(cl)
	if !ok {
		return pk
	}
	pending := make(map[string]Verdict, len(pk.Filters))
	for _, f := range pk.Filters {
		v := h.authz.Subscribe(e.session, f.Filter)
		h.events.Decision("iot:Subscribe", v.Allowed)
		if strings.HasPrefix(f.Filter, reservedPrefix) {
			v = Verdict{Action: "iot:Subscribe", Resource: "topicfilter/" + f.Filter, Decision: "EXPLICIT_DENY", Reason: "$ggbroker/ topics are reserved"}
		}
		if !v.Allowed {
			h.denied(cl, e.session, "Subscribe", v)
		}
		pending[f.Filter] = v
	}
	e.mu.Lock()
	e.pending = pending
	e.mu.Unlock()
	e.subscribing.Store(true)
	return pk
}

// OnSubscribed ends the SUBSCRIBE: from here on OnACLCheck(read) means a delivery.
func (h *hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) {
	if e, ok := h.entry(cl); ok {
		e.subscribing.Store(false)
		e.mu.Lock()
		e.pending = nil
		e.mu.Unlock()
	}
}

// OnACLCheck answers mochi's ACL question. Writes are decided in OnPublish (which can answer with a
// reason code); reads are either a SUBSCRIBE filter (decided in OnSubscribe) or a delivery: iot:Receive,
// checked for every message and every subscriber, retained messages included.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	e, ok := h.entry(cl)
	if !ok {
		return false // no identity, no delivery
	}
	if e.subscribing.Load() {
		e.mu.Lock()
		v, isFilter := e.pending[topic]
		e.mu.Unlock()
		if isFilter {
			return v.Allowed
		}
	}
	if strings.HasPrefix(topic, suppressedWillPrefix) {
		return false
	}
	v := h.authz.Receive(e.session, topic)
	h.events.Decision("iot:Receive", v.Allowed)
	if !v.Allowed {
		h.events.Dropped("not-authorized")
		h.denied(cl, e.session, "Publish-Out", v)
	}
	return v.Allowed
}

// OnPublish decides iot:Publish (and iot:RetainPublish). A denied message is delivered to no one and
// not retained. MQTT 5 QoS 1/2 gets a PUBACK/PUBREC with 0x87; MQTT 3.1.1 has no way to say no, so
// QoS 1 is acknowledged (or the device would resend it forever) and dropped.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	e, ok := h.entry(cl)
	if !ok {
		return pk, packets.ErrRejectPacket
	}
	v := h.authz.Publish(e.session, pk.TopicName, pk.FixedHeader.Retain)
	h.events.Decision("iot:Publish", v.Allowed)
	if v.Allowed {
		return pk, nil
	}
	h.events.Dropped("not-authorized")
	h.denied(cl, e.session, "Publish-In", v)
	if pk.FixedHeader.Qos > 0 && cl.Properties.ProtocolVersion == 5 {
		return pk, packets.ErrNotAuthorized
	}
	if pk.FixedHeader.Qos == 1 {
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	return pk, packets.ErrRejectPacket
}

// suppressedWillPrefix is where a will that its client may not publish is redirected, because mochi
// publishes whatever will OnWill returns. Nothing can subscribe to or receive these topics (see
// OnSubscribe and OnACLCheck), and a $ topic is not matched by a leading wildcard (MQTT-4.7.2-1).
const (
	reservedPrefix       = "$ggbroker/"
	suppressedWillPrefix = reservedPrefix + "suppressed-will/"
)

// OnWill checks the will like any publish from its client, at the moment it is sent: mochi itself does
// not check the will topic against the ACL (mochi-mqtt/server#503), so without this a device could reach,
// through its will, a topic it may not publish to.
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	e, ok := h.entry(cl)
	var v Verdict
	if ok {
		v = h.authz.Publish(e.session, will.TopicName, will.Retain)
		if v.Allowed {
			return will, nil
		}
		h.denied(cl, e.session, "Publish-In", v)
	}
	h.log.Warn("will message suppressed", zap.String("clientId", cl.ID), zap.String("topicName", will.TopicName), zap.String("details", v.Reason))
	will.TopicName = suppressedWillPrefix + cl.ID
	will.Retain = false
	will.Payload = nil
	return will, nil
}

// denied logs one authorization failure.
func (h *hook) denied(cl *mqtt.Client, s *Session, eventType string, v Verdict) {
	if ce := h.log.Check(zap.WarnLevel, "not authorized"); ce != nil {
		ce.Write(append(h.record(cl, s, eventType, "Failure"),
			zap.String("reason", "AUTHORIZATION_FAILURE"), zap.String("action", v.Action),
			zap.String("resource", v.Resource), zap.String("decision", v.Decision), zap.String("details", v.Reason))...)
	}
}

// record is the common part of a log record, with AWS IoT's field names (aws-iot-core/cwl-format.md).
func (h *hook) record(cl *mqtt.Client, s *Session, eventType, status string) []zap.Field {
	return []zap.Field{
		zap.String("eventType", eventType), zap.String("status", status), zap.String("protocol", "MQTT"),
		zap.String("clientId", cl.ID), zap.String("thingName", s.Identity.Thing.Name),
		zap.String("principalId", s.Identity.CertificateID),
		zap.String("sourceIp", s.SourceIP.String()), zap.Int("sourcePort", s.SourcePort),
	}
}

// disconnectReason maps why mochi stopped a client to AWS IoT's disconnectReason values and a status.
func disconnectReason(cl *mqtt.Client, err error) (string, string) {
	cause := cl.StopCause()
	if cause == nil {
		cause = err
	}
	var code packets.Code
	var netErr net.Error
	switch {
	case cause == nil || errors.Is(cause, packets.CodeDisconnect):
		return "CLIENT_INITIATED_DISCONNECT", "Success"
	case errors.Is(cause, packets.ErrSessionTakenOver):
		return "DUPLICATE_CLIENTID", "Failure"
	case errors.Is(cause, packets.ErrServerShuttingDown):
		return "SERVER_INITIATED_DISCONNECT", "Success"
	case errors.Is(cause, packets.ErrNotAuthorized):
		return "FORBIDDEN_ACCESS", "Failure"
	case errors.Is(cause, os.ErrDeadlineExceeded) || errors.As(cause, &netErr) && netErr.Timeout():
		return "MQTT_KEEP_ALIVE_TIMEOUT", "Failure"
	case errors.As(cause, &code):
		return "SERVER_INITIATED_DISCONNECT", "Failure"
	default:
		return "CONNECTION_LOST", "Failure"
	}
}

func remoteAddr(cl *mqtt.Client) net.Addr {
	if cl.Net.Conn == nil {
		return nil
	}
	return cl.Net.Conn.RemoteAddr()
}
