package authz

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
	"go.uber.org/zap"
)

// Local decides for local clients (the sessions whose identity carries record) with the policy engine and the one policy document
// localListener.policy names (read from authorization.policyDir, re-read when it changes), and hands
// every other session to the broker's Authorizer. In allow-all mode local clients may do anything too.
type Local struct {
	Authorizer
	record   *auth.Certificate // the local identity's marker record
	thing    string            // the local identity's thing name
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

// NewLocal makes the local listener's authorizer in front of inner: sessions whose identity carries
// record (the anonymous local identity, whose thing name is thing) are decided by the policy
// localListener.policy names; every other session by inner.
func NewLocal(inner Authorizer, record *auth.Certificate, thing string, cfg *config.Config, log *zap.Logger) (*Local, error) {
	a := &Local{
		Authorizer: inner, record: record, thing: thing, allowAll: cfg.Authorization.Mode == config.AuthzAllowAll,
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
func (a *Local) load() *localPolicy {
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

func (a *Local) mine(s *Session) bool {
	return s.Identity != nil && s.Identity.Record == a.record
}

// localSession is a local client's policy context.
type localSession struct{ ctx *policy.Context }

func (a *Local) decide(s *Session, action, kind, name string) Verdict {
	if a.allowAll {
		return Allow
	}
	ls, _ := s.Authz.(*localSession)
	p := a.cur.Load()
	if ls == nil || p == nil || p.set == nil {
		return unauthenticated(action, kind, name, "local listener policy not loaded")
	}
	return evaluate(p.set, a.env, ls.ctx, action, kind, name, "")
}

func (a *Local) Connect(s *Session) Verdict {
	if !a.mine(s) {
		return a.Authorizer.Connect(s)
	}
	if !a.allowAll {
		a.load()
	}
	ctx := &policy.Context{ClientID: s.Identity.ClientID, Thing: &policy.Thing{Name: a.thing}, SourceIP: s.SourceIP, LastWillTopic: s.WillTopic}
	if !s.CleanStart {
		ctx.ConnectAttributes = append(ctx.ConnectAttributes, "PersistentConnect")
	}
	if s.WillTopic != "" {
		ctx.ConnectAttributes = append(ctx.ConnectAttributes, "LastWill")
	}
	s.Authz = &localSession{ctx: ctx}
	return a.decide(s, policy.ActionConnect, policy.KindClient, s.Identity.ClientID)
}

func (a *Local) Publish(s *Session, topic string, retain bool) Verdict {
	if !a.mine(s) {
		return a.Authorizer.Publish(s, topic, retain)
	}
	if v := a.decide(s, policy.ActionPublish, policy.KindTopic, topic); !v.Allowed || !retain {
		return v
	}
	return a.decide(s, policy.ActionRetainPublish, policy.KindTopic, topic)
}

func (a *Local) Subscribe(s *Session, filter string) Verdict {
	if !a.mine(s) {
		return a.Authorizer.Subscribe(s, filter)
	}
	return a.decide(s, policy.ActionSubscribe, policy.KindTopicFilter, filter)
}

func (a *Local) Receive(s *Session, topic string) Verdict {
	if !a.mine(s) {
		return a.Authorizer.Receive(s, topic)
	}
	return a.decide(s, policy.ActionReceive, policy.KindTopic, topic)
}

func (a *Local) Decide(s *Session, action, resource string) Verdict {
	if !a.mine(s) {
		return a.Authorizer.Decide(s, action, resource)
	}
	kind, name := SplitResource(resource)
	return a.decide(s, action, kind, name)
}
