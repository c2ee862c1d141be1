package broker

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
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
	authz  *localAuthorizer
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
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return nil, &auth.Refusal{Reason: auth.ReasonNoCertificate, Details: "connection is not TLS", BadCredentials: true}
	}
	return h.authn.Authenticate(tc.ConnectionState().PeerCertificates, cl.ID)
}

// localAuthorizer decides for local clients with the policy engine and the one policy document
// localListener.policy names (read from authorization.policyDir, re-read when it changes), and hands
// every other session to the broker's Authorizer. In allow-all mode local clients may do anything too.
type localAuthorizer struct {
	authz.Authorizer
	local    *localClients
	allowAll bool
	env      policy.Env
	path     string
	name     string
	log      *zap.Logger

	mu  sync.Mutex // serialises reloads
	cur atomic.Pointer[localPolicy]
}

type localPolicy struct {
	set     *policy.Set
	modTime time.Time
	size    int64
	err     error
}

func newLocalAuthorizer(inner authz.Authorizer, local *localClients, cfg *config.Config, log *zap.Logger) (*localAuthorizer, error) {
	a := &localAuthorizer{
		Authorizer: inner, local: local, allowAll: cfg.Authorization.Mode == config.AuthzAllowAll,
		env:  policy.Env{Region: cfg.Core.Region, AccountID: cfg.Core.AccountID},
		name: cfg.LocalListener.Policy, path: state.PolicyPath(cfg.PolicyDir(), cfg.LocalListener.Policy), log: log,
	}
	if !a.allowAll {
		if p := a.load(); p.err != nil {
			return nil, fmt.Errorf("localListener.policy: %w", p.err)
		}
	}
	return a, nil
}

// load re-reads the policy file if it changed; a broken edit keeps the last good document.
func (a *localAuthorizer) load() *localPolicy {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.cur.Load()
	fi, err := os.Stat(a.path)
	if err == nil && cur != nil && fi.ModTime().Equal(cur.modTime) && fi.Size() == cur.size {
		return cur
	}
	var p *policy.Policy
	if err == nil {
		p, err = state.ParsePolicyFile(a.path, a.name)
	} else {
		err = fmt.Errorf("policy %q: %w (create it with `ggbroker policy create %s FILE`)", a.name, err, a.name)
	}
	if err != nil {
		if cur != nil && cur.err == nil {
			a.log.Error("local listener policy reload refused; the last good version stays in force", zap.Error(err))
			return cur
		}
		next := &localPolicy{err: err}
		a.cur.Store(next)
		return next
	}
	next := &localPolicy{set: policy.NewSet(a.env, p), modTime: fi.ModTime(), size: fi.Size()}
	a.cur.Store(next)
	return next
}

func (a *localAuthorizer) mine(s *authz.Session) bool {
	return s.Identity != nil && s.Identity.Record == a.local.record
}

// localSession is a local client's policy context.
type localSession struct{ ctx *policy.Context }

func (a *localAuthorizer) decide(s *authz.Session, action, kind, name string) authz.Verdict {
	if a.allowAll {
		return authz.Allow
	}
	ls, _ := s.Authz.(*localSession)
	p := a.cur.Load()
	if ls == nil || p == nil || p.set == nil {
		return authz.Verdict{Action: action, Resource: kind + "/" + name, Decision: policy.ImplicitDeny.String(), Reason: "local listener policy not loaded"}
	}
	d, diag := p.set.Evaluate(policy.Request{Action: action, Kind: kind, Name: name, Context: ls.ctx})
	if d == policy.Allowed {
		return authz.Allow
	}
	res := kind + "/" + name
	if arn, err := policy.ExpandResource(a.env, res); err == nil {
		res = arn
	}
	return authz.Verdict{Action: action, Resource: res, Decision: d.String(), Reason: diag.String()}
}

func (a *localAuthorizer) Connect(s *authz.Session) authz.Verdict {
	if !a.mine(s) {
		return a.Authorizer.Connect(s)
	}
	if !a.allowAll {
		a.load()
	}
	ctx := &policy.Context{ClientID: s.Identity.ClientID, Thing: &policy.Thing{Name: a.local.name}, SourceIP: s.SourceIP, LastWillTopic: s.WillTopic}
	if !s.CleanStart {
		ctx.ConnectAttributes = append(ctx.ConnectAttributes, "PersistentConnect")
	}
	if s.WillTopic != "" {
		ctx.ConnectAttributes = append(ctx.ConnectAttributes, "LastWill")
	}
	s.Authz = &localSession{ctx: ctx}
	return a.decide(s, policy.ActionConnect, policy.KindClient, s.Identity.ClientID)
}

func (a *localAuthorizer) Publish(s *authz.Session, topic string, retain bool) authz.Verdict {
	if !a.mine(s) {
		return a.Authorizer.Publish(s, topic, retain)
	}
	if v := a.decide(s, policy.ActionPublish, policy.KindTopic, topic); !v.Allowed || !retain {
		return v
	}
	return a.decide(s, policy.ActionRetainPublish, policy.KindTopic, topic)
}

func (a *localAuthorizer) Subscribe(s *authz.Session, filter string) authz.Verdict {
	if !a.mine(s) {
		return a.Authorizer.Subscribe(s, filter)
	}
	return a.decide(s, policy.ActionSubscribe, policy.KindTopicFilter, filter)
}

func (a *localAuthorizer) Receive(s *authz.Session, topic string) authz.Verdict {
	if !a.mine(s) {
		return a.Authorizer.Receive(s, topic)
	}
	return a.decide(s, policy.ActionReceive, policy.KindTopic, topic)
}

func (a *localAuthorizer) Decide(s *authz.Session, action, resource string) authz.Verdict {
	if !a.mine(s) {
		return a.Authorizer.Decide(s, action, resource)
	}
	kind, name := authz.SplitResource(resource)
	return a.decide(s, action, kind, name)
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
	la, err := newLocalAuthorizer(b.authz, b.local, b.cfg, b.log)
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
	b.local.authz.Authorizer = b.hook.authz
	b.hook.authz = b.local.authz
	l := newTLSListener(localListenerID, b.localLn, nil, b.cfg.MQTT.TLSHandshakeTimeout, b.log)
	if err := b.server.AddListener(l); err != nil {
		return fmt.Errorf("add local listener: %w", err)
	}
	return nil
}
