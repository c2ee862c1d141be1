// Package refdevice holds the reference devices the advisor's tests grade: small MQTT 5 clients
// written on paho.golang's packet codec whose every behaviour that Device Advisor checks (server
// certificate verification, reconnection backoff, retransmission, resubscription, PUBACK) is a
// setting, so a test can build a device that does it right and one that does it wrong.
package refdevice

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Behaviour is what a device does.
type Behaviour struct {
	// Verify checks the server's certificate chain, validity and name.
	Verify bool
	// CipherSuites offered for TLS 1.2; nil offers Go's defaults.
	CipherSuites []uint16
	// Backoff is the delay before reconnection attempt n (0 after a stable connection).
	Backoff func(n int) time.Duration
	// StableAfter: a connection that lasted this long after its CONNACK resets the backoff.
	StableAfter time.Duration
	// Retry resends an unacknowledged PUBLISH or SUBSCRIBE after this long.
	Retry time.Duration
	// RetryNewID resends with a new packet ID (and no DUP) instead of the same ID with DUP.
	RetryNewID bool
	// Resubscribe subscribes on every connection, even when the CONNACK says the session is present.
	Resubscribe bool
	// Puback acknowledges QoS 1 messages.
	Puback bool
	// KeepAlive in seconds; the device disconnects when a PINGRESP is PingTimeout late.
	KeepAlive   uint16
	PingTimeout time.Duration
	// SubscribeTopic is subscribed with QoS 1; PublishTopic gets one QoS 0 and one QoS 1 message
	// per connection.
	SubscribeTopic, PublishTopic string
}

// jitter are the factors of WellBehaved's backoff: deterministic, so a test's verdict does not
// depend on a random draw, and irregular, as jitter is.
var jitter = []float64{1.0, 0.9, 1.1, 0.85, 1.15, 0.95, 1.05, 0.9}

// WellBehaved is a device that does everything Device Advisor asks: it verifies the server, backs
// off exponentially with jitter from base up to limit and resets only after a connection that
// lasted, resends with the same packet ID and DUP, does not resubscribe a present session, and
// acknowledges what it receives.
func WellBehaved(base, limit time.Duration) Behaviour {
	return Behaviour{
		Verify:       true,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		Backoff: func(n int) time.Duration {
			d := base << min(n, 20)
			if d > limit || d <= 0 {
				d = limit
			}
			return time.Duration(float64(d) * jitter[n%len(jitter)])
		},
		StableAfter: 200 * time.Millisecond,
		Retry:       100 * time.Millisecond,
		Puback:      true,
		KeepAlive:   1, PingTimeout: 200 * time.Millisecond,
		SubscribeTopic: "ref/trigger", PublishTopic: "ref/data",
	}
}

// Naive is the device Device Advisor exists to catch: it skips server verification, retries at a
// constant interval, resends with a new packet ID, resubscribes every time and never PUBACKs.
func Naive(interval time.Duration) Behaviour {
	return Behaviour{
		Backoff:     func(int) time.Duration { return interval },
		StableAfter: 200 * time.Millisecond,
		Retry:       100 * time.Millisecond, RetryNewID: true,
		Resubscribe: true,
		KeepAlive:   1, PingTimeout: 200 * time.Millisecond,
		SubscribeTopic: "ref/trigger", PublishTopic: "ref/data",
	}
}

// Device is a device under test pointed at an endpoint.
type Device struct {
	Addr       string // host:port to dial
	ServerName string // name checked in the server certificate
	RootCAs    *x509.CertPool
	Cert       tls.Certificate
	ClientID   string
	B          Behaviour

	mu          sync.Mutex
	id          uint16
	Connections int // TCP connections made, for tests
}

func (d *Device) nextID() uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.id++
	if d.id == 0 {
		d.id = 1
	}
	return d.id
}

// Run connects, and reconnects with the behaviour's backoff, until ctx ends.
func (d *Device) Run(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		lived := d.connectOnce(ctx)
		if lived >= d.B.StableAfter {
			attempt = 0
		}
		delay := d.B.Backoff(attempt)
		attempt++
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

type inflight struct {
	cp   *packets.ControlPacket
	sent time.Time
}

// connectOnce makes one connection and returns how long it lasted after its CONNACK (0 without one).
func (d *Device) connectOnce(ctx context.Context) time.Duration {
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	raw, err := dialer.DialContext(ctx, "tcp", d.Addr)
	if err != nil {
		return 0
	}
	d.mu.Lock()
	d.Connections++
	d.mu.Unlock()
	conn := tls.Client(raw, &tls.Config{
		ServerName: d.ServerName, RootCAs: d.RootCAs, InsecureSkipVerify: !d.B.Verify, //nolint:gosec // the naive device is meant to skip it
		Certificates: []tls.Certificate{d.Cert}, CipherSuites: d.B.CipherSuites, MinVersion: tls.VersionTLS12,
	})
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.HandshakeContext(ctx); err != nil {
		return 0
	}
	_ = conn.SetDeadline(time.Time{})
	wmu := sync.Mutex{}
	send := func(cp *packets.ControlPacket) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := cp.WriteTo(conn)
		return err
	}
	connect := packets.NewControlPacket(packets.CONNECT)
	c := connect.Content.(*packets.Connect)
	c.ClientID, c.KeepAlive, c.CleanStart = d.ClientID, d.B.KeepAlive, false
	expiry := uint32(3600)
	c.Properties.SessionExpiryInterval = &expiry
	if send(connect) != nil {
		return 0
	}
	in := make(chan *packets.ControlPacket, 16)
	go func() {
		defer close(in)
		for {
			cp, err := packets.ReadPacket(conn)
			if err != nil {
				return
			}
			in <- cp
		}
	}()
	var connackAt time.Time
	lived := func() time.Duration {
		if connackAt.IsZero() {
			return 0
		}
		return time.Since(connackAt)
	}
	select {
	case cp, ok := <-in:
		if !ok || cp.Type != packets.CONNACK {
			return 0
		}
		connackAt = time.Now()
		ack := cp.Content.(*packets.Connack)
		if ack.ReasonCode != 0 {
			return 0
		}
		var pubs, subs []*inflight
		if !ack.SessionPresent || d.B.Resubscribe {
			sub := packets.NewControlPacket(packets.SUBSCRIBE)
			s := sub.Content.(*packets.Subscribe)
			s.PacketID = d.nextID()
			s.Subscriptions = []packets.SubOptions{{Topic: d.B.SubscribeTopic, QoS: 1}}
			if send(sub) != nil {
				return lived()
			}
			subs = append(subs, &inflight{sub, time.Now()})
		}
		for qos := byte(0); qos <= 1; qos++ {
			pub := packets.NewControlPacket(packets.PUBLISH)
			p := pub.Content.(*packets.Publish)
			p.Topic, p.QoS, p.Payload = d.B.PublishTopic, qos, []byte(`{"hello":"advisor"}`)
			if qos == 1 {
				p.PacketID = d.nextID()
				pubs = append(pubs, &inflight{pub, time.Now()})
			}
			if send(pub) != nil {
				return lived()
			}
		}
		return d.loop(ctx, in, send, pubs, subs, lived)
	case <-ctx.Done():
		return 0
	}
}

func (d *Device) loop(ctx context.Context, in <-chan *packets.ControlPacket, send func(*packets.ControlPacket) error, pubs, subs []*inflight, lived func() time.Duration) time.Duration {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lastPing := time.Now()
	var pingSent time.Time
	for {
		select {
		case <-ctx.Done():
			return lived()
		case cp, ok := <-in:
			if !ok {
				return lived()
			}
			switch p := cp.Content.(type) {
			case *packets.Publish:
				if p.QoS == 1 && d.B.Puback {
					ack := packets.NewControlPacket(packets.PUBACK)
					ack.Content.(*packets.Puback).PacketID = p.PacketID
					_ = send(ack)
				}
			case *packets.Puback:
				pubs = drop(pubs, p.PacketID)
			case *packets.Suback:
				subs = drop(subs, p.PacketID)
			case *packets.Pingresp:
				pingSent = time.Time{}
			case *packets.Disconnect:
				return lived()
			}
		case now := <-tick.C:
			for _, f := range append(append([]*inflight(nil), pubs...), subs...) {
				if now.Sub(f.sent) < d.B.Retry {
					continue
				}
				f.sent = now
				switch p := f.cp.Content.(type) {
				case *packets.Publish:
					if d.B.RetryNewID {
						p.PacketID = d.nextID()
					} else {
						p.Duplicate = true
					}
				case *packets.Subscribe:
					if d.B.RetryNewID {
						p.PacketID = d.nextID()
					}
				}
				if send(f.cp) != nil {
					return lived()
				}
			}
			if !pingSent.IsZero() && now.Sub(pingSent) >= d.B.PingTimeout {
				return lived() // no PINGRESP: the connection is dead; close it
			}
			if d.B.KeepAlive > 0 && pingSent.IsZero() && now.Sub(lastPing) >= time.Duration(d.B.KeepAlive)*time.Second {
				if send(packets.NewControlPacket(packets.PINGREQ)) != nil {
					return lived()
				}
				lastPing, pingSent = now, now
			}
		}
	}
}

func drop(fs []*inflight, id uint16) []*inflight {
	out := fs[:0]
	for _, f := range fs {
		if f.cp.PacketID() != id {
			out = append(out, f)
		}
	}
	return out
}
