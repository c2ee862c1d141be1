package service

import "context"

// Upstream is the core device's one MQTT connection to its upstream (AWS IoT Core, or the broker
// core.iotDataEndpoint names), as Greengrass has one: a single session with client ID core.thingName
// that the bridge owns and other services share (the shadow service's sync). Its methods are safe for
// concurrent use.
type Upstream interface {
	// Publish sends m upstream at QoS 1 on the current session and returns once the upstream
	// acknowledged it. Nothing is queued: with no session it fails at once with ErrNotConnected, and a
	// session that ends first fails it too, so the caller decides what to send again.
	Publish(ctx context.Context, m Message) error
	// Subscribe adds filter to the session's subscriptions, at once if a session is up and again on
	// every reconnect, and hands h every message the upstream delivers that matches it.
	Subscribe(filter string, h UpstreamHandler) error
	// Watch calls fn(true) each time a session is up with its subscriptions in place, and fn(false)
	// when it ends. fn runs in the connection's goroutine: it must not block.
	Watch(fn func(connected bool))
}

// UpstreamHandler receives a message from the upstream. It runs in the connection's reader
// goroutine, before the message is acknowledged: it must not block, least of all on a request to the
// upstream, whose answer that goroutine is to read.
type UpstreamHandler func(m Message)

// UpstreamProvider is implemented by the service that owns the upstream connection (the bridge).
// Host.Upstream returns the first started service's non-nil Upstream.
type UpstreamProvider interface {
	Upstream() Upstream
}
