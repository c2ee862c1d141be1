package authz

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

// newTestAuthorizer opens a state directory with one device (default policy) and returns a
// PolicyAuthorizer and a connected session for that device.
func newTestAuthorizer(tb testing.TB) (*PolicyAuthorizer, *Session) {
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
	a, err := NewPolicyAuthorizer(cfg, st.Registry, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	s := &Session{Identity: id, SourceIP: netip.MustParseAddr("127.0.0.1"), CleanStart: true}
	if v := a.Connect(s); !v.Allowed {
		tb.Fatalf("connect denied: %+v", v)
	}
	return a, s
}

func TestPolicyAuthorizerDefaultPolicy(t *testing.T) {
	a, s := newTestAuthorizer(t)
	cases := []struct {
		name    string
		verdict Verdict
		allowed bool
	}{
		{"publish", a.Publish(s, "sensor-1/temp", false), true},
		{"retained publish", a.Publish(s, "sensor-1/temp", true), true},
		// The default policy is scoped to the thing's own topics (issue 15): <thing>/..., nothing else.
		{"subscribe to its own topics", a.Subscribe(s, "sensor-1/#"), true},
		{"receive on its own topics", a.Receive(s, "sensor-1/cmd"), true},
		{"subscribe #", a.Subscribe(s, "#"), false},
		{"receive another's topic", a.Receive(s, "sensor-2/temp"), false},
		{"publish to another's topic", a.Publish(s, "sensor-2/temp", false), false},
		{"publish outside any thing's topics", a.Publish(s, "a/b", false), false},
		{"publish to its bare thing name", a.Publish(s, "sensor-1", false), false},
		{"publish under $aws", a.Publish(s, "$aws/things/sensor-1/tunnels/notify", false), false},
		{"subscribe under $aws", a.Subscribe(s, "$aws/things/sensor-1/tunnels/#"), false},
		{"publish to its own jobs", a.Publish(s, "$aws/things/sensor-1/jobs/get", false), true},
		{"publish to another's jobs", a.Publish(s, "$aws/things/sensor-2/jobs/get", false), false},
		// The default policy allows a device its own shadow topics (issue 12), no other thing's.
		{"publish to its own shadow", a.Publish(s, "$aws/things/sensor-1/shadow/update", false), true},
		{"subscribe to its own shadow", a.Subscribe(s, "$aws/things/sensor-1/shadow/#"), true},
		{"publish to another's shadow", a.Publish(s, "$aws/things/sensor-2/shadow/update", false), false},
	}
	for _, tc := range cases {
		if tc.verdict.Allowed != tc.allowed {
			t.Errorf("%s: %+v, want allowed=%v", tc.name, tc.verdict, tc.allowed)
		}
	}
	if v := a.Publish(s, "$aws/x", false); v.Resource != "arn:aws:iot:us-east-1:123456789012:topic/$aws/x" || v.Decision != policy.ImplicitDeny || v.Action != "iot:Publish" {
		t.Errorf("deny verdict %+v", v)
	}
}

// TestReceiveDoesNotAllocate: iot:Receive runs for every delivered message in the publisher's
// goroutine; on the allow path it must not allocate.
func TestReceiveDoesNotAllocate(t *testing.T) {
	a, s := newTestAuthorizer(t)
	if v := a.Receive(s, "sensor-1/warm-up"); !v.Allowed {
		t.Fatalf("the allow path is not taken: %+v", v)
	}
	if n := testing.AllocsPerRun(1000, func() { a.Receive(s, "sensor-1/temperature") }); n != 0 {
		t.Fatalf("Receive allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(1000, func() { a.Publish(s, "sensor-1/temperature", false) }); n != 0 {
		t.Fatalf("Publish allocates %v times per call", n)
	}
}

// BenchmarkAuthorizerReceive is the per-message cost the hooks add for iot:Receive.
func BenchmarkAuthorizerReceive(b *testing.B) {
	a, s := newTestAuthorizer(b)
	b.ReportAllocs()
	for b.Loop() {
		a.Receive(s, "sensor-1/temperature")
	}
}

func BenchmarkAllowAllReceive(b *testing.B) {
	_, s := newTestAuthorizer(b)
	var a Authorizer = AllowAll{}
	b.ReportAllocs()
	for b.Loop() {
		a.Receive(s, "sensor-1/temperature")
	}
}

// TestDenialCarriesTheDecidingStatement: a Deny statement's verdict names the policy, the statement
// and its Sid as fields, not only in the sentence.
func TestDenialCarriesTheDecidingStatement(t *testing.T) {
	a, s := newTestAuthorizer(t)
	deny := `{"Version":"2012-10-17","Statement":[{"Sid":"NoSecrets","Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/secret/*"}]}`
	dir := a.PolicyDir()
	if err := os.WriteFile(state.PolicyPath(dir, "no-secrets"), []byte(deny), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.registry.AttachPolicy(s.Identity.CertificateID, "no-secrets"); err != nil {
		t.Fatal(err)
	}
	a.refresh()
	v := a.Publish(s, "secret/x", false)
	if v.Allowed || v.Decision != policy.ExplicitDeny || v.Diagnostic.Policy != "no-secrets" || v.Diagnostic.Sid != "NoSecrets" || v.Diagnostic.Statement != 0 {
		t.Fatalf("verdict %+v", v)
	}
	if v.DecisionName() != "EXPLICIT_DENY" || !strings.Contains(v.Reason, "NoSecrets") {
		t.Fatalf("decision %s, reason %q", v.DecisionName(), v.Reason)
	}
}

// TestKeptAllowsFollowPolicyChanges: Receive and Publish keep the topics they allowed, per session
// and policy snapshot; a policy change that denies a kept topic denies it at once, and a policy
// that reads the time is asked every time.
func TestKeptAllowsFollowPolicyChanges(t *testing.T) {
	a, s := newTestAuthorizer(t)
	for range 3 { // kept after the first
		if v := a.Receive(s, "sensor-1/cmd"); !v.Allowed {
			t.Fatalf("receive on its own topic: %+v", v)
		}
		if v := a.Publish(s, "sensor-1/temp", false); !v.Allowed {
			t.Fatalf("publish on its own topic: %+v", v)
		}
	}
	write := func(name, doc string) {
		t.Helper()
		if err := os.WriteFile(state.PolicyPath(a.PolicyDir(), name), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := a.registry.AttachPolicy(s.Identity.CertificateID, name); err != nil {
			t.Fatal(err)
		}
		a.refresh()
	}
	write("quiet", `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":["iot:Receive","iot:Publish"],"Resource":["arn:aws:iot:*:*:topic/sensor-1/cmd","arn:aws:iot:*:*:topic/sensor-1/temp"]}]}`)
	if v := a.Receive(s, "sensor-1/cmd"); v.Allowed {
		t.Fatal("a receive kept from before the Deny is still allowed")
	}
	if v := a.Publish(s, "sensor-1/temp", false); v.Allowed {
		t.Fatal("a publish kept from before the Deny is still allowed")
	}
	// A Deny that holds until a time in the past: the statement reads the time on every request.
	write("quiet", `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:Receive","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2000-01-01T00:00:00Z"}}}]}`)
	sa := s.Authz.(*sessionAuthz)
	for range 3 {
		if v := a.Receive(s, "sensor-1/cmd"); !v.Allowed {
			t.Fatalf("receive with an expired Deny: %+v", v)
		}
	}
	if v := sa.view.Load(); v.receive.has("sensor-1/cmd") {
		t.Fatal("an allow of a set that reads the time was kept")
	}
}

// TestFingerprintSeesEveryPolicyChange: the fingerprint checked at every CONNECT reads the policy
// directory's listing only when the directory changed, and still sees a file added, edited in place
// (same size, new time) or removed.
func TestFingerprintSeesEveryPolicyChange(t *testing.T) {
	a, _ := newTestAuthorizer(t)
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}`
	path := filepath.Join(a.PolicyDir(), "extra.json")
	fp := a.fingerprint()
	if again := a.fingerprint(); again != fp {
		t.Fatalf("nothing changed, but the fingerprint did: %q -> %q", fp, again)
	}
	steps := []struct {
		name   string
		change func() error
	}{
		{"a file added", func() error { return os.WriteFile(path, []byte(doc), 0o600) }},
		{"the file edited in place", func() error {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte(`{`), 0) // same size, same directory entry
			if err == nil {
				err = os.Chtimes(path, time.Now(), time.Now().Add(time.Minute))
			}
			return err
		}},
		{"the file removed", func() error { return os.Remove(path) }},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatal(err)
		}
		next := a.fingerprint()
		if next == fp {
			t.Fatalf("%s: the fingerprint did not change", st.name)
		}
		fp = next
	}
}

// TestAllowCacheKeepsUpToItsLimit: the first topics go to the array, later ones to the map, and past
// allowCacheMax nothing more is kept; a topic never added is never reported.
func TestAllowCacheKeepsUpToItsLimit(t *testing.T) {
	var c allowCache
	topic := func(i int) string { return fmt.Sprintf("dt/sensor-%d/temp", i) }
	if c.has(topic(0)) {
		t.Fatal("an empty cache has a topic")
	}
	for i := range allowCacheMax + 10 {
		c.add(topic(i))
	}
	for i := range allowCacheMax + 10 {
		if got, want := c.has(topic(i)), i < allowCacheMax; got != want {
			t.Fatalf("has(%q) = %v, want %v", topic(i), got, want)
		}
	}
	if c.has("dt/sensor-1/tem") || c.has("dt/sensor-1/temp/") {
		t.Fatal("a prefix or extension of a kept topic is reported as kept")
	}
}

// TestSessionsShareTheSetOfTheirPolicies: sessions with the same policies in one snapshot get one
// compiled Set (a connect compiles nothing); after a policy change they get a new one, with the
// change in it.
func TestSessionsShareTheSetOfTheirPolicies(t *testing.T) {
	a, s1 := newTestAuthorizer(t)
	s2 := &Session{Identity: s1.Identity, SourceIP: s1.SourceIP, CleanStart: true}
	if v := a.Connect(s2); !v.Allowed {
		t.Fatalf("second session: %+v", v)
	}
	set := func(s *Session) *policy.Set { return a.view(s.Authz.(*sessionAuthz)).set }
	if set(s1) != set(s2) {
		t.Fatal("two sessions with the same policies compiled two Sets")
	}
	before := set(s1)
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:Receive","Resource":"*"}]}`
	if err := os.WriteFile(state.PolicyPath(a.PolicyDir(), "quiet"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.registry.AttachPolicy(s1.Identity.CertificateID, "quiet"); err != nil {
		t.Fatal(err)
	}
	a.refresh()
	if set(s1) == before || set(s1) != set(s2) {
		t.Fatal("after a policy change the sessions do not share a new Set")
	}
	if v := a.Receive(s2, "sensor-1/cmd"); v.Allowed {
		t.Fatal("the shared Set does not have the new Deny")
	}
}
