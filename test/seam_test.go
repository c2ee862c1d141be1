package test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/service"
)

// echoService is a device service made for this test: it answers "ask/<thing>" to the asker only on
// "answer/<thing>", consumes the request, stores it, broadcasts on "bcast/<thing>" when asked to, and
// refuses anything on "fail/#". It exercises every seam method a real service uses.
type echoService struct {
	host  service.Host
	store service.Store
	seen  chan *service.Message // what its handler saw of the others' publishes
}

func (e *echoService) Name() string { return "echo" }
func (e *echoService) Stop() error  { return nil }

func (e *echoService) Start(_ context.Context, h service.Host) error {
	e.host = h
	st, err := h.Store("echo")
	if err != nil {
		return err
	}
	e.store = st
	if err := h.Handle("ask/+", e.ask); err != nil {
		return err
	}
	if err := h.Handle("fail/#", func(context.Context, *service.Message) error { return errors.New("refused by echo") }); err != nil {
		return err
	}
	return h.Handle("watch/#", func(_ context.Context, m *service.Message) error { e.seen <- m; return nil })
}

func (e *echoService) ask(_ context.Context, m *service.Message) error {
	thing := strings.TrimPrefix(m.Topic, "ask/")
	if m.From == nil || m.From.ThingName != thing {
		return fmt.Errorf("ask from %v for %s", m.From, thing)
	}
	if err := e.store.Put(thing, m.Payload); err != nil {
		return err
	}
	if v := e.host.Authorize(m.From, "iot:Publish", "topic/watch/"+thing); !v.Allowed {
		return fmt.Errorf("authorize: %s", v.Reason)
	}
	if string(m.Payload) == "broadcast" {
		if err := e.host.Publish(service.Message{Topic: "watch/" + thing, Payload: []byte("from echo"), QoS: 1}); err != nil {
			return err
		}
		if err := e.host.Publish(service.Message{Topic: "watch/" + thing + "/qos0", Payload: []byte("at most once")}); err != nil {
			return err // a QoS 0 publish (packet ID 0) used to be refused as a protocol error
		}
	}
	err := e.host.SendTo(m.From, service.Message{Topic: "answer/" + thing, Payload: m.Payload, QoS: 1}, service.SendOptions{RequireSubscription: true})
	if err != nil {
		return err
	}
	return service.Consumed
}

// TestServiceSeam: a service gets devices' allowed messages with their identity before the PUBACK,
// answers only the asker, stores durably, publishes to every allowed subscriber (and other handlers
// see its messages with its origin), and a handler's error refuses the message.
func TestServiceSeam(t *testing.T) {
	echo := &echoService{seen: make(chan *service.Message, 10)}
	h := startBroker(t, nil, broker.WithServices(func(service.Deps) (service.Service, error) { return echo, nil }))
	a, b := h.createDevice("dev-a"), h.createDevice("dev-b")

	gotA := make(chan string, 10)
	_, ca, err := h.connectV5(a, "dev-a", func(p paho.PublishReceived) { gotA <- p.Packet.Topic + " " + string(p.Packet.Payload) })
	if err != nil {
		t.Fatal(err)
	}
	cb := h.mustConnectV3(b)
	gotB := subscribeV3(t, cb, "#", 1)
	subscribeV5(t, ca, "answer/dev-a", "watch/#")

	if code := publishV5(t, ca, "ask/dev-a", 1, "hello"); code != 0 {
		t.Fatalf("PUBACK 0x%02x for a handled request", code)
	}
	expectMessage(t, chanOf(gotA), "answer/dev-a hello")
	expectNoMessage(t, gotB, cb, "marker/b") // neither the consumed request nor the answer reached dev-b
	if v, err := echo.store.Get("dev-a"); err != nil || string(v) != "hello" {
		t.Fatalf("stored %q, %v", v, err)
	}

	publishV5(t, ca, "ask/dev-a", 1, "broadcast")
	for _, want := range []string{"watch/dev-a from echo", "watch/dev-a/qos0 at most once", "answer/dev-a broadcast"} {
		expectMessage(t, chanOf(gotA), want)
	}
	expectMessage(t, gotB, "watch/dev-a from echo")
	expectMessage(t, gotB, "watch/dev-a/qos0 at most once")
	select {
	case m := <-echo.seen:
		if m.Origin != "echo" || m.From != nil {
			t.Fatalf("the service's own message reached its handler as origin %q from %v", m.Origin, m.From)
		}
	case <-time.After(waitFor):
		t.Fatal("the watch handler did not see the service's publish")
	}

	if code := publishV5(t, ca, "fail/x", 1, "no"); code != 0x80 {
		t.Fatalf("PUBACK 0x%02x for a message a service refused, want 0x80", code)
	}
	expectNoMessage(t, gotB, cb, "marker/b2")
	h.record(t, "message refused by a service", map[string]string{"service": "echo", "topicName": "fail/x", "reason": "SERVICE_ERROR"})
}

// chanOf adapts a channel for expectMessage.
func chanOf(c chan string) <-chan string { return c }

// certWatcher is a service that only listens for refused certificates (Host.OnUnknownCertificate).
type certWatcher struct{ seen chan string }

func (w *certWatcher) Name() string { return "cert-watcher" }
func (w *certWatcher) Stop() error  { return nil }
func (w *certWatcher) Start(_ context.Context, h service.Host) error {
	h.OnUnknownCertificate(func(chain []*x509.Certificate) { w.seen <- certs.Fingerprint(chain[0]) })
	return nil
}

// TestUnknownCertificateSeam: a service registered with OnUnknownCertificate is told of the chain of
// a connection refused for a certificate the registry does not know or holds as not ACTIVE (what
// just-in-time registration needs), before the CONNACK, and of no other refusal.
func TestUnknownCertificateSeam(t *testing.T) {
	w := &certWatcher{seen: make(chan string, 10)}
	h := startBroker(t, nil, broker.WithServices(func(service.Deps) (service.Service, error) { return w, nil }))
	st := h.broker.State()
	otherCA, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "a CA only a JITP rig knows", KeyType: certs.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	inactive := h.createDevice("inactive-1")
	if err := st.Registry.SetCertificateStatus(inactive.certID, auth.StatusInactive); err != nil {
		t.Fatal(err)
	}
	registered := h.createDevice("sensor-1")
	for _, tc := range []struct {
		name     string
		d        *device
		clientID string
		told     bool
	}{
		{"not registered, device CA", issueOdd(t, st.DeviceCA, "unregistered-1", nil), "unregistered-1", true},
		{"not registered, unknown CA", issueOdd(t, otherCA, "jitp-1", nil), "jitp-1", true},
		{"registered, INACTIVE", inactive, "inactive-1", true},
		{"registered, ACTIVE, wrong client ID", registered, "someone-else", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := h.connectV3(tc.d, tc.clientID); err == nil {
				t.Fatal("connected")
			}
			// The CONNACK came after the handlers ran: what they were told is in the channel by now.
			select {
			case got := <-w.seen:
				if !tc.told || got != tc.d.certID {
					t.Errorf("told of %s; want told %v, of %s", got, tc.told, tc.d.certID)
				}
			default:
				if tc.told {
					t.Error("the service was not told of the refused certificate")
				}
			}
		})
	}
}
