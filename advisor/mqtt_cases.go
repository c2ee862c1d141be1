package advisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// MQTT_Connect: the device sends a valid CONNECT; it gets its CONNACK.
func runMQTTConnect(ctx context.Context, tc *testCtx) verdict {
	s, err := tc.acceptSession(ctx)
	if err != nil {
		return tc.timedOut("the device sent no CONNECT")
	}
	tc.notef("%s CONNECT, client ID %q, keep alive %d s, clean %t", s.version(), s.connect.ClientID, s.connect.KeepAlive, s.connect.CleanStart)
	if err := s.connack(false); err != nil {
		return errVerdict("sending CONNACK: %v", err)
	}
	return pass()
}

// hold keeps a connection up for d, answering as a normal broker, unless the device closes it first.
func (tc *testCtx) hold(ctx context.Context, s *session, d time.Duration) {
	hctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		cp, err := s.next(hctx)
		if err != nil {
			return
		}
		_ = s.answer(cp, blockSet{})
	}
}

// settle accepts a connection, keeps it for StableConnection and drops it: the device's backoff
// starts from its first delay after that (see Options.StableConnection). It returns when the
// connection was dropped.
func (tc *testCtx) settle(ctx context.Context) (time.Time, error) {
	s, err := tc.acceptSession(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if err := s.connack(false); err != nil {
		return time.Time{}, err
	}
	tc.hold(ctx, s, tc.run.opts.StableConnection)
	s.close()
	return s.closed, ctx.Err()
}

// attemptMode says what the endpoint does with a timed connection attempt.
type attemptMode int

const (
	dropBeforeConnack attemptMode = iota // read the CONNECT, close without CONNACK
	connackThenDrop                      // CONNACK, then close at once
	connackAndHold                       // CONNACK, keep the connection StableConnection, close
)

// timeAttempts times n connection attempts after the drop at last: each delay is from the moment
// the endpoint dropped the previous connection to the next one's arrival, so the endpoint's own
// hold time is not counted (advisor.md §5). mode(i) says what to do with attempt i.
func (tc *testCtx) timeAttempts(ctx context.Context, n int, last time.Time, mode func(i int) attemptMode) ([]time.Duration, time.Time, error) {
	var delays []time.Duration
	for i := range n {
		s, err := tc.acceptSession(ctx)
		if err != nil {
			return delays, last, err
		}
		delays = append(delays, s.accepted.Sub(last))
		switch mode(i) {
		case dropBeforeConnack:
		case connackThenDrop:
			_ = s.connack(false)
		case connackAndHold:
			_ = s.connack(false)
			tc.hold(ctx, s, tc.run.opts.StableConnection)
		}
		s.close()
		last = s.closed
	}
	return delays, last, nil
}

// backoffVerdict maps a classification to a verdict. exponentialPasses is for
// MQTT_Connect_Exponential_Backoff_Retries, where exponential backoff is what is asked.
func (tc *testCtx) backoffVerdict(delays []time.Duration, exponentialPasses bool) verdict {
	a, err := ClassifyBackoff(delays, tc.run.opts.Backoff)
	if err != nil {
		return errVerdict("%v", err)
	}
	tc.notef("%s", a)
	switch a.Class {
	case BackoffJitter:
		return pass()
	case BackoffExponential:
		if exponentialPasses {
			return pass()
		}
		return warn("the device backs off strictly exponentially, without jitter: devices that lose the connection together reconnect together (%s)", a)
	}
	return fail("the device retries with %s delays instead of exponential backoff with jitter (%s)", a.Class, a)
}

func (tc *testCtx) backoffTimeout(delays []time.Duration, want int) verdict {
	return tc.timedOut(fmt.Sprintf("%d of %d connection attempts arrived (delays %s)", len(delays), want, formatDelays(delays)))
}

func formatDelays(ds []time.Duration) string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = formatSeconds(d)
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// jitterCycle is the attempts of one cycle of MQTT_Connect_Jitter_Backoff_Retries: five CONNECTs
// without CONNACK, the sixth with one (DA-MQTT).
const jitterCycle = 6

// MQTT_Connect_Jitter_Backoff_Retries: CONNECTs are timed and dropped without CONNACK; the sixth gets
// its CONNACK; the cycle runs twice (12 CONNECTs) before the verdict, the worse of the two cycles.
func runJitterBackoff(ctx context.Context, tc *testCtx) verdict {
	last, err := tc.settle(ctx)
	if err != nil {
		return tc.timedOut("the device did not connect")
	}
	worst := pass()
	for cycle := 1; cycle <= 2; cycle++ {
		delays, l, err := tc.timeAttempts(ctx, jitterCycle, last, func(i int) attemptMode {
			if i == jitterCycle-1 {
				return connackAndHold
			}
			return dropBeforeConnack
		})
		last = l
		if err != nil {
			return tc.backoffTimeout(delays, jitterCycle)
		}
		tc.notef("cycle %d:", cycle)
		if v := tc.backoffVerdict(delays, false); rank(v.status) > rank(worst.status) {
			worst = v
		}
	}
	return worst
}

func rank(s Status) int {
	switch s {
	case StatusPass:
		return 0
	case StatusPassWithWarnings:
		return 1
	case StatusFail:
		return 2
	}
	return 3
}

// exponentialAttempts are the attempts MQTT_Connect_Exponential_Backoff_Retries times: "no CONNACK,
// ≥5 retries timed" (DA-MQTT).
const exponentialAttempts = 6

// MQTT_Connect_Exponential_Backoff_Retries: no CONNACK; exponential backoff (with or without
// jitter) passes.
func runExponentialBackoff(ctx context.Context, tc *testCtx) verdict {
	return tc.timedBackoff(ctx, exponentialAttempts, dropBeforeConnack, true)
}

// MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect: the endpoint disconnects the device, then
// withholds CONNACK from RECONNECTION_ATTEMPTS reconnections, timing each.
func runServerDisconnectBackoff(ctx context.Context, tc *testCtx) verdict {
	return tc.timedBackoff(ctx, reconnectionAttempts(tc.cfg), dropBeforeConnack, false)
}

// MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection: every reconnection gets its CONNACK and is
// dropped at once; a device that resets its backoff on CONNACK alone retries at a constant pace.
func runUnstableBackoff(ctx context.Context, tc *testCtx) verdict {
	return tc.timedBackoff(ctx, reconnectionAttempts(tc.cfg), connackThenDrop, false)
}

// timedBackoff settles the device on one connection, then answers n attempts the same way (mode),
// times them and classifies the delays (exponentialPasses: whether plain exponential backoff, without
// jitter, passes too).
func (tc *testCtx) timedBackoff(ctx context.Context, n int, mode attemptMode, exponentialPasses bool) verdict {
	last, err := tc.settle(ctx)
	if err != nil {
		return tc.timedOut("the device did not connect")
	}
	delays, _, err := tc.timeAttempts(ctx, n, last, func(int) attemptMode { return mode })
	if err != nil {
		return tc.backoffTimeout(delays, n)
	}
	return tc.backoffVerdict(delays, exponentialPasses)
}

// publishMatch reports whether a PUBLISH has the configured topic and payload.
func publishMatch(cfg Config, p *packets.Publish) bool {
	if t, ok, _ := cfg.String("TOPIC_FOR_PUBLISH_VALIDATION"); ok && t != p.Topic {
		return false
	}
	if pl, ok, _ := cfg.String("PAYLOAD_FOR_PUBLISH_VALIDATION"); ok && pl != string(p.Payload) {
		return false
	}
	return true
}

// sessions calls fn with each MQTT connection the device makes (after sending its CONNACK) until fn
// returns a verdict or the case times out; fn returns nil to wait for the next connection.
func (tc *testCtx) sessions(ctx context.Context, onTimeout func() verdict, fn func(s *session) *verdict) verdict {
	for {
		s, err := tc.acceptSession(ctx)
		if err != nil {
			return onTimeout()
		}
		if err := s.connack(false); err != nil {
			continue
		}
		if v := fn(s); v != nil {
			return *v
		}
		if ctx.Err() != nil {
			return onTimeout()
		}
		tc.notef("the device closed the connection; waiting for it to reconnect")
	}
}

// MQTT_Publish ("QoS0 Happy Case"): the device publishes with QoS 0, on the configured topic and
// payload if set.
func runPublish(ctx context.Context, tc *testCtx) verdict {
	var seen []string
	wantTopic, hasTopic, _ := tc.cfg.String("TOPIC_FOR_PUBLISH_VALIDATION")
	return tc.sessions(ctx, func() verdict {
		if len(seen) > 0 {
			return tc.timedOut("no QoS 0 PUBLISH matched the validation (seen: " + strings.Join(seen, "; ") + ")")
		}
		return tc.timedOut("the device published nothing")
	}, func(s *session) *verdict {
		for {
			cp, err := s.next(ctx)
			if err != nil {
				return nil
			}
			_ = s.answer(cp, blockSet{})
			p, ok := cp.Content.(*packets.Publish)
			if !ok {
				continue
			}
			if len(seen) < 10 {
				seen = append(seen, fmt.Sprintf("QoS %d on %s", p.QoS, p.Topic))
			}
			if !publishMatch(tc.cfg, p) {
				continue
			}
			if p.QoS == 0 {
				v := pass()
				return &v
			}
			if hasTopic {
				v := fail("the device published on %s with QoS %d: this case wants QoS 0", wantTopic, p.QoS)
				return &v
			}
		}
	})
}

// MQTT_Publish_Retry_No_Puback: the QoS 1 PUBLISH is never acknowledged; the device must send it again
// with the same packet ID and DUP set, without disconnecting. A reconnection starts the case over.
func runPublishRetry(ctx context.Context, tc *testCtx) verdict {
	var first *packets.Publish
	return tc.sessions(ctx, func() verdict {
		if first == nil {
			return tc.timedOut("the device sent no QoS 1 PUBLISH" + topicSuffix(tcString(tc.cfg, "TOPIC_FOR_PUBLISH_VALIDATION")))
		}
		return tc.timedOut(fmt.Sprintf("the device did not send again the PUBLISH with packet ID %d that got no PUBACK", first.PacketID))
	}, func(s *session) *verdict {
		if first != nil {
			tc.notef("the device reconnected: the case starts over")
		}
		first = nil
		for {
			cp, err := s.next(ctx)
			if err != nil {
				return nil
			}
			_ = s.answer(cp, blockSet{puback: true})
			p, ok := cp.Content.(*packets.Publish)
			if !ok || p.QoS == 0 || !publishMatch(tc.cfg, p) {
				continue
			}
			if first == nil {
				first = p
				tc.notef("QoS 1 PUBLISH on %s, packet ID %d: PUBACK withheld", p.Topic, p.PacketID)
				continue
			}
			var v verdict
			switch {
			case p.PacketID != first.PacketID:
				v = fail("the device sent the message again with a new packet ID %d instead of %d with DUP set: the broker sees two messages", p.PacketID, first.PacketID)
			case !p.Duplicate:
				v = fail("the device sent packet ID %d again without the DUP flag", p.PacketID)
			default:
				tc.notef("resent with packet ID %d and DUP after %s", p.PacketID, formatSeconds(time.Since(s.accepted).Round(time.Millisecond)))
				v = pass()
			}
			return &v
		}
	})
}

func tcString(c Config, key string) string {
	s, _, _ := c.String(key)
	return s
}

// subscribeMatch reports whether a SUBSCRIBE has one of the filters to validate (any, when none).
func subscribeMatch(want []string, sub *packets.Subscribe) bool {
	if len(want) == 0 {
		return true
	}
	for _, o := range sub.Subscriptions {
		if slices.Contains(want, o.Topic) {
			return true
		}
	}
	return false
}

// MQTT_Subscribe: the device subscribes, to every listed filter if a list is configured.
func runSubscribe(ctx context.Context, tc *testCtx) verdict {
	want, _, _ := tc.cfg.Strings("TOPIC_LIST_FOR_SUBSCRIPTION_VALIDATION_ID")
	got := map[string]bool{}
	missing := func() []string {
		var m []string
		for _, w := range want {
			if !got[w] {
				m = append(m, w)
			}
		}
		return m
	}
	return tc.sessions(ctx, func() verdict {
		if len(got) == 0 {
			return tc.timedOut("the device did not subscribe")
		}
		return tc.timedOut("the device did not subscribe to " + strings.Join(missing(), ", "))
	}, func(s *session) *verdict {
		for {
			cp, err := s.next(ctx)
			if err != nil {
				return nil
			}
			_ = s.answer(cp, blockSet{})
			sub, ok := cp.Content.(*packets.Subscribe)
			if !ok {
				continue
			}
			for _, o := range sub.Subscriptions {
				got[o.Topic] = true
			}
			if len(missing()) == 0 {
				v := pass()
				return &v
			}
		}
	})
}

// MQTT_Subscribe_Retry_No_Suback: the SUBSCRIBE is never acknowledged; the device must send it
// again with the same packet ID. A reconnection starts the case over.
func runSubscribeRetry(ctx context.Context, tc *testCtx) verdict {
	want, _, _ := tc.cfg.Strings("TOPIC_LIST_FOR_SUBSCRIPTION_VALIDATION_ID")
	var first *packets.Subscribe
	return tc.sessions(ctx, func() verdict {
		if first == nil {
			return tc.timedOut("the device did not subscribe")
		}
		return tc.timedOut(fmt.Sprintf("the device did not send again the SUBSCRIBE with packet ID %d that got no SUBACK", first.PacketID))
	}, func(s *session) *verdict {
		if first != nil {
			tc.notef("the device reconnected: the case starts over")
		}
		first = nil
		for {
			cp, err := s.next(ctx)
			if err != nil {
				return nil
			}
			_ = s.answer(cp, blockSet{suback: true})
			sub, ok := cp.Content.(*packets.Subscribe)
			if !ok || !subscribeMatch(want, sub) {
				continue
			}
			if first == nil {
				first = sub
				tc.notef("SUBSCRIBE packet ID %d: SUBACK withheld", sub.PacketID)
				continue
			}
			var v verdict
			if sub.PacketID != first.PacketID {
				v = fail("the device sent the SUBSCRIBE again with a new packet ID %d instead of %d", sub.PacketID, first.PacketID)
			} else {
				v = pass()
			}
			return &v
		}
	})
}

// MQTT_Client_Puback_QoS1: a QoS 1 message to the device's QoS 1 subscription must be acknowledged.
func runClientPuback(ctx context.Context, tc *testCtx) verdict {
	payload := []byte("ggbroker advisor MQTT_Client_Puback_QoS1")
	if p, ok, _ := tc.cfg.String("PAYLOAD_FOR_PUBLISH_VALIDATION"); ok {
		payload = []byte(p)
	}
	if kb, ok, _ := tc.cfg.Number("PAYLOAD_SIZE"); ok {
		payload = []byte(strings.Repeat("x", int(kb*1024)))
	}
	return deliverAndAwaitPuback(ctx, tc, payload, fmt.Sprintf("%d-byte", len(payload)))
}

// MQTT_No_Ack_PingResp: PUBLISH, SUBSCRIBE and PINGREQ go unanswered; the device must notice and
// disconnect by itself (within 1.5 times its keep alive, as a broker would).
func runNoAckPingResp(ctx context.Context, tc *testCtx) verdict {
	var keepAlive uint16
	pings := 0
	var since time.Time
	return tc.sessions(ctx, func() verdict {
		if keepAlive == 0 {
			return tc.timedOut("the device connected with keep alive 0 and never checks that the connection is alive")
		}
		return tc.timedOut(fmt.Sprintf("the device kept the connection open for %s with %d PINGREQs unanswered (keep alive %d s)", formatSeconds(time.Since(since).Round(time.Second)), pings, keepAlive))
	}, func(s *session) *verdict {
		keepAlive, pings, since = s.connect.KeepAlive, 0, time.Now()
		for {
			cp, err := s.next(ctx)
			if errors.Is(err, errDeviceClosed) || err == nil && cp.Type == packets.DISCONNECT {
				took := time.Since(since)
				tc.notef("the device disconnected after %s (keep alive %d s, %d PINGREQs unanswered)", formatSeconds(took.Round(time.Millisecond)), keepAlive, pings)
				v := pass()
				switch limit := time.Duration(keepAlive) * 1500 * time.Millisecond; {
				case pings == 0:
					v = warn("the device disconnected after %s but sent no PINGREQ", formatSeconds(took.Round(time.Millisecond)))
				case keepAlive > 0 && took > limit:
					v = warn("the device disconnected after %s, later than 1.5 times its keep alive (%s), when a broker would have dropped it", formatSeconds(took.Round(time.Millisecond)), formatSeconds(limit))
				}
				return &v
			}
			if err != nil {
				return nil
			}
			if cp.Type == packets.PINGREQ {
				pings++
			}
			_ = s.answer(cp, blockSet{puback: true, suback: true, pingresp: true})
		}
	})
}

// persistentConnect checks that a CONNECT asks for a persistent session.
func persistentConnect(s *session) string {
	if s.connect.CleanStart {
		return "the device connected with a clean session (cleanSession/cleanStart = 1): no session survives its connection"
	}
	if s.codec.version == mqtt5 {
		if e := s.connect.Properties.SessionExpiryInterval; e == nil || *e == 0 {
			return "the device connected with MQTT 5 session expiry 0: its session ends with the connection"
		}
	}
	return ""
}

// subscribeToTrigger runs the first phase of the persistent session cases: a persistent CONNECT and
// a QoS 1 subscription to the trigger topic, after which the endpoint disconnects the device.
func (tc *testCtx) subscribeToTrigger(ctx context.Context, trigger string) *verdict {
	for {
		s, err := tc.acceptSession(ctx)
		if err != nil {
			v := tc.timedOut("the device did not connect")
			return &v
		}
		if why := persistentConnect(s); why != "" {
			v := fail("%s", why)
			return &v
		}
		_ = s.connack(false)
		for {
			cp, err := s.next(ctx)
			if err != nil {
				if ctx.Err() != nil {
					v := tc.timedOut("the device did not subscribe to " + trigger + " with QoS 1")
					return &v
				}
				break
			}
			_ = s.answer(cp, blockSet{})
			if sub, ok := cp.Content.(*packets.Subscribe); ok && subscribesTo(sub, trigger, 1) {
				tc.notef("subscribed to %s in a persistent session; the endpoint disconnects the device", trigger)
				s.close()
				return nil
			}
		}
	}
}

func subscribesTo(sub *packets.Subscribe, topic string, minQoS byte) bool {
	for _, o := range sub.Subscriptions {
		if o.Topic == topic && o.QoS >= minQoS {
			return true
		}
	}
	return false
}

// MQTT_Persistent_Session_Happy_Case: after the first phase the endpoint stores a QoS 1 message and
// accepts the reconnection with session present; the device must not subscribe again, and must
// receive and PUBACK the message.
func runPersistentSession(ctx context.Context, tc *testCtx) verdict {
	trigger := tcString(tc.cfg, "TRIGGER_TOPIC")
	payload := []byte("ggbroker advisor stored message")
	if p, ok, _ := tc.cfg.String("PAYLOAD"); ok {
		payload = []byte(p)
	}
	if v := tc.subscribeToTrigger(ctx, trigger); v != nil {
		return *v
	}
	for {
		s, err := tc.acceptSession(ctx)
		if err != nil {
			return tc.timedOut("the device did not reconnect")
		}
		if why := persistentConnect(s); why != "" {
			return fail("on reconnection, %s: the stored message is lost", strings.TrimPrefix(why, "the device "))
		}
		_ = s.connack(true)
		id, err := s.publish(trigger, 1, payload)
		if err != nil {
			continue
		}
		acked := false
		for {
			wait, cancel := ctx, context.CancelFunc(func() {})
			if acked {
				wait, cancel = context.WithTimeout(ctx, tc.run.opts.Settle)
			}
			cp, err := s.next(wait)
			cancel()
			if err != nil {
				if acked {
					return pass() // the settle window passed (or the device left) without a resubscription
				}
				if ctx.Err() != nil {
					return tc.timedOut(fmt.Sprintf("the device did not PUBACK the stored message (packet ID %d) on %s", id, trigger))
				}
				break // closed before its PUBACK: the session is still present on the next connection
			}
			if sub, ok := cp.Content.(*packets.Subscribe); ok && subscribesTo(sub, trigger, 0) {
				return fail("the device subscribed to %s again although the CONNACK said its session was present", trigger)
			}
			_ = s.answer(cp, blockSet{})
			if pa, ok := cp.Content.(*packets.Puback); ok && pa.PacketID == id && !acked {
				acked = true
				tc.notef("the stored message was acknowledged; watching %s for a resubscription", formatSeconds(tc.run.opts.Settle))
			}
		}
	}
}

// MQTT_Expired_Persistent_Session: after the first phase the reconnection's CONNACK says no session
// is present; the device must subscribe to the trigger topic again.
func runExpiredSession(ctx context.Context, tc *testCtx) verdict {
	trigger := tcString(tc.cfg, "TRIGGER_TOPIC")
	if v := tc.subscribeToTrigger(ctx, trigger); v != nil {
		return *v
	}
	return tc.sessions(ctx, func() verdict {
		return tc.timedOut("the device did not subscribe to " + trigger + " again after the CONNACK said its session was gone")
	}, func(s *session) *verdict {
		for {
			cp, err := s.next(ctx)
			if err != nil {
				return nil
			}
			_ = s.answer(cp, blockSet{})
			if sub, ok := cp.Content.(*packets.Subscribe); ok && subscribesTo(sub, trigger, 0) {
				v := pass()
				return &v
			}
		}
	})
}
