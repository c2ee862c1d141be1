package broker

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/profile"
)

// hook translates mochi's callbacks into calls on auth (who is this?) and the Authorizer (may they?).
// It knows nothing of certificates or policies itself.
type hook struct {
	mqtt.HookBase
	// denials keeps repeated denials (one client, one event type, one topic) to one record a second.
	denials denialLog
	// connectRead releases the connection's place among those waiting for CONNECT (listener.go).
	connectRead func(net.Conn)
	server      *mqtt.Server
	authn       *auth.Authenticator
	authz       authz.Authorizer
	events      Events
	log         *zap.Logger
	// local is the loopback plain-TCP listener's identity, nil when it is off (issue 6 seam, local_listener.go).
	local *localClients
	// profile is the AWS behaviour profile; accountID goes into every log record, as in AWS IoT's.
	profile   profile.Profile
	accountID string
	// lifecycle publishes presence events; nil when they are off.
	lifecycle *lifecycle
	// unknownCertificate is told of connections refused for an unknown or not ACTIVE certificate, for the
	// services' just-in-time registration (Host.OnUnknownCertificate; api.go).
	unknownCertificate func(cl *mqtt.Client, r *auth.Refusal)

	// sessions maps client ID -> *sessionEntry for every live MQTT session, connected or not: messages
	// for an offline persistent session are authorised against the identity it last connected with.
	sessions sync.Map
	// conns maps *mqtt.Client -> *Session for connections, so that a connection that was taken over by
	// a newer one with the same client ID is still logged with its own identity.
	conns sync.Map
	// takenOver holds the connections a newer one with the same client ID replaces (*mqtt.Client -> true).
	takenOver sync.Map
	// kicked holds the connections the broker or a service closed because their credentials no
	// longer hold (*mqtt.Client -> details), for their Disconnect record and lifecycle event.
	kicked sync.Map
}

// sessionEntry is the session of one client ID and the connection that owns it.
type sessionEntry struct {
	client  *mqtt.Client
	session *authz.Session

	// pending holds the Subscribe verdicts of the SUBSCRIBE being processed, from OnSubscribe (which
	// decides every filter at once: the profile's per-packet limits need the whole packet) to
	// OnSubscribeACLCheck, which mochi calls filter by filter.
	mu      sync.Mutex
	pending map[string]authz.Verdict

	// rate is the inbound publish rate limit's state. OnPublish runs in the client's own read
	// goroutine, one packet at a time, so it needs no lock.
	rate rateWindow
}

// rateWindow counts publishes per one-second window.
type rateWindow struct {
	second   int64 // unix second of the window
	count    int
	dropped  int   // dropped since the last log record
	loggedAt int64 // unix second of the last log record
}

func (h *hook) ID() string { return "ggbroker-auth" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPacketRead:
		return h.profile.MaxQoS < 2 // to see a QoS 2 PUBLISH before mochi downgrades it
	case mqtt.OnPacketEncode:
		return h.profile.MaxPacketBytes > 0 // to advertise Maximum Packet Size in CONNACK
	}
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck, mqtt.OnSubscribeACLCheck, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnPublish,
		mqtt.OnClientExpired, mqtt.OnWill,
	}, []byte{b})
}

// OnConnect authenticates the client by its TLS certificate and client ID, then asks the Authorizer for
// iot:Connect. A refusal gets its CONNACK here: returning an error from OnConnect makes mochi close the
// connection without one.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.connectRead != nil {
		h.connectRead(cl.Net.Conn)
	}
	ip, port := splitAddr(remoteAddr(cl))
	if why := h.profile.CheckClientID(cl.ID); why != "" {
		return h.refuse(cl, nil, ip, port, &auth.Refusal{Reason: "CLIENT_ID_NOT_VALID", Details: why}, packets.ErrClientIdentifierNotValid)
	}
	if k := h.profile.KeepAlive(cl.State.Keepalive); k != cl.State.Keepalive {
		// MQTT 5 clients are told in CONNACK (Server Keep Alive); mochi disconnects at 1.5x.
		cl.State.Keepalive, cl.State.ServerKeepalive = k, true
	}
	id, err := h.identify(cl) // issue 6 seam: the TLS certificate, or the local listener's identity (local_listener.go)
	if err != nil {
		var r *auth.Refusal
		if !errors.As(err, &r) {
			r = &auth.Refusal{Reason: "AUTH_ERROR", Details: err.Error()}
		}
		code := packets.ErrNotAuthorized
		if r.BadCredentials {
			code = packets.ErrBadUsernameOrPassword
		}
		if h.unknownCertificate != nil {
			h.unknownCertificate(cl, r) // JITR/JITP: the first connection is refused all the same, as AWS does
		}
		return h.refuse(cl, nil, ip, port, r, code)
	}
	addr, _ := netip.ParseAddr(ip)
	s := &authz.Session{
		Identity:        id,
		SourceIP:        addr.Unmap(),
		SourcePort:      port,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		CleanStart:      pk.Connect.Clean,
		ID:              newSessionID(),
	}
	if pk.Connect.WillFlag {
		s.WillTopic, s.WillRetain = pk.Connect.WillTopic, pk.Connect.WillRetain
	}
	if v := h.authz.Connect(s); !v.Allowed {
		return h.refuse(cl, s, ip, port, &auth.Refusal{Reason: "AUTHORIZATION_FAILURE", Details: v.Reason}, packets.ErrNotAuthorized, v)
	}
	if holder, mine := h.holderOf(cl.ID), h.identityKey(id); holder != "" && holder != mine {
		// Identities never share a session: a local-listener client (or another device) must not take
		// over a device's persistent session, its queued messages, or kick its live connection.
		return h.refuse(cl, s, ip, port, &auth.Refusal{Reason: "CLIENT_ID_IN_USE",
			Details: fmt.Sprintf("client ID %q belongs to the session of %s; this connection is %s", cl.ID, holder, mine)}, packets.ErrNotAuthorized)
	}
	// The certificate ID goes where mochi's storage hooks persist it (the session's username: ggbroker
	// authenticates by certificate, never by username), so a session restored after a restart can be
	// given its identity back; see restore.
	cl.Properties.Username = []byte(id.CertificateID)
	if old, ok := h.sessions.Load(cl.ID); ok {
		if prev := old.(*sessionEntry).client; prev != cl && !prev.Closed() {
			// mochi is about to take the session over and disconnect prev (0x8E). Say so now: prev's own
			// read loop may see its socket close (the client drops it on DISCONNECT) before mochi
			// records why, and the record would read CONNECTION_LOST.
			h.takenOver.Store(prev, true)
		}
	}
	h.conns.Store(cl, s)
	e := &sessionEntry{client: cl, session: s}
	cl.HookState.Store(e)
	h.sessions.Store(cl.ID, e)
	h.events.Connected()
	return nil
}

// identityKey names an identity for the one-identity-per-session rule: a device by its thing (a
// device whose certificate was replaced is still the same device), a certificate attached to no thing
// by its ID, the local listener's clients by the anonymous identity.
func (h *hook) identityKey(id *auth.Identity) string {
	switch {
	case h.local != nil && id.Record == h.local.record:
		return "the local listener's anonymous identity " + h.local.name
	case id.Thing != nil && id.Thing.Name != "":
		return "thing " + id.Thing.Name
	default:
		return "certificate " + id.CertificateID
	}
}

// holderOf is the identity key of the session a client ID has now, live or persistent (also one
// restored from storage that nothing has touched yet), or "" when it has none.
func (h *hook) holderOf(clientID string) string {
	if e, ok := h.sessions.Load(clientID); ok {
		return h.identityKey(e.(*sessionEntry).session.Identity)
	}
	cl, ok := h.server.Clients.Get(clientID)
	if !ok || cl.Net.Inline || len(cl.Properties.Username) == 0 {
		return ""
	}
	certID := string(cl.Properties.Username)
	if id, err := h.authn.Restore(certID, clientID); err == nil {
		return h.identityKey(id)
	}
	return "certificate " + certID
}

// refuse sends the CONNACK for a refused connection (code, as MQTT 5 says it) and logs one record
// saying why.
func (h *hook) refuse(cl *mqtt.Client, s *authz.Session, ip string, port int, r *auth.Refusal, code packets.Code, v ...authz.Verdict) error {
	wire := code.Code
	if cl.Properties.ProtocolVersion < 5 {
		// MQTT 3.1.1 return codes: 2 for a client identifier the server refuses, else 5 (not
		// authorized). mochi maps 0x85 and 0x86 to them; 0x87 it would send as is.
		wire = packets.Err3NotAuthorized.Code
		if code == packets.ErrClientIdentifierNotValid {
			wire = packets.Err3ClientIdentifierNotValid.Code
		} else {
			code = packets.ErrBadUsernameOrPassword
		}
	}
	fields := []zap.Field{
		zap.String("traceId", newTraceID()), zap.String("accountId", h.accountID), zap.String("protocol", "MQTT"),
		zap.String("eventType", "Connect"), zap.String("status", "Failure"),
		zap.String("clientId", cl.ID), zap.String("sourceIp", ip), zap.Int("sourcePort", port),
		zap.String("reason", r.Reason), zap.String("details", r.Details),
		zap.Uint8("protocolVersion", cl.Properties.ProtocolVersion), zap.Uint8("connackCode", wire),
	}
	if s != nil {
		fields = append(fields, zap.String("principalId", s.Identity.CertificateID), zap.String("thingName", s.Identity.ThingName()))
	}
	for _, v := range v {
		fields = append(fields, verdictFields(v)...)
	}
	h.log.Error("connection refused", fields...)
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
	h.log.Info("client connected", h.record(cl, s.(*authz.Session), "Connect", "Success")...)
	h.lifecycle.connected(cl, s.(*authz.Session))
}

// OnDisconnect logs the disconnect with AWS' disconnectReason and forgets the connection; the session
// entry is kept while the MQTT session outlives the connection.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	v, ok := h.conns.LoadAndDelete(cl)
	if !ok {
		return
	}
	reason, status := disconnectReason(cl, err)
	if _, dup := h.takenOver.LoadAndDelete(cl); dup {
		reason, status = "DUPLICATE_CLIENTID", "Failure"
	}
	why, kicked := h.kicked.LoadAndDelete(cl)
	if kicked {
		// AWS' AUTH_ERROR: "the client failed to authenticate or authorization failed"
		// (aws-iot-core/life-cycle-events.md, disconnectReason).
		reason, status = "AUTH_ERROR", "Failure"
	}
	fields := h.record(cl, v.(*authz.Session), "Disconnect", status, zap.String("disconnectReason", reason))
	if kicked {
		fields = append(fields, zap.String("reason", "AUTH_ERROR"), zap.String("details", why.(string)))
		err = nil // the details say why; not the error the close produced
	}
	if reason == "DUPLICATE_CLIENTID" {
		fields = append(fields, zap.String("reason", "DUPLICATE_CLIENT_ID"),
			zap.String("details", "A new connection was established with the same client ID"))
	} else if err != nil && status == "Failure" {
		fields = append(fields, zap.String("details", err.Error()))
	}
	if status == "Failure" {
		h.log.Error("client disconnected", fields...)
	} else {
		h.log.Info("client disconnected", fields...)
	}
	h.events.Disconnected(reason)
	h.lifecycle.disconnected(cl, v.(*authz.Session), reason)
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

// entry is the session entry of cl: the one cl keeps (set when it connected or was restored), else
// the one of its client ID, else one restored from storage. OnACLCheck asks for every delivery, and
// cl.HookState is one load where the map is a hash and a trie walk.
func (h *hook) entry(cl *mqtt.Client) (*sessionEntry, bool) {
	if e, ok := cl.HookState.Load().(*sessionEntry); ok {
		return e, true
	}
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
	s := &authz.Session{Identity: id, ProtocolVersion: cl.Properties.ProtocolVersion}
	h.authz.Connect(s) // sets s.Authz; whether it may connect again is decided when it does
	v, _ := h.sessions.LoadOrStore(cl.ID, &sessionEntry{client: cl, session: s})
	e := v.(*sessionEntry)
	if e.client == cl {
		cl.HookState.Store(e)
	}
	return e, true
}

// OnSubscribe decides every filter of the packet (the profile's limits, reserved topics, then
// iot:Subscribe) and keeps the verdicts for the OnSubscribeACLCheck calls mochi makes next, filter by
// filter.
// A refused filter gets SUBACK 0x87 (MQTT 5) / 0x80 (3.1.1); in a profile that disconnects on
// unauthorized MQTT 3.1.1 requests, a policy denial closes the connection instead.
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	e, ok := h.entry(cl)
	if !ok {
		return pk
	}
	existing := 0
	if h.profile.MaxSubscriptionsPerConnection > 0 {
		existing = cl.State.Subscriptions.Len()
	}
	pending := make(map[string]authz.Verdict, len(pk.Filters))
	unauthorized := false
	for i, f := range pk.Filters {
		var v authz.Verdict
		switch {
		case h.profile.MaxFiltersPerSubscribe > 0 && i >= h.profile.MaxFiltersPerSubscribe:
			v = authz.RefusedBy("iot:Subscribe", f.Filter, fmt.Sprintf("more than %d topic filters in one SUBSCRIBE", h.profile.MaxFiltersPerSubscribe))
		case h.profile.MaxSubscriptionsPerConnection > 0 && !hasSubscription(cl, f.Filter) && existing >= h.profile.MaxSubscriptionsPerConnection:
			v = authz.RefusedBy("iot:Subscribe", f.Filter, fmt.Sprintf("more than %d subscriptions on one connection", h.profile.MaxSubscriptionsPerConnection))
		case h.profile.CheckTopic(f.Filter) != "":
			v = authz.RefusedBy("iot:Subscribe", f.Filter, h.profile.CheckTopic(f.Filter))
		case h.profile.CheckReserved(f.Filter, true) != "":
			v = authz.RefusedBy("iot:Subscribe", f.Filter, h.profile.CheckReserved(f.Filter, true))
		default:
			v = h.authz.Subscribe(e.session, f.Filter)
			h.events.Decision("iot:Subscribe", v.Allowed)
			unauthorized = unauthorized || !v.Allowed
			if v.Allowed && !hasSubscription(cl, f.Filter) {
				existing++
			}
		}
		if !v.Allowed {
			h.denied(cl, e.session, "Subscribe", f.Filter, v)
		}
		pending[f.Filter] = v
	}
	if unauthorized && h.profile.DisconnectUnauthorized && cl.Properties.ProtocolVersion < 5 {
		cl.Stop(packets.ErrNotAuthorized) // AWS IoT Core closes an MQTT 3.1.1 connection on this
	}
	e.mu.Lock()
	e.pending = pending
	e.mu.Unlock()
	return pk
}

// OnSubscribeACLCheck answers mochi's question for one filter of the SUBSCRIBE with the verdict
// OnSubscribe reached for it. A filter OnSubscribe did not see is refused.
func (h *hook) OnSubscribeACLCheck(cl *mqtt.Client, filter string) bool {
	e, ok := h.entry(cl)
	if !ok {
		return false
	}
	e.mu.Lock()
	v, ok := e.pending[filter]
	e.mu.Unlock()
	return ok && v.Allowed
}

// OnSubscribed forgets the SUBSCRIBE's verdicts and logs one Subscribe record for the filters granted.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	e, ok := h.entry(cl)
	if !ok {
		return
	}
	e.mu.Lock()
	e.pending = nil
	e.mu.Unlock()
	if ce := h.log.Check(zap.InfoLevel, "subscribed"); ce != nil {
		var granted []string
		for i, f := range pk.Filters {
			if i < len(codes) && codes[i] < 0x80 {
				granted = append(granted, f.Filter)
			}
		}
		if len(granted) > 0 {
			ce.Write(h.record(cl, e.session, "Subscribe", "Success", zap.Strings("topicName", granted))...)
		}
	}
}

// OnUnsubscribed logs one Unsubscribe record for an UNSUBSCRIBE packet. mochi also calls it when a
// session ends, with a made-up packet (packet ID 0, which no UNSUBSCRIBE has: [MQTT-2.3.1-1]) listing
// the session's filters, after OnDisconnect has forgotten the connection: that is not an Unsubscribe,
// and logging it gave every clean disconnect a record with no address ("invalid IP", port 0).
func (h *hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if pk.PacketID == 0 || cl.Net.Inline {
		return
	}
	v, ok := h.sessions.Load(cl.ID)
	if !ok {
		return
	}
	e := v.(*sessionEntry)
	if ce := h.log.Check(zap.InfoLevel, "unsubscribed"); ce != nil {
		filters := make([]string, len(pk.Filters))
		for i, f := range pk.Filters {
			filters[i] = f.Filter
		}
		ce.Write(h.record(cl, e.session, "Unsubscribe", "Success", zap.Strings("topicName", filters))...)
	}
}

// OnACLCheck answers mochi's ACL question. Writes are decided in OnPublish (which can answer with a
// reason code); a read is always a delivery (the patched mochi asks OnSubscribeACLCheck for SUBSCRIBE
// filters): iot:Receive, checked for every message and every subscriber, retained messages included.
// This runs in the publisher's goroutine for every subscriber: it must not allocate when the answer
// is yes.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	e, ok := h.entry(cl)
	if !ok {
		return false // no identity, no delivery
	}
	v := h.authz.Receive(e.session, topic)
	h.events.Decision("iot:Receive", v.Allowed)
	if !v.Allowed {
		h.events.Dropped("not-authorized")
		h.denied(cl, e.session, "Publish-Out", topic, v)
		return false
	}
	if ce := h.log.Check(zap.DebugLevel, "publish out"); ce != nil {
		ce.Write(h.record(cl, e.session, "Publish-Out", "Success", zap.String("topicName", topic))...)
	}
	return true
}

// OnPacketRead sees a QoS 2 PUBLISH before mochi quietly downgrades it to the maximum QoS, which would
// answer with a PUBACK where the client waits for a PUBREC. With QoS 2 off, as on AWS IoT Core: an
// MQTT 5 client is disconnected with 0x9B (QoS not supported), as MQTT 5 asks of a server that
// advertised Maximum QoS 1; an MQTT 3.1.1 publish is dropped unacknowledged, as AWS IoT documents
// ("the message broker doesn't send a PUBACK").
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || int(pk.FixedHeader.Qos) <= h.profile.MaxQoS {
		return pk, nil
	}
	h.log.Error("QoS not supported", zap.String("traceId", newTraceID()), zap.String("accountId", h.accountID),
		zap.String("eventType", "Publish-In"), zap.String("status", "Failure"), zap.String("clientId", cl.ID),
		zap.String("topicName", pk.TopicName), zap.String("reason", "QOS_NOT_SUPPORTED"),
		zap.String("details", fmt.Sprintf("QoS %d publish; this broker supports QoS %d at most", pk.FixedHeader.Qos, h.profile.MaxQoS)))
	h.events.Dropped("qos-not-supported")
	if cl.Properties.ProtocolVersion == 5 {
		_ = h.server.DisconnectClient(cl, packets.ErrQosNotSupported)
		return pk, packets.ErrRejectPacket
	}
	pk.FixedHeader.Qos, pk.Ignore = 0, true // processed as QoS 0 (no acknowledgement) and delivered to no one
	return pk, nil
}

// OnPacketEncode advertises the profile's Maximum Packet Size in MQTT 5 CONNACKs: mochi enforces
// Capabilities.MaximumPacketSize on inbound packets but does not tell the client.
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && cl.Properties.ProtocolVersion == 5 && pk.ReasonCode < 0x80 {
		pk.Properties.MaximumPacketSize = uint32(h.profile.MaxPacketBytes)
	}
	return pk
}

// OnPublish applies the profile's rules (payload and topic size, reserved topics, rate limit), then
// decides iot:Publish (and iot:RetainPublish). A refused message is delivered to no one and not
// retained. MQTT 5 QoS 1 gets a PUBACK with the reason; MQTT 3.1.1 has no way to say no, so QoS 1 is
// acknowledged (or the device would resend it forever) and dropped, unless the profile closes the
// connection on an unauthorized publish, as AWS IoT Core does.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the broker's own messages (lifecycle events); delivery is still checked
	}
	e, ok := h.entry(cl)
	if !ok {
		return pk, packets.ErrRejectPacket
	}
	if h.profile.PublishesPerSecond > 0 && !h.allowRate(cl, e) {
		return h.rejectPublish(cl, pk, packets.ErrQuotaExceeded, false)
	}
	if h.profile.MaxPayloadBytes > 0 && len(pk.Payload) > h.profile.MaxPayloadBytes {
		h.refusedPublish(cl, e.session, pk.TopicName, "PAYLOAD_TOO_LARGE", fmt.Sprintf("payload is %d bytes, more than the %d allowed", len(pk.Payload), h.profile.MaxPayloadBytes))
		return h.rejectPublish(cl, pk, packets.ErrQuotaExceeded, false)
	}
	if why := h.profile.CheckTopic(pk.TopicName); why != "" {
		h.refusedPublish(cl, e.session, pk.TopicName, "TOPIC_NAME_INVALID", why)
		return h.rejectPublish(cl, pk, packets.ErrTopicNameInvalid, h.profile.DisconnectUnauthorized)
	}
	if why := h.profile.CheckReserved(pk.TopicName, false); why != "" {
		h.refusedPublish(cl, e.session, pk.TopicName, "RESERVED_TOPIC", why)
		return h.rejectPublish(cl, pk, packets.ErrNotAuthorized, h.profile.DisconnectUnauthorized)
	}
	v := h.authz.Publish(e.session, pk.TopicName, pk.FixedHeader.Retain)
	h.events.Decision("iot:Publish", v.Allowed)
	if !v.Allowed {
		h.denied(cl, e.session, "Publish-In", pk.TopicName, v)
		return h.rejectPublish(cl, pk, packets.ErrNotAuthorized, h.profile.DisconnectUnauthorized)
	}
	if ce := h.log.Check(zap.DebugLevel, "publish in"); ce != nil {
		ce.Write(h.record(cl, e.session, "Publish-In", "Success", zap.String("topicName", pk.TopicName))...)
	}
	return pk, nil
}

// rejectPublish drops a publish, answering as the protocol version allows (see OnPublish).
func (h *hook) rejectPublish(cl *mqtt.Client, pk packets.Packet, code packets.Code, disconnectV3 bool) (packets.Packet, error) {
	h.events.Dropped(dropReason(code))
	if cl.Properties.ProtocolVersion == 5 {
		if pk.FixedHeader.Qos > 0 {
			return pk, code // mochi answers PUBACK with this reason code
		}
		return pk, packets.ErrRejectPacket
	}
	if disconnectV3 {
		cl.Stop(code)
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Qos == 1 {
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	return pk, packets.ErrRejectPacket
}

func dropReason(code packets.Code) string {
	switch code {
	case packets.ErrQuotaExceeded:
		return "quota-exceeded"
	case packets.ErrTopicNameInvalid:
		return "topic-invalid"
	default:
		return "not-authorized"
	}
}

// allowRate counts the publish against the connection's per-second budget. Excess publishes are
// dropped and logged at most once a second, with how many were dropped.
func (h *hook) allowRate(cl *mqtt.Client, e *sessionEntry) bool {
	now := time.Now().Unix()
	r := &e.rate
	if r.second != now {
		r.second, r.count = now, 0
	}
	r.count++
	if r.count <= h.profile.PublishesPerSecond {
		return true
	}
	r.dropped++
	if r.loggedAt != now {
		h.refusedPublish(cl, e.session, "", "THROTTLED", fmt.Sprintf("more than %d publishes per second on this connection: %d dropped", h.profile.PublishesPerSecond, r.dropped))
		r.loggedAt, r.dropped = now, 0
	}
	return false
}

// refusedPublish logs a publish refused by a rule of the profile.
func (h *hook) refusedPublish(cl *mqtt.Client, s *authz.Session, topic, reason, details string) {
	if ce := h.log.Check(zap.ErrorLevel, "publish refused"); ce != nil {
		ce.Write(h.record(cl, s, "Publish-In", "Failure", zap.String("topicName", topic),
			zap.String("reason", reason), zap.String("details", details))...)
	}
}

// OnWill checks the will like any publish from its client, at the moment it is sent (a delayed will
// when it is due, mochi patch in sendDelayedLWT), and only while its certificate still holds: mochi itself does
// not check the will topic against the ACL (mochi-mqtt/server#503), so without this a device could reach,
// through its will, a topic it may not publish to.
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	e, ok := h.entry(cl)
	var v authz.Verdict
	if ok {
		if why := h.credentialsGone(cl, e.session); why != "" {
			v.Reason, ok = why, false // a revoked certificate's will is not sent either
		}
	}
	if ok {
		v = h.authz.Publish(e.session, will.TopicName, will.Retain)
		if v.Allowed {
			return will, nil
		}
		h.denied(cl, e.session, "Publish-In", will.TopicName, v)
	}
	h.log.Warn("will message suppressed", zap.String("clientId", cl.ID), zap.String("topicName", will.TopicName), zap.String("details", v.Reason))
	return mqtt.Will{}, nil // no topic: the patched mochi does not send it (third_party/mochi-server/PATCHES.md)
}

// credentialsGone says why a session's certificate no longer holds (revoked, deactivated, removed, or
// no longer attached to its thing), or "" when it does or the session has none (the local listener).
func (h *hook) credentialsGone(cl *mqtt.Client, s *authz.Session) string {
	id := s.Identity
	if id == nil || id.CertificateID == "" || (h.local != nil && id.Record == h.local.record) {
		return ""
	}
	if _, err := h.authn.Restore(id.CertificateID, cl.ID); err != nil {
		return err.Error()
	}
	return ""
}

// denied logs an authorization failure: the first of a run of identical ones (same client, event
// type and topic) at once, then at most one a second with how many were not logged in between, so a
// device subscribed to a busy topic it may not receive cannot flood the log (every denial is still
// counted in ggbroker_policy_decisions_total).
func (h *hook) denied(cl *mqtt.Client, s *authz.Session, eventType, topic string, v authz.Verdict) {
	ce := h.log.Check(zap.ErrorLevel, "not authorized")
	if ce == nil {
		return
	}
	log, suppressed := h.denials.allow(cl.ID+"\x00"+eventType+"\x00"+topic, time.Now().Unix())
	if !log {
		return
	}
	reason := "AUTHORIZATION_FAILURE"
	if v.Refused {
		reason = "REFUSED_BY_PROFILE"
	}
	fields := h.record(cl, s, eventType, "Failure", zap.String("topicName", topic), zap.String("reason", reason))
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressedSinceLastRecord", suppressed))
	}
	ce.Write(append(fields, verdictFields(v)...)...)
}

// denialLog rate-limits identical denial records.
type denialLog struct {
	mu   sync.Mutex
	runs map[string]*denialRun
}

type denialRun struct {
	second     int64 // when the last record of the run was written
	suppressed int
}

// maxDenialRuns bounds the memory of denialLog; past it the map starts over.
const maxDenialRuns = 10000

// allow says whether to write a record for key now, and how many were suppressed since the last.
func (d *denialLog) allow(key string, now int64) (bool, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runs == nil || len(d.runs) >= maxDenialRuns {
		d.runs = map[string]*denialRun{}
	}
	r, ok := d.runs[key]
	if !ok {
		d.runs[key] = &denialRun{second: now}
		return true, 0
	}
	if r.second == now {
		r.suppressed++
		return false, 0
	}
	n := r.suppressed
	r.second, r.suppressed = now, 0
	return true, n
}

// verdictFields put a denial into a log record as fields, not text: the action and resource, the
// decision, and the deciding policy and statement (policyName, statementIndex, sid; empty when no
// statement decided: an implicit deny), with the sentence in details.
func verdictFields(v authz.Verdict) []zap.Field {
	f := []zap.Field{zap.String("action", v.Action), zap.String("resource", v.Resource),
		zap.String("decision", v.DecisionName()), zap.String("details", v.Reason)}
	if d := v.Diagnostic; d.Policy != "" {
		f = append(f, zap.String("policyName", d.Policy), zap.Int("statementIndex", d.Statement), zap.String("sid", d.Sid))
	}
	if len(v.Diagnostic.Unresolved) > 0 {
		f = append(f, zap.Strings("unresolvedVariables", v.Diagnostic.Unresolved))
	}
	return f
}

// record is the common part of a log record, with AWS IoT's field names (aws-iot-core/cwl-format.md).
func (h *hook) record(cl *mqtt.Client, s *authz.Session, eventType, status string, extra ...zap.Field) []zap.Field {
	// One allocation, sized for the record's own fields: every connect and disconnect writes one.
	fields := make([]zap.Field, 0, 10+len(extra))
	fields = append(fields,
		zap.String("traceId", newTraceID()), zap.String("accountId", h.accountID),
		zap.String("eventType", eventType), zap.String("status", status), zap.String("protocol", "MQTT"),
		zap.String("clientId", cl.ID), zap.String("thingName", s.Identity.ThingName()),
		zap.String("principalId", s.Identity.CertificateID),
		zap.String("sourceIp", s.SourceIP.String()), zap.Int("sourcePort", s.SourcePort))
	return append(fields, extra...)
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

func hasSubscription(cl *mqtt.Client, filter string) bool {
	_, ok := cl.State.Subscriptions.Get(filter)
	return ok
}
