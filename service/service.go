// Package service is the one seam between the broker and the device services that run inside it
// (bridge, shadow, jobs, iotapi, provisioning, ...). A service package imports this package, never mochi
// and never another service; the broker implements Host, and the app package hands every service its
// Host at start.
//
// What a service gets, and nothing more:
//   - the messages devices publish to the topics it handles, after the broker has authorized them
//     (Handle), before they are acknowledged, with who sent them;
//   - a way to publish as the service to every allowed subscriber (Publish), or to answer one client
//     only (SendTo);
//   - the requester's identity and the policy engine's decision for any action (Authorize);
//   - durable storage in the state directory's service database (Store);
//   - HTTP routes on the AWS API listener (HandleAPI, SigV4-verified) and on the device HTTPS listener
//     (HandleDevice, mutual TLS);
//   - the certificates of refused connections that the registry does not know or holds as not ACTIVE
//     (OnUnknownCertificate), for just-in-time registration;
//   - a Prometheus registerer for its metrics, served on the admin listener's /metrics.
package service

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/state"
)

// Service is one in-broker device service.
type Service interface {
	// Name is the service's name in log records, metrics and errors ("shadow", "bridge").
	Name() string
	// Start registers the service's topics and routes with host and starts its background work, which
	// runs until ctx ends. It returns once the service is ready to serve; an error stops the broker's
	// start, naming the service.
	Start(ctx context.Context, host Host) error
	// Stop waits for the background work Start began to finish (ctx has ended by then) and releases
	// what the service holds. It is called once, after the broker stopped delivering messages.
	Stop() error
}

// Deps is what a service's constructor may take from the process: the whole validated config (a
// service decodes its own block with Config.Decode), the opened state directory and a logger named
// for the service.
type Deps struct {
	Config *config.Config
	State  *state.State
	Log    *zap.Logger
}

// Client is who sent a message or made a request: an authenticated device, or nobody (a message the
// broker or a service published, or a SigV4 caller with the account's credentials).
type Client struct {
	// ClientID is the MQTT client ID ("" for HTTP requests).
	ClientID string
	// ThingName is the thing the certificate is attached to and the client ID names ("" if none).
	ThingName string
	// CertificateID is the device certificate's ID (lowercase hex SHA-256 of its DER).
	CertificateID string
	// SourceIP and SourcePort are the connection's remote address.
	SourceIP   netip.Addr
	SourcePort int
	// ProtocolVersion is 3 (MQTT 3.1.1: 4 on the wire) or 5 for MQTT clients, 0 for HTTP.
	ProtocolVersion byte

	// session is the broker's own handle on the client, for Authorize and SendTo.
	session any
}

// NewClient is for the Host implementation: it attaches the broker's handle on the client.
func NewClient(c Client, session any) *Client {
	c.session = session
	return &c
}

// Session is the broker's handle NewClient attached (for the Host implementation).
func (c *Client) Session() any { return c.session }

// Message is one MQTT message, as a service sees it or publishes it.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// From is the device that published it; nil for messages the broker or a service published.
	From *Client
	// Origin names the service that published it ("" for a device's message). A service that forwards
	// messages (the bridge) skips what it published itself, so overlapping mappings never loop.
	Origin string
	// MQTT 5 properties that services pass on: response topic and correlation data (request/response),
	// user properties, content type, message expiry (0: none).
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []UserProperty
	ContentType     string
	MessageExpiry   uint32
}

// UserProperty is one MQTT 5 user property.
type UserProperty struct{ Key, Value string }

// Handler receives a message a device published to a topic the service handles. It runs in the
// publishing client's goroutine, after the broker has authorized the publish and before it is
// acknowledged: an error refuses the message (MQTT 5 PUBACK 0x80; MQTT 3.1.1: no PUBACK, connection
// closed), so a service that must store a message before it is acknowledged returns the store's error.
// A handler must be quick; one that does slow work queues it. The message is also delivered to the
// topic's subscribers as usual, unless the handler returns Consumed.
type Handler func(ctx context.Context, m *Message) error

// Consumed, returned by a Handler, accepts the message without delivering it to subscribers.
var Consumed = errors.New("message consumed by a service")

// SendOptions say how SendTo reaches its one client.
type SendOptions struct {
	// RequireSubscription delivers only when the client holds a subscription matching the topic (the
	// Device Shadow service's rule); without it the message reaches the client whether or not it
	// subscribed (the Jobs service's rule). Either way iot:Receive is checked.
	RequireSubscription bool
}

// ErrNotConnected is SendTo's answer when the client has no live session.
var ErrNotConnected = errors.New("client not connected")

// Host is what the broker gives every service. Its methods are safe for concurrent use.
type Host interface {
	// Handle routes messages devices publish to topics matching filter (MQTT wildcards allowed) to h.
	// Register in Start. Every handler whose filter matches gets the message, in registration order.
	Handle(filter string, h Handler) error
	// Publish publishes m as the service (m.Origin is set to the service's name): every subscriber gets it
	// that iot:Receive allows, and other services' handlers see it. It returns once the message is
	// queued for every subscriber.
	Publish(m Message) error
	// SendTo delivers m to one client only, if iot:Receive allows it (see SendOptions).
	SendTo(to *Client, m Message, opts SendOptions) error
	// Authorize decides action on resource (a full ARN, or the part after the account: "thing/T") for
	// c, with the same policies the broker decides MQTT actions by. A nil c is the account itself: allowed.
	Authorize(c *Client, action, resource string) authz.Verdict
	// Store opens the named bucket of the state directory's service database (services.db).
	Store(bucket string) (Store, error)
	// HandleAPI serves h on the AWS API listener (controlPlane.listen) for requests whose SigV4
	// credential scope names signingName ("iot", "iotdata", "iot-jobs-data", "greengrass") and whose
	// method and path match pattern, a net/http ServeMux pattern ("PUT /jobs/{jobId}", "/things/").
	// The signature is verified before h runs. Several services may share a signing name (iotapi and
	// jobs both serve "iot") with patterns of their own.
	HandleAPI(signingName, pattern string, h http.Handler) error
	// HandleDevice serves h on the device HTTPS listener (mutual TLS, the discovery port) for requests
	// matching pattern (a ServeMux pattern); DeviceFrom(r.Context()) is the authenticated device.
	HandleDevice(pattern string, h http.Handler) error
	// Clients lists the connected MQTT clients (for a service that acts on them, like revocation).
	Clients() []*Client
	// Disconnect closes a client's connection because its credentials no longer hold (a certificate
	// revoked through the API): its Disconnect record says AUTH_ERROR, with reason as details.
	Disconnect(c *Client, reason string) error
	// OnUnknownCertificate calls fn with the chain a device presented (leaf first) whenever its MQTT
	// connection is refused because the certificate is not registered or is registered but not ACTIVE
	// (a PENDING_ACTIVATION one presenting itself again). It is the hook of AWS IoT's just-in-time
	// registration and provisioning, where the first connection is refused all the same and the device
	// reconnects (aws-iot-core/jit-provisioning.md, auto-register-device-cert.md). fn runs in the
	// connecting client's goroutine before its CONNACK is sent: slow work belongs elsewhere. Register in
	// Start.
	OnUnknownCertificate(fn func(chain []*x509.Certificate))
	// Metrics registers the service's collectors; they are served on /metrics.
	Metrics() prometheus.Registerer
	// Log is the service's logger.
	Log() *zap.Logger
	// Upstream is the core device's connection to its upstream, shared with the service that owns it
	// (see UpstreamProvider); nil when there is none (core.iotDataEndpoint empty).
	Upstream() Upstream
}

// Store is one bucket of the service database. Writes are durable (fsynced, several concurrent writers
// sharing a commit) when they return, so a service can acknowledge what it stored.
type Store interface {
	// Get returns a key's value, or nil when there is none. The slice is the caller's.
	Get(key string) ([]byte, error)
	// Put stores a value.
	Put(key string, value []byte) error
	// Delete removes a key; a missing key is not an error.
	Delete(key string) error
	// ForEach calls fn for every key with prefix, in key order, until fn returns an error.
	ForEach(prefix string, fn func(key string, value []byte) error) error
	// Update applies several puts and deletes atomically: all or none are stored.
	Update(fn func(tx Tx) error) error
}

// Tx is the write side of one atomic Store.Update.
type Tx interface {
	Get(key string) ([]byte, error)
	Put(key string, value []byte) error
	Delete(key string) error
}

type deviceKey struct{}

// WithDevice is for the Host implementation: it puts the authenticated device into a request's context.
func WithDevice(ctx context.Context, c *Client) context.Context {
	return context.WithValue(ctx, deviceKey{}, c)
}

// DeviceFrom is the device that made an HTTP request on the device listener, or nil.
func DeviceFrom(ctx context.Context) *Client {
	c, _ := ctx.Value(deviceKey{}).(*Client)
	return c
}

// ackAfterKey carries, in a Handler's context, where the host collects the waits an incoming QoS 1
// message's acknowledgement is to wait for.
type ackAfterKey struct{}

// WithAckAfter is for the host: a Handler's context whose AckAfter hands its waits to deferAck.
func WithAckAfter(ctx context.Context, deferAck func(wait func() error)) context.Context {
	return context.WithValue(ctx, ackAfterKey{}, deferAck)
}

// AckAfter lets a Handler make the device's acknowledgement (PUBACK) of the message wait for a
// durable write it started, without holding up the device's connection: the host sends the PUBACK
// once wait returned nil, and refuses the message (PUBACK 0x80, or a closed MQTT 3.1.1 connection)
// if it failed. It reports false when the message has no acknowledgement to hold (QoS 0, or a
// message from the host itself): the Handler must then wait itself before it returns.
func AckAfter(ctx context.Context, wait func() error) bool {
	f, ok := ctx.Value(ackAfterKey{}).(func(wait func() error))
	if !ok || f == nil {
		return false
	}
	f(wait)
	return true
}
