package broker

import (
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/profile"
	"github.com/ggbroker/ggbroker/state"
)

// TestHookHotPathDoesNotAllocate: mochi calls OnACLCheck for every message and every subscriber, and
// OnPublish for every message, in the publisher's goroutine. With the policy engine, the profile and
// the metrics, an allowed message must not allocate there.
func TestHookHotPathDoesNotAllocate(t *testing.T) {
	a, s := newTestAuthorizer(t)
	server := mqtt.New(&mqtt.Options{InlineClient: true})
	prof, err := profile.FromConfig(defaultBehaviour(t))
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{}
	h := &hook{server: server, authz: a, events: newMetrics(b), log: zap.NewNop(), profile: prof}
	cl := server.NewClient(nil, "t", "sensor-1", false)
	h.sessions.Store(cl.ID, &sessionEntry{client: cl, session: s})
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "sensor-1/temperature", Payload: []byte("21.5"), PacketID: 7}

	if !h.OnACLCheck(cl, pk.TopicName, false) {
		t.Fatal("receive denied")
	}
	if n := testing.AllocsPerRun(1000, func() { h.OnACLCheck(cl, pk.TopicName, false) }); n != 0 {
		t.Errorf("OnACLCheck (iot:Receive) allocates %v times per message", n)
	}
	if _, err := h.OnPublish(cl, pk); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = h.OnPublish(cl, pk) }); n != 0 {
		t.Errorf("OnPublish allocates %v times per message", n)
	}
}

func defaultBehaviour(t *testing.T) config.Behaviour {
	t.Helper()
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Behaviour
}

// newTestAuthorizer opens a state directory with one device (default policy) and returns the policy
// authorizer and a connected session for that device.
func newTestAuthorizer(tb testing.TB) (*authz.PolicyAuthorizer, *authz.Session) {
	tb.Helper()
	cfg, err := config.Default()
	if err != nil {
		tb.Fatal(err)
	}
	cfg.StateDir = filepath.Join(tb.TempDir(), "state")
	st, err := state.OpenState(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	dev, err := st.CreateDevice(auth.NewDevice{Thing: auth.Thing{Name: "sensor-1"}, KeyType: certs.ECDSAP256, Validity: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	parsed, err := certs.ParseCertsPEM(dev.CertPEM)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := auth.NewAuthenticator(st.Registry, st.TrustedDeviceCAs, nil).Authenticate(parsed, "sensor-1")
	if err != nil {
		tb.Fatal(err)
	}
	a, err := authz.NewPolicyAuthorizer(cfg, st.Registry, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	s := &authz.Session{Identity: id}
	if v := a.Connect(s); !v.Allowed {
		tb.Fatalf("connect denied: %s", v.Reason)
	}
	return a, s
}
