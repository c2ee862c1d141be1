package broker

import (
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/internal/ids"
)

// Lifecycle event topics (aws-iot-core/life-cycle-events.md).
const (
	presenceConnected    = "$aws/events/presence/connected/"
	presenceDisconnected = "$aws/events/presence/disconnected/"
)

// lifecycle publishes AWS IoT's presence events through mochi's inline client. Subscribers still need
// iot:Receive on the event topic: delivery goes through the same checks as any message.
type lifecycle struct {
	server    *mqtt.Server
	log       *zap.Logger
	accountID string
	// versions holds each client ID's versionNumber: it increases with each connection, and a
	// connection's connect and disconnect events share it.
	versions sync.Map // client ID -> *atomic.Uint64
}

// presenceEvent is the JSON AWS IoT publishes.
type presenceEvent struct {
	ClientID                  string `json:"clientId"`
	Timestamp                 int64  `json:"timestamp"`
	EventType                 string `json:"eventType"`
	SessionIdentifier         string `json:"sessionIdentifier"`
	PrincipalIdentifier       string `json:"principalIdentifier"`
	IPAddress                 string `json:"ipAddress,omitempty"`
	ClientInitiatedDisconnect *bool  `json:"clientInitiatedDisconnect,omitempty"`
	DisconnectReason          string `json:"disconnectReason,omitempty"`
	VersionNumber             uint64 `json:"versionNumber"`
}

// connected publishes the connected event and gives the session its version number.
func (l *lifecycle) connected(cl *mqtt.Client, s *authz.Session) {
	if l == nil || !hasEvents(cl.ID) {
		return
	}
	v, _ := l.versions.LoadOrStore(cl.ID, new(atomic.Uint64))
	s.Version = v.(*atomic.Uint64).Add(1)
	l.publish(presenceConnected+cl.ID, presenceEvent{
		ClientID: cl.ID, Timestamp: time.Now().UnixMilli(), EventType: "connected",
		SessionIdentifier: s.ID, PrincipalIdentifier: s.Identity.CertificateID,
		IPAddress: s.SourceIP.String(), VersionNumber: s.Version,
	})
}

// disconnected publishes the disconnected event with AWS' disconnectReason.
func (l *lifecycle) disconnected(cl *mqtt.Client, s *authz.Session, reason string) {
	if l == nil || !hasEvents(cl.ID) {
		return
	}
	byClient := reason == "CLIENT_INITIATED_DISCONNECT"
	l.publish(presenceDisconnected+cl.ID, presenceEvent{
		ClientID: cl.ID, Timestamp: time.Now().UnixMilli(), EventType: "disconnected",
		SessionIdentifier: s.ID, PrincipalIdentifier: s.Identity.CertificateID,
		ClientInitiatedDisconnect: &byClient, DisconnectReason: reason, VersionNumber: s.Version,
	})
}

func (l *lifecycle) publish(topic string, ev presenceEvent) {
	// An event nobody subscribes to reaches nobody: it is not retained, and the services' handlers do
	// not see the broker's own inline publishes. Most gateways have no presence subscriber, and the
	// JSON and the publish were a tenth of a CONNECT's own cost.
	if !l.server.Topics.HasSubscribers(topic) {
		return
	}
	payload, err := json.Marshal(ev)
	if err == nil {
		err = l.server.Publish(topic, payload, false, 1)
	}
	if err != nil {
		l.log.Error("lifecycle event not published", zap.String("topicName", topic), zap.Error(err))
	}
}

// hasEvents: client IDs that contain # or + do not receive lifecycle events (life-cycle-events.md).
func hasEvents(clientID string) bool { return !strings.ContainsAny(clientID, "#+") }

// newSessionID is a random identifier for one connection's session (sessionIdentifier).
func newSessionID() string { return ids.Hex16() }

// newTraceID is a log record's traceId, in the UUID form AWS IoT's records use.
func newTraceID() string { return ids.TraceID() }
