package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ggbroker/ggbroker/service"
)

// link is the bridge's upstream connection as other services share it (service.Upstream): the
// subscriptions they asked for, restored on every session beside the mappings', and publishes sent on
// the live session outside the spool. Greengrass has one connection per core device, client ID
// core.thingName, for the bridge and the shadow manager alike; so does ggbroker.
type link struct {
	mu       sync.Mutex
	subs     []linkSub
	sess     *session // the session being set up or serving, nil between sessions
	live     bool     // sess has its subscriptions in place
	watchers []func(bool)
}

type linkSub struct {
	filter  string
	handler service.UpstreamHandler
}

// publishTimeout bounds the wait for a PUBACK of a shared publish.
const publishTimeout = 30 * time.Second

// Upstream implements service.UpstreamProvider: nil when core.iotDataEndpoint names no upstream.
func (b *Bridge) Upstream() service.Upstream {
	if b.set.Upstream == nil || b.link == nil {
		return nil
	}
	return b.link
}

// Publish implements service.Upstream.
func (l *link) Publish(ctx context.Context, m service.Message) error {
	l.mu.Lock()
	s := l.sess
	l.mu.Unlock()
	if s == nil {
		return service.ErrNotConnected
	}
	return s.publishNow(ctx, m)
}

// Subscribe implements service.Upstream. On a session that began without the filter, it subscribes
// at once and waits (a few seconds at most) for the SUBACK, so that a service that subscribes and then
// watches hears of a session only once its subscriptions are in place. A failure there is left to the
// next session, which subscribes to every filter.
func (l *link) Subscribe(filter string, h service.UpstreamHandler) error {
	if err := checkFilter(filter); err != nil || filter == "" {
		return fmt.Errorf("bridge: upstream subscription %q: not a valid topic filter", filter)
	}
	l.mu.Lock()
	l.subs = append(l.subs, linkSub{filter: filter, handler: h})
	s := l.sess
	l.mu.Unlock()
	if s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), subscribeWait)
		defer cancel()
		_, _ = s.subscribe(ctx, []subscription{{Filter: filter}})
	}
	return nil
}

// subscribeWait bounds Subscribe's wait for the SUBACK on a live session.
const subscribeWait = 5 * time.Second

// Watch implements service.Upstream.
func (l *link) Watch(fn func(bool)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watchers = append(l.watchers, fn)
	if l.live {
		fn(true)
	}
}

// The session hooks below are no-ops on a nil link (a Bridge built without New).

// begin makes s the session publishes go to and returns the filters to subscribe to besides have (the
// mappings').
func (l *link) begin(s *session, have []subscription) []subscription {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sess, l.live = s, false
	seen := map[string]bool{}
	for _, h := range have {
		seen[h.Filter] = true
	}
	var out []subscription
	for _, sub := range l.subs {
		if !seen[sub.filter] {
			seen[sub.filter] = true
			out = append(out, subscription{Filter: sub.filter})
		}
	}
	return out
}

// up tells the watchers that s has its subscriptions in place.
func (l *link) up(s *session) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sess != s {
		return
	}
	l.live = true
	for _, fn := range l.watchers {
		fn(true)
	}
}

// end tells the watchers that s is over.
func (l *link) end(s *session) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sess != s {
		return
	}
	wasLive := l.live
	l.sess, l.live = nil, false
	if wasLive {
		for _, fn := range l.watchers {
			fn(false)
		}
	}
}

// dispatch hands an upstream message to every shared subscription it matches; it reports whether any did.
func (l *link) dispatch(m service.Message) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	var hs []service.UpstreamHandler
	for _, sub := range l.subs {
		if service.TopicMatches(sub.filter, m.Topic) {
			hs = append(hs, sub.handler)
		}
	}
	l.mu.Unlock()
	for _, h := range hs {
		h(m)
	}
	return len(hs) > 0
}

// errRefusedUpstream is a PUBACK with a failure reason code.
var errRefusedUpstream = errors.New("upstream refused the message")

// publishNow sends one QoS 1 PUBLISH outside the pump and waits for its PUBACK. Its packet identifier
// is marked foreign so that the PUBACK comes here, not to the pump.
func (s *session) publishNow(ctx context.Context, m service.Message) error {
	r := &record{Topic: m.Topic, Payload: m.Payload, Retain: m.Retain, Enqueued: time.Now(), ContentType: m.ContentType,
		ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData, MessageExpiry: m.MessageExpiry, UserProperties: m.UserProperties}
	if !s.fits(r) {
		return fmt.Errorf("%w: larger than the upstream's maximum packet size %d", errRefusedUpstream, s.maxPacket)
	}
	ch := make(chan byte, 1)
	id := s.foreignID(ch)
	defer s.releaseForeign(id)
	if err := s.write(func(w io.Writer) error { return s.publish(w, id, r, m.MessageExpiry) }); err != nil {
		return err
	}
	t := time.NewTimer(publishTimeout)
	defer t.Stop()
	select {
	case code := <-ch:
		if code >= 0x80 {
			return fmt.Errorf("%w: PUBACK 0x%02x", errRefusedUpstream, code)
		}
		return nil
	case <-s.done:
		return service.ErrNotConnected
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("no PUBACK from the upstream within 30s")
	}
}
