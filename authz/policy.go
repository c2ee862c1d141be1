package authz

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

// PolicyAuthorizer is the Authorizer backed by the policy engine: AWS IoT policies attached to each
// device's certificate, or Greengrass device groups. Everything it decides from lives in one immutable
// snapshot that a reload swaps atomically, so a change to a policy file, the registry or the
// deviceGroups config applies to the next decision, including iot:Receive on live subscriptions, with
// no restart; a broken edit is refused, logged, and the last good snapshot stays.
type PolicyAuthorizer struct {
	env        policy.Env
	mode       string // config.AuthzPolicies or config.AuthzDeviceGroups (auto resolved at load)
	autoMode   bool
	policyDir  string
	configFile string // where deviceGroups are re-read from on reload, "" when none
	groups     any    // the deviceGroups config when there is no file to re-read
	registry   *auth.Registry
	log        *zap.Logger

	snap atomic.Pointer[policySnapshot]
	mu   sync.Mutex // serialises reloads
	// seen is the fingerprint of the watched files the current snapshot was loaded from, failed the
	// last one that could not be loaded (reported once, not at every connect). Both under mu.
	seen, failed string
	// settled is the fingerprint that needs no reload (seen or failed), read without the lock so that
	// concurrent connects do not queue behind each other's file-system checks.
	settled atomic.Pointer[string]
	// reloadFailures counts reloads refused since start (a metric: an operator alerts on it).
	reloadFailures atomic.Uint64
	// listing is the policy directory's last listing (see fingerprint).
	listing atomic.Pointer[dirListing]
}

// Reloads reports the policy snapshot version in force (0 at start, +1 per successful reload) and
// how many reloads were refused since start, for metrics.
func (a *PolicyAuthorizer) Reloads() (version, failures uint64) {
	return a.snap.Load().version, a.reloadFailures.Load()
}

// policySnapshot is one consistent version of everything decisions depend on.
type policySnapshot struct {
	version  uint64
	mode     string
	policies map[string]*policy.Policy
	groups   *policy.DeviceGroups
	registry *auth.Data
	// sets holds the compiled Sets of this snapshot's sessions by their policies' names (setFor): a
	// fleet's devices mostly have the same policies, and a connect then compiles nothing.
	sets sync.Map
}

// setFor is the compiled Set of ps, shared by every session of this snapshot that has the same
// policies in the same order (a Set is never modified after NewSet).
func (snap *policySnapshot) setFor(env policy.Env, ps []*policy.Policy) *policy.Set {
	key := make([]byte, 0, 64)
	for _, p := range ps {
		if p != nil {
			key = append(append(key, p.Name()...), 0)
		}
	}
	if set, ok := snap.sets.Load(string(key)); ok {
		return set.(*policy.Set)
	}
	set, _ := snap.sets.LoadOrStore(string(key), policy.NewSet(env, ps...))
	return set.(*policy.Set)
}

// sessionAuthz is a session's compiled view: its policy context and Set, rebuilt when the snapshot
// version changes. Rebuilding allocates; deciding from a current view does not.
type sessionAuthz struct {
	view atomic.Pointer[sessionView]
	// base holds what does not change with a reload.
	clientID, certID string
	identity         *auth.Identity
	session          *Session
}

type sessionView struct {
	version uint64
	ctx     *policy.Context
	set     *policy.Set
	// stable is set.Stable(), kept here because iot:Receive reads it for every delivery.
	stable bool
	// missing names attached policies that do not exist, for the deny reason.
	missing []string
	// receive and publish keep the topics this view allowed, when the set is Stable: the same
	// request of the same session under the same snapshot gets the same answer, and iot:Receive is
	// asked for every delivery (the policies-on / allow-all goal of issue 16). A new snapshot (a
	// policy, registry or group change) makes a new view, and so forgets them.
	receive, publish allowCache
}

// allowCache is a set of topics, read without locks: a copy-on-write allowSet behind an atomic
// pointer. It holds at most allowCacheMax topics; past that, decisions are simply not kept.
type allowCache struct {
	p atomic.Pointer[allowSet]
}

// allowSet keeps its first allowSmall topics in an array, so that the usual case (a subscriber gets
// a few topics; a fan-out delivers one topic to many sessions) is answered by comparing strings read
// from one cache line instead of hashing into a map: iot:Receive runs for every delivery, in the
// publisher's goroutine, across every subscriber's session.
type allowSet struct {
	n     int
	small [allowSmall]string
	more  map[string]struct{}
}

const (
	allowSmall    = 4
	allowCacheMax = 256
)

func (c *allowCache) has(topic string) bool {
	s := c.p.Load()
	if s == nil {
		return false
	}
	for i := 0; i < s.n; i++ {
		if s.small[i] == topic {
			return true
		}
	}
	_, ok := s.more[topic]
	return ok
}

func (c *allowCache) add(topic string) {
	for {
		old := c.p.Load()
		next := &allowSet{}
		if old != nil {
			if old.n+len(old.more) >= allowCacheMax {
				return
			}
			*next = *old
			if old.more != nil {
				next.more = make(map[string]struct{}, len(old.more)+1)
				for k := range old.more {
					next.more[k] = struct{}{}
				}
			}
		}
		if next.n < allowSmall {
			next.small[next.n] = topic
			next.n++
		} else {
			if next.more == nil {
				next.more = make(map[string]struct{}, 1)
			}
			next.more[topic] = struct{}{}
		}
		if c.p.CompareAndSwap(old, next) {
			return
		}
	}
}

// NewPolicyAuthorizer loads the policies (and device groups) that cfg names. It fails, naming the file
// and statement, if any document is malformed: the broker refuses to start on a bad policy.
func NewPolicyAuthorizer(cfg *config.Config, reg *auth.Registry, log *zap.Logger) (*PolicyAuthorizer, error) {
	a := &PolicyAuthorizer{
		env:        policy.Env{Region: cfg.Core.Region, AccountID: cfg.Core.AccountID},
		mode:       cfg.Authorization.Mode,
		autoMode:   cfg.Authorization.Mode == config.AuthzAuto,
		policyDir:  cfg.PolicyDir(),
		configFile: configFile(cfg),
		groups:     cfg.ClientDeviceAuth.DeviceGroups,
		registry:   reg,
		log:        log,
	}
	if _, err := a.reload(); err != nil {
		return nil, err
	}
	return a, nil
}

func configFile(cfg *config.Config) string {
	if cfg.Source == "embedded defaults" {
		return ""
	}
	return cfg.Source
}

// Mode is the resolved authorization mode: policies or deviceGroups.
func (a *PolicyAuthorizer) Mode() string { return a.snap.Load().mode }

// Env is the region and account that resource ARNs are in.
func (a *PolicyAuthorizer) Env() policy.Env { return a.env }

// reload builds a new snapshot from the files: the policy directory, the registry and (for
// deviceGroups) the config file.
func (a *PolicyAuthorizer) reload() (*policySnapshot, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reloadLocked()
}

func (a *PolicyAuthorizer) reloadLocked() (*policySnapshot, error) {
	fp := a.fingerprint()
	groupsValue := a.groups
	if a.configFile != "" {
		v, err := config.LoadDeviceGroups(a.configFile)
		if err != nil {
			return nil, err
		}
		groupsValue = v
	}
	next := &policySnapshot{mode: a.mode}
	if groupsValue != nil {
		g, err := policy.ParseDeviceGroupsValue(groupsValue)
		if err != nil {
			return nil, fmt.Errorf("config %s: clientDeviceAuth.deviceGroups: %w", a.configFile, err)
		}
		next.groups = g
	}
	if a.autoMode {
		next.mode = config.AuthzPolicies
		if next.groups != nil {
			next.mode = config.AuthzDeviceGroups
		}
	}
	if next.mode == config.AuthzDeviceGroups && next.groups == nil {
		return nil, fmt.Errorf("authorization.mode is deviceGroups but the config has no clientDeviceAuth.deviceGroups")
	}
	var err error
	if next.policies, err = state.LoadPolicies(a.policyDir); err != nil {
		return nil, err
	}
	if next.registry, err = a.registry.Snapshot(); err != nil {
		return nil, err
	}
	if prev := a.snap.Load(); prev != nil {
		next.version = prev.version + 1
	}
	a.snap.Store(next)
	a.seen = fp
	a.settled.Store(&fp)
	return next, nil
}

// refresh reloads now if the watched files changed since the snapshot was loaded. Connect calls it, so
// a device registered or a policy written just before its connect is seen without waiting for the
// watcher; per-message decisions never touch the file system.
func (a *PolicyAuthorizer) refresh() {
	if p := a.settled.Load(); p != nil && *p == a.fingerprint() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if fp := a.fingerprint(); fp == a.seen || fp == a.failed {
		return
	}
	if snap, err := a.reloadLocked(); err != nil {
		failed := a.fingerprint()
		a.failed = failed
		a.settled.Store(&failed)
		a.reloadFailures.Add(1)
		a.log.Error("policy reload refused; the last good policies stay in force", zap.Error(err))
	} else {
		a.log.Info("policies reloaded", zap.Uint64("version", snap.version), zap.String("mode", snap.mode))
	}
}

// Watch reloads on changes to the policy directory, the registry and the config file until ctx ends.
// fsnotify tells of changes at once; a slow poll backs it up where notifications are lost (some
// network and overlay file systems).
func (a *PolicyAuthorizer) Watch(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Warn("cannot watch policy files; polling only", zap.Error(err))
	} else {
		defer w.Close()
		for _, dir := range a.watchedDirs() {
			if err := w.Add(dir); err != nil {
				a.log.Warn("cannot watch directory; polling it", zap.String("dir", dir), zap.Error(err))
			}
		}
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	poll := time.NewTicker(5 * time.Second)
	defer poll.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if a.relevant(ev.Name) {
				debounce.Reset(50 * time.Millisecond) // editors write in several steps
			}
		case err := <-errs:
			a.log.Warn("policy watcher error", zap.Error(err))
		case <-poll.C:
			a.refresh()
		case <-debounce.C:
			a.refresh()
		}
	}
}

func (a *PolicyAuthorizer) watchedDirs() []string {
	dirs := []string{a.policyDir, filepath.Dir(a.registry.Path())}
	if a.configFile != "" {
		dirs = append(dirs, filepath.Dir(a.configFile))
	}
	return dirs
}

func (a *PolicyAuthorizer) relevant(name string) bool {
	clean := filepath.Clean(name)
	return filepath.Dir(clean) == filepath.Clean(a.policyDir) || clean == filepath.Clean(a.registry.Path()) ||
		(a.configFile != "" && clean == filepath.Clean(a.configFile))
}

// fingerprint summarises the watched files' sizes and times, for the poll.
//
// It runs at every CONNECT, so it reads the policy directory's listing only when the directory
// itself changed (a file created, removed or renamed changes its modification time and size; an edit
// in place changes the file's, which is stat'ed every time), and formats without fmt.
func (a *PolicyAuthorizer) fingerprint() string {
	fp := make([]byte, 0, 256)
	add := func(path string, fi os.FileInfo) {
		fp = append(fp, path...)
		fp = append(fp, ':')
		fp = strconv.AppendInt(fp, fi.Size(), 10)
		fp = append(fp, ':')
		fp = strconv.AppendInt(fp, fi.ModTime().UnixNano(), 10)
		fp = append(fp, ';')
	}
	stat := func(path string) {
		if fi, err := os.Stat(path); err == nil {
			add(path, fi)
		}
	}
	stat(a.registry.Path())
	if a.configFile != "" {
		stat(a.configFile)
	}
	if di, err := os.Stat(a.policyDir); err == nil {
		add(a.policyDir, di)
		for _, path := range a.policyFiles(di) {
			stat(path)
		}
	}
	return string(fp)
}

// dirListing is the policy directory's files as last read, with the directory's size and
// modification time then.
type dirListing struct {
	size, mtime int64
	paths       []string
}

// policyFiles returns the paths in the policy directory, read again only when its stat (di) differs
// from the last listing's.
func (a *PolicyAuthorizer) policyFiles(di os.FileInfo) []string {
	if l := a.listing.Load(); l != nil && l.size == di.Size() && l.mtime == di.ModTime().UnixNano() {
		return l.paths
	}
	l := &dirListing{size: di.Size(), mtime: di.ModTime().UnixNano()}
	entries, _ := os.ReadDir(a.policyDir)
	for _, e := range entries {
		l.paths = append(l.paths, filepath.Join(a.policyDir, e.Name()))
	}
	a.listing.Store(l)
	return l.paths
}

// view returns the session's compiled view for the current snapshot, building it if the snapshot
// changed since.
func (a *PolicyAuthorizer) view(sa *sessionAuthz) *sessionView {
	snap := a.snap.Load()
	if v := sa.view.Load(); v != nil && v.version == snap.version {
		return v
	}
	v := &sessionView{version: snap.version, ctx: a.context(sa, snap)}
	var ps []*policy.Policy
	if snap.mode == config.AuthzDeviceGroups {
		// Device groups select client devices by thing name; a client that acts as no thing (an
		// iot-core claim certificate) is in no group and may do nothing.
		if v.ctx.Thing != nil {
			ps = snap.groups.PoliciesFor(v.ctx.Thing.Name)
		}
	} else {
		thing := ""
		if v.ctx.Thing != nil {
			thing = v.ctx.Thing.Name
		}
		ps, v.missing = snap.attached(sa.certID, thing)
	}
	v.set = snap.setFor(a.env, ps)
	v.stable = v.set.Stable()
	sa.view.Store(v)
	return v
}

// attached returns the compiled policies attached to a certificate in this snapshot, and to the thing
// groups of thing, the thing the connection acts as ("" for none: see thingOf), and the names of
// attached policies that have no document (they grant nothing; the deny reason says so).
func (snap *policySnapshot) attached(certID, thing string) (ps []*policy.Policy, missing []string) {
	rec, ok := snap.registry.Certificates[certID]
	if !ok {
		return nil, nil
	}
	names := rec.Policies
	if thing != "" {
		for _, g := range snap.registry.GroupsOf(thing) {
			for _, n := range snap.registry.ThingGroups[g].Policies {
				if !slices.Contains(names, n) {
					names = append(slices.Clip(names), n)
				}
			}
		}
	}
	for _, name := range names {
		if p, ok := snap.policies[name]; ok {
			ps = append(ps, p)
		} else {
			missing = append(missing, name)
		}
	}
	return ps, missing
}

// missingNote is the part of a deny reason that names attached policies without a document.
func (a *PolicyAuthorizer) missingNote(missing []string) string {
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf(" (attached policies not found in %s: %v)", a.policyDir, missing)
}

// context builds the policy context of a session from the snapshot's registry (thing attributes may
// have changed since the connect).
func (a *PolicyAuthorizer) context(sa *sessionAuthz, snap *policySnapshot) *policy.Context {
	s := sa.session
	ctx := &policy.Context{
		ClientID:      sa.clientID,
		CertificateID: sa.certID,
		Certificate:   sa.identity.Certificate,
		SourceIP:      s.SourceIP,
		LastWillTopic: s.WillTopic,
	}
	if !s.CleanStart {
		ctx.ConnectAttributes = append(ctx.ConnectAttributes, "PersistentConnect")
	}
	if s.WillTopic != "" {
		ctx.ConnectAttributes = append(ctx.ConnectAttributes, "LastWill")
	}
	if thing := snap.thingOf(sa); thing != nil {
		ctx.Thing = &policy.Thing{Name: thing.Name, TypeName: thing.TypeName, Attributes: thing.Attributes}
	}
	return ctx
}

// thingOf is the thing a session acts as in this snapshot: the client ID's thing while the certificate
// is attached to it, nil otherwise. For the thing policy variables "Thing name is taken as client Id",
// and iot:Connection.Thing.IsAttached says whether "the connecting thing is attached to the
// certificate" (aws-iot-core/thing-policy-variables.md): ggbroker resolves them only when both hold,
// so in the iot-core profile a claim certificate, or a certificate connecting with another client ID,
// has none, and a statement that uses them does not match. A session whose identity has no thing (the
// authenticator found none at connect) gets none either.
func (snap *policySnapshot) thingOf(sa *sessionAuthz) *auth.Thing {
	if sa.identity.Thing == nil {
		return nil
	}
	t, ok := snap.registry.Things[sa.clientID]
	if !ok {
		return sa.identity.Thing // not in this snapshot's registry (a session restored before a reload)
	}
	if rec, ok := snap.registry.Certificates[sa.certID]; ok && !rec.AttachedTo(sa.clientID) {
		return nil
	}
	return t
}

// decide evaluates one request for a session.
func (a *PolicyAuthorizer) decide(s *Session, action, kind, name string) Verdict {
	sa, ok := s.Authz.(*sessionAuthz)
	if !ok {
		return unauthenticated(action, kind, name, "session has no authorization context")
	}
	v := a.view(sa)
	return evaluate(v.set, a.env, v.ctx, action, kind, name, a.missingNote(v.missing))
}

// Connect decides iot:Connect on client/<clientId>, with iot:ConnectAttributes and iot:LastWillTopic.
func (a *PolicyAuthorizer) Connect(s *Session) Verdict {
	a.refresh()
	s.Authz = &sessionAuthz{clientID: s.Identity.ClientID, certID: s.Identity.CertificateID, identity: s.Identity, session: s}
	return a.decide(s, policy.ActionConnect, policy.KindClient, s.Identity.ClientID)
}

// allowedBefore reports whether the session's current view already allowed the per-message action
// (iot:Receive when receive is set, iot:Publish otherwise) on topic. Publish and Receive answer from it
// before building a Verdict: a Verdict is some 170 bytes, and copying it through one more call was
// the largest part of iot:Receive's cost per delivery.
func (a *PolicyAuthorizer) allowedBefore(s *Session, topic string, receive bool) bool {
	sa, ok := s.Authz.(*sessionAuthz)
	if !ok {
		return false
	}
	v := a.view(sa)
	if !v.stable {
		return false
	}
	if receive {
		return v.receive.has(topic)
	}
	return v.publish.has(topic)
}

// decideTopic is decide for the per-message actions on topic/<topic>; an allowed answer is kept in
// the view's allowCache for allowedBefore.
func (a *PolicyAuthorizer) decideTopic(s *Session, action, topic string, receive bool) Verdict {
	sa, ok := s.Authz.(*sessionAuthz)
	if !ok {
		return unauthenticated(action, policy.KindTopic, topic, "session has no authorization context")
	}
	v := a.view(sa)
	verdict := evaluate(v.set, a.env, v.ctx, action, policy.KindTopic, topic, a.missingNote(v.missing))
	if verdict.Allowed && v.stable {
		c := &v.publish
		if receive {
			c = &v.receive
		}
		c.add(topic)
	}
	return verdict
}

// Publish decides iot:Publish, and iot:RetainPublish as well when the message is retained
// (aws-iot-core/retained-message-policy-examples.md).
func (a *PolicyAuthorizer) Publish(s *Session, topic string, retain bool) Verdict {
	if !a.allowedBefore(s, topic, false) {
		if v := a.decideTopic(s, policy.ActionPublish, topic, false); !v.Allowed {
			return v
		}
	}
	if !retain {
		return Allow
	}
	return a.decide(s, policy.ActionRetainPublish, policy.KindTopic, topic)
}

// Subscribe decides iot:Subscribe on topicfilter/<filter>; + and # are literal characters there.
func (a *PolicyAuthorizer) Subscribe(s *Session, filter string) Verdict {
	return a.decide(s, policy.ActionSubscribe, policy.KindTopicFilter, filter)
}

// Receive decides iot:Receive on topic/<topic>.
func (a *PolicyAuthorizer) Receive(s *Session, topic string) Verdict {
	if a.allowedBefore(s, topic, true) {
		return Allow
	}
	return a.decideTopic(s, policy.ActionReceive, topic, true)
}

// Decide decides any other action on a resource ("thing/T" or an ARN) for the device services.
func (a *PolicyAuthorizer) Decide(s *Session, action, resource string) Verdict {
	kind, name := SplitResource(resource)
	return a.decide(s, action, kind, name)
}

// Discover decides greengrass:Discover on thing/<thingName> for the discovery API: with the AWS IoT
// policies attached to the certificate, in every mode, because discovery is a cloud API that AWS IoT
// policies govern (device groups only govern the core's local broker). Thing policy variables are not
// available for this action (greengrass-v2/greengrass-discover-api.md), so the context has no thing.
func (a *PolicyAuthorizer) Discover(cert *auth.Certificate, leaf *x509.Certificate, thingName string, sourceIP netip.Addr) (bool, string) {
	a.refresh()
	ps, missing := a.snap.Load().attached(cert.ID, "")
	ctx := &policy.Context{CertificateID: cert.ID, Certificate: leaf, SourceIP: sourceIP}
	d, diag := policy.NewSet(a.env, ps...).Evaluate(policy.Request{Action: policy.GreengrassDiscover, Kind: policy.KindThing, Name: thingName, Context: ctx})
	if d == policy.Allowed {
		return true, ""
	}
	return false, d.String() + ": " + diag.String() + a.missingNote(missing)
}

// PolicyDir is the directory the policies are loaded from.
func (a *PolicyAuthorizer) PolicyDir() string { return a.policyDir }
