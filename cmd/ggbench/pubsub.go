package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Shapes of a publish/subscribe scenario. In fan-in and fan-out every subscriber subscribes to every
// publisher's topics (bench/#), so each message is expected once per subscriber; they differ in their
// default counts (many publishers and one subscriber, or the reverse). In pairs, subscriber i
// subscribes to publisher i's topics only.
const (
	shapeFanIn  = "fanin"
	shapeFanOut = "fanout"
	shapePairs  = "pairs"
)

// pubsubOptions are the parameters of a publish/subscribe scenario.
type pubsubOptions struct {
	shape       string
	publishers  int
	subscribers int
	qos         byte
	size        int
	topics      int           // topics per publisher
	duration    time.Duration // how long publishers publish
	count       int           // messages per publisher; 0: as many as fit in duration
	rate        float64       // messages per second per publisher; 0: as fast as the broker takes them
	inflight    int           // publishes in flight per publisher (QoS 1: awaiting PUBACK)
	drain       time.Duration // longest wait for the last deliveries after publishing stops
	maxSamples  int           // latency samples kept per subscriber
}

// header is the start of every payload: a magic, the run's ID, the publish time and a sequence number.
const headerLen = 4 + 4 + 8 + 8

var magic = [4]byte{'g', 'g', 'b', '1'}

// subscriber counts what one subscriber receives and the latency of each message.
type subscriber struct {
	runID    uint32
	received atomic.Int64
	last     atomic.Int64 // unix nanos of the last delivery
	mu       sync.Mutex
	samples  []time.Duration
	max      int
	seen     int64
}

// got counts one delivered payload.
func (s *subscriber) got(p []byte) {
	now := time.Now()
	if len(p) < headerLen || [4]byte(p[:4]) != magic || binary.BigEndian.Uint32(p[4:]) != s.runID {
		return
	}
	sent := int64(binary.BigEndian.Uint64(p[8:]))
	s.received.Add(1)
	s.last.Store(now.UnixNano())
	s.mu.Lock()
	// Reservoir sampling: a uniform sample of at most max latencies over the whole run.
	s.seen++
	if len(s.samples) < s.max {
		s.samples = append(s.samples, time.Duration(now.UnixNano()-sent))
	} else if j := rand.Int64N(s.seen); j < int64(s.max) {
		s.samples[j] = time.Duration(now.UnixNano() - sent)
	}
	s.mu.Unlock()
}

// runPubSub runs one publish/subscribe scenario.
func runPubSub(ctx context.Context, t *target, creds *credentials, scenario string, o pubsubOptions) Result {
	r := Result{Scenario: scenario, Kind: "pubsub", Transport: t.transport(), Shape: o.shape, Publishers: o.publishers,
		Subscribers: o.subscribers, QoS: int(o.qos), PayloadBytes: max(o.size, headerLen), TopicsPerPublisher: o.topics}
	ctx, cancel := context.WithTimeout(ctx, t.maxDuration)
	defer cancel()
	r.RSSBeforeKiB = t.rss()
	var errs errorLog
	var emu sync.Mutex
	fail := func(err error) {
		emu.Lock()
		errs.add(err)
		emu.Unlock()
	}
	defer errs.fill(&r)

	var rid [4]byte
	_, _ = crand.Read(rid[:])
	runID := binary.BigEndian.Uint32(rid[:])

	var clients []benchClient
	defer func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(c.close)
		}
		wg.Wait()
	}()

	// Subscribers first, each subscribed (SUBACK granted) before anyone publishes.
	subs := make([]*subscriber, o.subscribers)
	subClients := make([]benchClient, o.subscribers)
	var wg sync.WaitGroup
	for i := range o.subscribers {
		s := &subscriber{runID: runID, max: o.maxSamples}
		subs[i] = s
		dev := o.publishers + i
		filter := "bench/#"
		if o.shape == shapePairs {
			filter = "bench/" + creds.devices[i%o.publishers].name + "/#"
		}
		wg.Go(func() {
			c, err := t.connectBench(creds, dev, s.got)
			if err != nil {
				fail(fmt.Errorf("subscriber %s: %w", creds.devices[dev].name, err))
				return
			}
			subClients[i] = c
			if err := c.subscribe(filter, o.qos, t.timeout); err != nil {
				fail(fmt.Errorf("subscriber %s: %w", creds.devices[dev].name, err))
			}
		})
	}
	wg.Wait()
	pubClients := make([]benchClient, o.publishers)
	for i := range o.publishers {
		wg.Go(func() {
			c, err := t.connectBench(creds, i, nil)
			if err != nil {
				fail(fmt.Errorf("publisher %s: %w", creds.devices[i].name, err))
				return
			}
			pubClients[i] = c
		})
	}
	wg.Wait()
	for _, c := range append(subClients, pubClients...) {
		if c != nil {
			clients = append(clients, c)
		}
	}
	if errs.n > 0 || ctx.Err() != nil {
		r.TimedOut = ctx.Err() != nil
		return r
	}

	// Publish.
	// With a message count, the duration is only a bound (--max-duration).
	pubLimit := o.duration
	if o.count > 0 {
		pubLimit = t.maxDuration
	}
	pubCtx, stopPub := context.WithTimeout(ctx, pubLimit)
	defer stopPub()
	sentBy := make([]int64, o.publishers)
	start := time.Now()
	for i, c := range pubClients {
		wg.Go(func() {
			n, err := c.publish(pubCtx, "bench/"+creds.devices[i].name, runID, o, t.timeout)
			sentBy[i] = n
			if err != nil {
				fail(fmt.Errorf("publisher %s: %w", creds.devices[i].name, err))
			}
		})
	}
	wg.Wait()
	pubElapsed := time.Since(start)

	// Every subscriber expects every message in fan-in and fan-out, and its publisher's in pairs.
	var sent, expected int64
	for _, n := range sentBy {
		sent += n
	}
	for i := range subs {
		if o.shape == shapePairs {
			expected += sentBy[i%o.publishers]
		} else {
			expected += sent
		}
	}

	// Drain: wait until every expected delivery arrived, nothing arrived for a second, or drain ends.
	received := func() int64 {
		var n int64
		for _, s := range subs {
			n += s.received.Load()
		}
		return n
	}
	drainEnd := time.Now().Add(o.drain)
	lastN, lastChange := received(), time.Now()
	for time.Now().Before(drainEnd) && ctx.Err() == nil {
		n := received()
		if n >= expected {
			break
		}
		if n != lastN {
			lastN, lastChange = n, time.Now()
		} else if time.Since(lastChange) > time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.RSSKiB = t.rss()

	var lastRecv int64
	var samples []time.Duration
	for _, s := range subs {
		lastRecv = max(lastRecv, s.last.Load())
		s.mu.Lock()
		samples = append(samples, s.samples...)
		s.mu.Unlock()
	}
	recvElapsed := pubElapsed
	if lastRecv > 0 {
		recvElapsed = max(recvElapsed, time.Unix(0, lastRecv).Sub(start))
	}
	r.Sent = sent
	r.Expected = expected
	r.Received = received()
	r.SentPerSec = round2(float64(r.Sent) / pubElapsed.Seconds())
	r.RecvPerSec = round2(float64(r.Received) / recvElapsed.Seconds())
	r.LossPct = LossPct(r.Expected, r.Received)
	r.Latency = Summarize(samples)
	r.ElapsedSec = round2(recvElapsed.Seconds())
	r.TimedOut = ctx.Err() != nil
	return r
}

// benchClient is one publisher's or subscriber's connection: paho's client, or raw packets (--raw).
type benchClient interface {
	subscribe(filter string, qos byte, timeout time.Duration) error
	publish(ctx context.Context, topicBase string, runID uint32, o pubsubOptions, timeout time.Duration) (int64, error)
	close()
}

// connectBench connects device i with paho, or with rawConnect under --raw. onMsg, if not nil, gets
// every payload delivered to it.
func (t *target) connectBench(creds *credentials, i int, onMsg func([]byte)) (benchClient, error) {
	if t.raw {
		return t.rawConnect(creds, i, onMsg)
	}
	var h mqtt.MessageHandler
	if onMsg != nil {
		h = func(_ mqtt.Client, m mqtt.Message) { onMsg(m.Payload()) }
	}
	c, err := t.pahoConnect(creds, i, h)
	if err != nil {
		return nil, err
	}
	return pahoClient{c}, nil
}

// pahoClient is a benchClient on paho.
type pahoClient struct{ c mqtt.Client }

func (p pahoClient) close() { p.c.Disconnect(250) }

func (p pahoClient) subscribe(filter string, qos byte, timeout time.Duration) error {
	tok := p.c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(timeout) {
		return errors.New("SUBACK timed out")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[filter] >= 0x80 {
		return fmt.Errorf("subscribe %s refused (SUBACK 0x%02x)", filter, st.Result()[filter])
	}
	return nil
}

// publish publishes on topic/t0..t(topics-1) in turn until ctx ends or count messages are sent,
// keeping at most inflight publishes unacknowledged. It returns how many publishes completed.
func (p pahoClient) publish(ctx context.Context, topicBase string, runID uint32, o pubsubOptions, timeout time.Duration) (int64, error) {
	c := p.c
	topics := make([]string, max(o.topics, 1))
	for i := range topics {
		topics[i] = fmt.Sprintf("%s/t%d", topicBase, i)
	}
	size := max(o.size, headerLen)
	tokens := make(chan mqtt.Token, max(o.inflight, 1))
	var done int64
	var werr error
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		for tok := range tokens {
			if !tok.WaitTimeout(timeout) {
				if werr == nil {
					werr = errors.New("publish not acknowledged in time")
				}
				continue
			}
			if err := tok.Error(); err != nil {
				if werr == nil {
					werr = err
				}
				continue
			}
			done++
		}
	}()
	pace := newPacer(o.rate)
	for seq := uint64(0); o.count == 0 || seq < uint64(o.count); seq++ {
		if ctx.Err() != nil {
			break
		}
		_ = pace.wait(ctx, nil)
		p := make([]byte, size)
		copy(p, magic[:])
		binary.BigEndian.PutUint32(p[4:], runID)
		binary.BigEndian.PutUint64(p[8:], uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint64(p[16:], seq)
		// The waiter takes every token within timeout, so this send never blocks for long.
		tokens <- c.Publish(topics[seq%uint64(len(topics))], o.qos, false, p)
	}
	close(tokens)
	<-waited
	return done, werr
}

// pahoConnect connects device i with paho (MQTT 3.1.1, clean session, no reconnects). onMessage, if
// not nil, receives every message.
func (t *target) pahoConnect(creds *credentials, i int, onMessage mqtt.MessageHandler) (mqtt.Client, error) {
	scheme := "ssl://"
	if t.plain {
		scheme = "tcp://"
	}
	o := mqtt.NewClientOptions().
		AddBroker(scheme + t.addr).
		SetClientID(creds.devices[i].name).
		SetCleanSession(true).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(t.timeout).
		SetWriteTimeout(t.timeout).
		SetMessageChannelDepth(4096).
		SetOrderMatters(true)
	if cfg := creds.tlsConfig(i, t.plain); cfg != nil {
		o.SetTLSConfig(cfg)
	}
	if onMessage != nil {
		o.SetDefaultPublishHandler(onMessage)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(t.timeout + time.Second) {
		c.Disconnect(0)
		return nil, errors.New("CONNECT timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// pacer spaces a publisher's messages at a rate per second; a rate of 0 does not pace.
type pacer struct {
	interval time.Duration
	next     time.Time
}

func newPacer(rate float64) *pacer {
	p := &pacer{next: time.Now()}
	if rate > 0 {
		p.interval = time.Duration(float64(time.Second) / rate)
	}
	return p
}

// paced reports whether the pacer spaces messages at all.
func (p *pacer) paced() bool { return p.interval > 0 }

// wait waits for the next message's slot, or for ctx. beforeSleep, if not nil, runs first when
// there is a wait (a raw publisher writes its batch then); its error is returned without waiting.
func (p *pacer) wait(ctx context.Context, beforeSleep func() error) error {
	if p.interval <= 0 {
		return nil
	}
	p.next = p.next.Add(p.interval)
	d := time.Until(p.next)
	if d <= 0 {
		return nil
	}
	if beforeSleep != nil {
		if err := beforeSleep(); err != nil {
			return err
		}
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	return nil
}
