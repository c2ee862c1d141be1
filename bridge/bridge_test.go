package bridge

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	p3 "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/service"
)

// fakeHost is the broker's side of the seam, small: handlers and what the service published.
type fakeHost struct {
	mu        sync.Mutex
	handlers  map[string]service.Handler
	published chan service.Message
	log       *zap.Logger
}

func newFakeHost(log *zap.Logger) *fakeHost {
	return &fakeHost{handlers: map[string]service.Handler{}, published: make(chan service.Message, 100), log: log}
}

func (h *fakeHost) Handle(filter string, hd service.Handler) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handlers[filter] = hd
	return nil
}

// devicePublish runs the handlers as the broker does for a device's message.
func (h *fakeHost) devicePublish(t *testing.T, m service.Message) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for f, hd := range h.handlers {
		if service.TopicMatches(f, m.Topic) {
			if err := hd(context.Background(), &m); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (h *fakeHost) Publish(m service.Message) error {
	m.Origin = Name
	h.published <- m
	return nil
}
func (h *fakeHost) SendTo(*service.Client, service.Message, service.SendOptions) error { return nil }
func (h *fakeHost) Authorize(*service.Client, string, string) authz.Verdict            { return authz.Verdict{} }
func (h *fakeHost) Store(string) (service.Store, error)                                { return nil, errors.New("no store") }
func (h *fakeHost) HandleAPI(string, string, http.Handler) error                       { return nil }
func (h *fakeHost) HandleDevice(string, http.Handler) error                            { return nil }
func (h *fakeHost) Clients() []*service.Client                                         { return nil }
func (h *fakeHost) Disconnect(*service.Client, string) error                           { return nil }
func (h *fakeHost) OnUnknownCertificate(func([]*x509.Certificate))                     {}
func (h *fakeHost) Metrics() prometheus.Registerer                                     { return prometheus.NewRegistry() }
func (h *fakeHost) Upstream() service.Upstream                                         { return nil }
func (h *fakeHost) Log() *zap.Logger                                                   { return h.log }

// fake311 is an MQTT 3.1.1-only upstream: it answers an MQTT 5 CONNECT with a 3.1.1 CONNACK
// "unacceptable protocol version", acknowledges publishes (closing the connection instead on the topic
// "poison", as AWS IoT Core does for a publish the policy denies), and publishes "cmd/x" to a
// subscriber.
type fake311 struct {
	ln       net.Listener
	versions chan byte
	got      chan string
}

func newFake311(t *testing.T, pki *testPKI) *fake311 {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.server)
	if err != nil {
		t.Fatal(err)
	}
	f := &fake311{ln: ln, versions: make(chan byte, 100), got: make(chan string, 100)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fake311) serve(c net.Conn) {
	defer c.Close()
	raw, body, err := readRawPacket(c)
	if err != nil || len(raw) < 9 {
		return
	}
	version := body[6]
	f.versions <- version
	if version != 4 {
		_, _ = c.Write([]byte{0x20, 0x02, 0x00, 0x01})
		return
	}
	if _, err := p3.ReadPacket(bytes.NewReader(raw)); err != nil {
		return
	}
	ca := p3.NewControlPacket(p3.Connack).(*p3.ConnackPacket)
	if err := ca.Write(c); err != nil {
		return
	}
	for {
		cp, err := p3.ReadPacket(c)
		if err != nil {
			return
		}
		switch p := cp.(type) {
		case *p3.PublishPacket:
			if p.TopicName == "poison" {
				return
			}
			f.got <- p.TopicName + " " + string(p.Payload)
			a := p3.NewControlPacket(p3.Puback).(*p3.PubackPacket)
			a.MessageID = p.MessageID
			_ = a.Write(c)
		case *p3.SubscribePacket:
			sa := p3.NewControlPacket(p3.Suback).(*p3.SubackPacket)
			sa.MessageID, sa.ReturnCodes = p.MessageID, []byte{1}
			_ = sa.Write(c)
			pub := p3.NewControlPacket(p3.Publish).(*p3.PublishPacket)
			pub.TopicName, pub.Qos, pub.MessageID, pub.Payload, pub.Retain = "cmd/x", 1, 7, []byte("go"), true
			_ = pub.Write(c)
		case *p3.PingreqPacket:
			_ = p3.NewControlPacket(p3.Pingresp).Write(c)
		}
	}
}

// TestBridgeFallsBackToMQTT311: an upstream that refuses MQTT 5 gets MQTT 3.1.1; both directions work
// over it, and a message on which the upstream closes the connection each time is dropped after
// poisonAfter attempts instead of holding up the ones behind it.
func TestBridgeFallsBackToMQTT311(t *testing.T) {
	pki := newTestPKI(t)
	up := newFake311(t, pki)
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	b := &Bridge{
		log: log, stateDir: t.TempDir(), keepAlive: time.Minute,
		set: &settings{
			Routes: []route{
				{Name: "Up", Mapping: Mapping{Topic: "#", Source: LocalMqtt, Target: IotCore}},
				{Name: "Down", Mapping: Mapping{Topic: "cmd/#", Source: IotCore, Target: LocalMqtt, TargetTopicPrefix: "cloud/"}},
			},
			Spool: SpoolConfig{MaxMessages: 100, MaxBytes: 1 << 20}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
			Upstream: &upstreamConfig{Address: up.ln.Addr().String(), Host: "localhost", ClientID: "core", TLS: pki.client},
		},
	}
	host := newFakeHost(log)
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Start(ctx, host); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
	}()
	for _, want := range []byte{5, 4} {
		select {
		case v := <-up.versions:
			if v != want {
				t.Fatalf("CONNECT protocol level %d, want %d", v, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no CONNECT at level %d", want)
		}
	}
	select {
	case m := <-host.published:
		// Retain only with retainAsPublished.
		if m.Topic != "cloud/cmd/x" || string(m.Payload) != "go" || m.QoS != 1 || m.Retain || m.Origin != Name {
			t.Fatalf("published locally %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream's message was not published locally")
	}
	host.devicePublish(t, service.Message{Topic: "a/1", Payload: []byte("one")})
	host.devicePublish(t, service.Message{Topic: "poison", Payload: []byte("x")})
	host.devicePublish(t, service.Message{Topic: "a/2", Payload: []byte("two")})
	host.devicePublish(t, service.Message{Topic: "cloud/cmd/x", Payload: []byte("came down"), Origin: Name}) // not back up
	host.devicePublish(t, service.Message{Topic: "a/3", Payload: []byte("three")})
	// In order; a message may come twice (QoS 1 is at least once: the upstream's close can cut off a
	// PUBACK already sent).
	wants := []string{"a/1 one", "a/2 two", "a/3 three"}
	for i := 0; i < len(wants); {
		select {
		case got := <-up.got:
			switch {
			case got == wants[i]:
				i++
			case i > 0 && got == wants[i-1]:
			default:
				t.Fatalf("upstream got %q, want %q", got, wants[i])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("upstream did not get %q", wants[i])
		}
	}
	if n := logs.FilterMessage("upstream closed the connection on this message each time; dropped").Len(); n != 1 {
		t.Fatalf("%d poison records", n)
	}
	if n := logs.FilterMessage("upstream refused MQTT 5; trying MQTT 3.1.1").Len(); n != 1 {
		t.Fatalf("fallback logged %d times; MQTT 5 should not be tried again after a protocol refusal", n)
	}
}

// TestWindow: AWS IoT Core gets its documented 100 in-flight messages whatever its CONNACK says, as
// does an MQTT 3.1.1 upstream; another MQTT 5 broker gets its Receive Maximum, up to 1024.
func TestWindow(t *testing.T) {
	cases := []struct {
		host       string
		version    byte
		receiveMax int
		want       int
	}{
		{"abc123-ats.iot.eu-west-1.amazonaws.com", mqtt5, 65535, 100},
		{"abc123-ats.iot.cn-north-1.amazonaws.com.cn", mqtt5, 65535, 100},
		{"ABC-ATS.IOT.US-EAST-1.AMAZONAWS.COM.", mqtt5, 65535, 100},
		{"abc123-ats.iot.eu-west-1.amazonaws.com", mqtt5, 20, 20},
		{"broker.example.com", mqtt5, 65535, 1024},
		{"broker.example.com", mqtt5, 500, 500},
		{"broker.example.com", mqtt311, 65535, 100},
		{"localhost", mqtt5, 0, 1},
	}
	for _, tc := range cases {
		b := &Bridge{set: &settings{Upstream: &upstreamConfig{Host: tc.host}}}
		if got := b.window(&session{version: tc.version, receiveMax: tc.receiveMax}); got != tc.want {
			t.Errorf("%s, MQTT %d, Receive Maximum %d: window %d, want %d", tc.host, tc.version, tc.receiveMax, got, tc.want)
		}
	}
}
