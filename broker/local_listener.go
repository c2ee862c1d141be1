package broker

import (
	"fmt"
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/config"
)

// localListenerID is the mochi listener ID of the optional plain-TCP loopback listener.
const localListenerID = "mqtt-local"

// localClients is the local listener's one identity: every client on it is the configured anonymous
// principal, whatever client ID it sends. The listener binds loopback only (config refuses anything
// else), so "local" means a process on this machine: the risk is any local user's process, which is
// why the identity gets its own policy.
type localClients struct {
	name   string
	record *auth.Certificate // marks the identity for localAuthorizer; never in the registry
	authz  *authz.Local
}

func newLocalClients(ll config.LocalListener) *localClients {
	return &localClients{name: ll.Anonymous, record: &auth.Certificate{Status: auth.StatusActive, Policies: []string{ll.Policy}}}
}

// identity is the identity a local client gets: no certificate (and so no restore of its persistent
// session after a restart: hooks.restore needs a certificate ID).
func (l *localClients) identity(clientID string) *auth.Identity {
	return &auth.Identity{ClientID: clientID, Record: l.record, Thing: &auth.Thing{Name: l.name}}
}

// identify is OnConnect's "who is this?": the configured anonymous identity on the local listener, the
// TLS client certificate (checked against the registry) everywhere else.
func (h *hook) identify(cl *mqtt.Client) (*auth.Identity, error) {
	if h.local != nil && cl.Net.Listener == localListenerID {
		return h.local.identity(cl.ID), nil
	}
	tc, ok := cl.Net.Conn.(tlsState)
	if !ok {
		return nil, &auth.Refusal{Reason: auth.ReasonNoCertificate, Details: "connection is not TLS", BadCredentials: true}
	}
	return h.authn.Authenticate(tc.ConnectionState().PeerCertificates, cl.ID)
}

// setupLocalListener binds the local listener (config validation has refused a non-loopback address)
// and loads its policy, so that both fail before Run.
func (b *Broker) setupLocalListener() error {
	ll := b.cfg.LocalListener
	if !ll.Enabled {
		return nil
	}
	if err := config.CheckLoopback(ll.Listen); err != nil {
		return fmt.Errorf("localListener.listen: %w", err)
	}
	b.local = newLocalClients(ll)
	la, err := authz.NewLocal(b.authz, b.local.record, b.local.name, b.cfg, b.log)
	if err != nil {
		return err
	}
	b.local.authz = la
	if b.localLn, err = net.Listen("tcp", ll.Listen); err != nil {
		return fmt.Errorf("localListener.listen %s: %w", ll.Listen, err)
	}
	b.log.Warn("local listener on: plain MQTT without TLS or client authentication; every client on it is the anonymous identity",
		zap.String("listen", b.localLn.Addr().String()), zap.String("anonymous", ll.Anonymous), zap.String("policy", ll.Policy))
	return nil
}

// LocalAddr is the local listener's address, nil when it is off.
func (b *Broker) LocalAddr() net.Addr {
	if b.localLn == nil {
		return nil
	}
	return b.localLn.Addr()
}

// addLocalListener puts the local listener's identity and authorizer in front of the hook's (local
// clients get the anonymous identity and its policy; every other client passes through) and adds its
// mochi listener. Nothing when the local listener is off.
func (b *Broker) addLocalListener() error {
	if b.local == nil {
		return nil
	}
	b.hook.local = b.local
	b.hook.authz = b.local.authz
	l := newTLSListener(localListenerID, b.localLn, nil, b.listenerOptions())
	b.listeners = append(b.listeners, l)
	if err := b.server.AddListener(l); err != nil {
		return fmt.Errorf("add local listener: %w", err)
	}
	return nil
}
