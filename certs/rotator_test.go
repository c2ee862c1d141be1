package certs

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNeedsRotation(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ca, other := newTestCA(t), newTestCA(t)
	key, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	wantDNS := []string{"localhost", "gg.local"}
	wantIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.5")}
	leaf := func(notBefore, notAfter time.Time, dns []string, ips []net.IP) *x509.Certificate {
		c, err := ca.Sign(&x509.Certificate{
			Subject:   pkix.Name{CommonName: "server"},
			NotBefore: notBefore, NotAfter: notAfter,
			DNSNames: dns, IPAddresses: ips,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	week := 7 * 24 * time.Hour
	// issued makes a 7-day leaf issued `age` ago, backdated an hour.
	issued := func(age time.Duration) *x509.Certificate {
		return leaf(now.Add(-age-time.Hour), now.Add(-age+week), wantDNS, wantIPs)
	}
	fresh := issued(0)

	tests := []struct {
		name       string
		leaf       *x509.Certificate
		ca         *x509.Certificate
		dns        []string
		ips        []net.IP
		wantReason string
	}{
		{"fresh", fresh, ca.Cert, wantDNS, wantIPs, ""},
		{"6 days old, 1 day left", issued(6 * 24 * time.Hour), ca.Cert, wantDNS, wantIPs, ""},
		{"inside the 24h window", issued(6*24*time.Hour + time.Minute), ca.Cert, wantDNS, wantIPs, "expiring"},
		{"expired", issued(8 * 24 * time.Hour), ca.Cert, wantDNS, wantIPs, "expiring"},
		{"not yet valid", leaf(now.Add(time.Hour), now.Add(week), wantDNS, wantIPs), ca.Cert, wantDNS, wantIPs, "expiring"},
		{"3h lifetime, 61m left", leaf(now.Add(-119*time.Minute), now.Add(61*time.Minute), wantDNS, wantIPs), ca.Cert, wantDNS, wantIPs, ""},
		{"3h lifetime, 59m left", leaf(now.Add(-121*time.Minute), now.Add(59*time.Minute), wantDNS, wantIPs), ca.Cert, wantDNS, wantIPs, "expiring"},
		{"DNS name added", fresh, ca.Cert, append([]string{"new.local"}, wantDNS...), wantIPs, "san-change"},
		{"IP added", fresh, ca.Cert, wantDNS, append([]net.IP{net.ParseIP("::1")}, wantIPs...), "san-change"},
		{"IP removed", fresh, ca.Cert, wantDNS, wantIPs[:1], "san-change"},
		{"IP changed", fresh, ca.Cert, wantDNS, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.6")}, "san-change"},
		{"SANs reordered, repeated, other case and IP form", fresh, ca.Cert,
			[]string{"GG.local", "localhost", "gg.local"},
			[]net.IP{net.ParseIP("10.0.0.5").To4(), net.IPv4(127, 0, 0, 1), net.ParseIP("10.0.0.5")}, ""},
		{"other CA", fresh, other.Cert, wantDNS, wantIPs, "ca-change"},
		{"other CA wins over SAN change", fresh, other.Cert, nil, nil, "ca-change"},
		{"no CA to check", fresh, nil, wantDNS, wantIPs, ""},
		{"no certificate yet", nil, ca.Cert, wantDNS, wantIPs, "initial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, needed := NeedsRotation(tt.leaf, tt.ca, tt.dns, tt.ips, now)
			if reason != tt.wantReason || needed != (tt.wantReason != "") {
				t.Errorf("NeedsRotation = %q, %v; want %q", reason, needed, tt.wantReason)
			}
		})
	}
}

// rotatorEnv is a Rotator's world that a test can change: the clock, the
// CA and the wanted SANs, and what OnRotate and OnError saw.
type rotatorEnv struct {
	clock *fakeClock

	mu     sync.Mutex
	ca     *Authority
	dns    []string
	ips    []net.IP
	events []RotationEvent
	errs   []error
}

func newRotatorEnv(t *testing.T) *rotatorEnv {
	return &rotatorEnv{
		clock: newFakeClock(time.Now()),
		ca:    newTestCA(t),
		dns:   []string{"localhost"},
		ips:   []net.IP{net.IPv4(127, 0, 0, 1)},
	}
}

func (e *rotatorEnv) config() RotatorConfig {
	return RotatorConfig{
		Authority: func() *Authority { e.mu.Lock(); defer e.mu.Unlock(); return e.ca },
		SANs: func() ([]string, []net.IP) {
			e.mu.Lock()
			defer e.mu.Unlock()
			return append([]string(nil), e.dns...), append([]net.IP(nil), e.ips...)
		},
		CommonName: "ggbroker test",
		Validity:   7 * 24 * time.Hour,
		Now:        e.clock.Now,
		OnRotate:   func(ev RotationEvent) { e.mu.Lock(); defer e.mu.Unlock(); e.events = append(e.events, ev) },
		OnError:    func(err error) { e.mu.Lock(); defer e.mu.Unlock(); e.errs = append(e.errs, err) },
	}
}

func (e *rotatorEnv) lastEvent(t *testing.T) RotationEvent {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.events) == 0 {
		t.Fatal("no rotation event")
	}
	return e.events[len(e.events)-1]
}

func (e *rotatorEnv) eventCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.events)
}

func servedLeaf(t *testing.T, r *Rotator) *x509.Certificate {
	t.Helper()
	tc, err := r.GetCertificate(nil)
	if err != nil || tc == nil || tc.Leaf == nil {
		t.Fatalf("GetCertificate = %v, %v", tc, err)
	}
	return tc.Leaf
}

func TestRotatorCheck(t *testing.T) {
	env := newRotatorEnv(t)
	r, err := NewRotator(env.config())
	if err != nil {
		t.Fatalf("NewRotator: %v", err)
	}
	first := servedLeaf(t, r)
	if ev := env.lastEvent(t); ev.Reason != "initial" || ev.Old != nil || !ev.New.Equal(first) {
		t.Errorf("first event = %q old %v, want initial with no old", ev.Reason, ev.Old)
	}
	if !r.Current().Equal(first) {
		t.Errorf("Current differs from GetCertificate")
	}

	steps := []struct {
		name       string
		change     func()
		wantReason string // "" = no rotation
	}{
		{"nothing changed", func() {}, ""},
		{"5 days later", func() { env.clock.Advance(5 * 24 * time.Hour) }, ""},
		{"inside the window", func() { env.clock.Advance(24*time.Hour + time.Minute) }, "expiring"},
		{"right after", func() {}, ""},
		{"new IP", func() { env.mu.Lock(); env.ips = append(env.ips, net.ParseIP("192.168.1.10")); env.mu.Unlock() }, "san-change"},
		{"same SANs reordered", func() {
			env.mu.Lock()
			env.ips = []net.IP{net.ParseIP("192.168.1.10"), net.ParseIP("127.0.0.1")}
			env.dns = []string{"LOCALHOST", "localhost"}
			env.mu.Unlock()
		}, ""},
		{"new CA", func() { ca := newTestCA(t); env.mu.Lock(); env.ca = ca; env.mu.Unlock() }, "ca-change"},
		{"CA re-made with the same key", func() {
			env.mu.Lock()
			defer env.mu.Unlock()
			env.ca = remadeCA(t, env.ca)
		}, "ca-change"},
	}
	for _, st := range steps {
		before := servedLeaf(t, r)
		n := env.eventCount()
		st.change()
		rotated, err := r.Check()
		if err != nil {
			t.Fatalf("%s: Check: %v", st.name, err)
		}
		after := servedLeaf(t, r)
		if want := st.wantReason != ""; rotated != want || (after.SerialNumber.Cmp(before.SerialNumber) != 0) != want {
			t.Fatalf("%s: rotated %v (serial %v -> %v), want rotation %v", st.name, rotated, before.SerialNumber, after.SerialNumber, want)
		}
		if st.wantReason == "" {
			if env.eventCount() != n {
				t.Errorf("%s: OnRotate called without a rotation", st.name)
			}
			continue
		}
		ev := env.lastEvent(t)
		if ev.Reason != st.wantReason || !ev.Old.Equal(before) || !ev.New.Equal(after) {
			t.Errorf("%s: event %q, want %q with Old/New the replaced and new certificates", st.name, ev.Reason, st.wantReason)
		}
		env.mu.Lock()
		ca, dns, ips := env.ca, env.dns, env.ips
		env.mu.Unlock()
		if reason, needed := NeedsRotation(after, ca.Cert, dns, ips, env.clock.Now()); needed {
			t.Errorf("%s: the new certificate itself needs rotation (%s)", st.name, reason)
		}
	}
}

// remadeCA returns a CA with a new certificate for the same key and name: it
// still verifies the old leaves, yet it is another CA.
func remadeCA(t *testing.T, a *Authority) *Authority {
	t.Helper()
	tmpl := *a.Cert
	tmpl.SerialNumber = mustSerial(t)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, a.Key.Public(), a.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Authority{Cert: c, Key: a.Key}
}

func TestRotatorRotateAndDisabled(t *testing.T) {
	env := newRotatorEnv(t)
	cfg := env.config()
	cfg.Disabled = true
	r, err := NewRotator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	first := servedLeaf(t, r)

	// Disabled: nothing automatic, not even for an expired certificate.
	env.clock.Advance(30 * 24 * time.Hour)
	env.mu.Lock()
	env.dns = []string{"other"}
	env.mu.Unlock()
	if rotated, err := r.Check(); rotated || err != nil {
		t.Fatalf("Check with Disabled = %v, %v; want no rotation", rotated, err)
	}
	if !servedLeaf(t, r).Equal(first) {
		t.Fatal("certificate changed while disabled")
	}

	if err := r.Rotate("forced"); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	second := servedLeaf(t, r)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("Rotate kept the serial")
	}
	ev := env.lastEvent(t)
	if ev.Reason != "forced" || !ev.Old.Equal(first) || !ev.New.Equal(second) {
		t.Errorf("event %q old %v new %v; want forced, first -> second", ev.Reason, ev.Old.SerialNumber, ev.New.SerialNumber)
	}
	if !slicesEqualFold(second.DNSNames, []string{"other"}) {
		t.Errorf("forced certificate has SANs %v, want the current ones", second.DNSNames)
	}
	if err := r.Rotate(""); err != nil || env.lastEvent(t).Reason != "forced" {
		t.Errorf("Rotate(\"\") = %v, reason %q; want forced", err, env.lastEvent(t).Reason)
	}
}

func slicesEqualFold(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !strings.EqualFold(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestRotatorPersist(t *testing.T) {
	env := newRotatorEnv(t)
	dir := filepath.Join(t.TempDir(), "server")
	cfg := env.config()
	cfg.CertPath, cfg.KeyPath = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")

	r1, err := NewRotator(cfg)
	if err != nil {
		t.Fatalf("first NewRotator: %v", err)
	}
	fi, err := os.Stat(cfg.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("server key mode %v, want 0600", fi.Mode().Perm())
	}

	steps := []struct {
		name      string
		change    func()
		wantReuse bool
	}{
		{"restart", func() {}, true},
		{"restart a day later", func() { env.clock.Advance(24 * time.Hour) }, true},
		{"restart with another DNS name", func() { env.mu.Lock(); env.dns = []string{"gg.local"}; env.mu.Unlock() }, false},
		{"restart inside the window", func() { env.clock.Advance(6*24*time.Hour + time.Minute) }, false},
		{"restart with another CA", func() { ca := newTestCA(t); env.mu.Lock(); env.ca = ca; env.mu.Unlock() }, false},
		{"corrupt key", func() { writeFile(t, dir, "server.key", []byte("junk")) }, false},
		{"lone certificate", func() { os.Remove(cfg.KeyPath) }, false},
		{"restart after all that", func() {}, true},
	}
	prev := r1.Current()
	for _, st := range steps {
		st.change()
		n := env.eventCount()
		env.mu.Lock()
		errsBefore := len(env.errs)
		env.mu.Unlock()
		r, err := NewRotator(cfg)
		if err != nil {
			t.Fatalf("%s: NewRotator: %v", st.name, err)
		}
		cur := r.Current()
		if reused := cur.SerialNumber.Cmp(prev.SerialNumber) == 0; reused != st.wantReuse {
			t.Fatalf("%s: reused %v, want %v", st.name, reused, st.wantReuse)
		}
		if st.wantReuse {
			if env.eventCount() != n {
				t.Errorf("%s: OnRotate called for a reused certificate", st.name)
			}
		} else {
			ev := env.lastEvent(t)
			if ev.Reason != "initial" || !ev.New.Equal(cur) {
				t.Errorf("%s: event %q, want initial for the new certificate", st.name, ev.Reason)
			}
			env.mu.Lock()
			gotErr := len(env.errs) > errsBefore
			env.mu.Unlock()
			broken := strings.HasPrefix(st.name, "corrupt") || strings.HasPrefix(st.name, "lone")
			if gotErr != broken {
				t.Errorf("%s: OnError called %v, want %v", st.name, gotErr, broken)
			}
			if !broken && (ev.Old == nil || !ev.Old.Equal(prev)) {
				t.Errorf("%s: event Old is not the replaced persisted certificate", st.name)
			}
		}
		prev = cur
	}

	// A rotation is persisted too.
	r, err := NewRotator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Rotate("forced"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cfg.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertsPEM(data)
	if err != nil || !certs[0].Equal(r.Current()) {
		t.Errorf("persisted certificate is not the rotated one (%v)", err)
	}
}

func TestRotatorPersistIntermediateChain(t *testing.T) {
	root, inter := newRootAndIntermediate(t)
	env := newRotatorEnv(t)
	env.ca = inter
	cfg := env.config()
	dir := t.TempDir()
	cfg.CertPath, cfg.KeyPath = filepath.Join(dir, "s.pem"), filepath.Join(dir, "s.key")
	for i := range 2 {
		r, err := NewRotator(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tc, _ := r.GetCertificate(nil)
		if len(tc.Certificate) != 2 {
			t.Fatalf("start %d: chain of %d, want leaf and intermediate", i, len(tc.Certificate))
		}
		if _, err := tc.Leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: poolOf(root.Cert), Intermediates: poolOf(inter.Cert)}); err != nil {
			t.Errorf("start %d: %v", i, err)
		}
	}
	if env.eventCount() != 1 {
		t.Errorf("%d rotations, want 1 (the second start reuses)", env.eventCount())
	}
}

func TestNewRotatorConfigErrors(t *testing.T) {
	env := newRotatorEnv(t)
	tests := []struct {
		name   string
		change func(*RotatorConfig)
		want   string
	}{
		{"no Authority", func(c *RotatorConfig) { c.Authority = nil }, "Authority"},
		{"nil CA", func(c *RotatorConfig) { c.Authority = func() *Authority { return nil } }, "no CA"},
		{"no SANs", func(c *RotatorConfig) { c.SANs = nil }, "SANs"},
		{"bad key type", func(c *RotatorConfig) { c.KeyType = "DSA" }, "DSA"},
		{"negative validity", func(c *RotatorConfig) { c.Validity = -time.Second }, "validity"},
		{"cert path alone", func(c *RotatorConfig) { c.CertPath = "x.pem" }, "together"},
		{"key path alone", func(c *RotatorConfig) { c.KeyPath = "x.key" }, "together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := env.config()
			tt.change(&cfg)
			if _, err := NewRotator(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewRotator error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRotatorCheckInterval(t *testing.T) {
	env := newRotatorEnv(t)
	tests := []struct {
		validity, interval, want time.Duration
	}{
		{0, 0, time.Minute},
		{7 * 24 * time.Hour, 0, time.Minute},
		{time.Minute, 0, 15 * time.Second},
		{time.Minute, time.Second, time.Second},
	}
	for _, tt := range tests {
		cfg := env.config()
		cfg.Validity, cfg.CheckInterval = tt.validity, tt.interval
		r, err := NewRotator(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r.interval != tt.want {
			t.Errorf("validity %v, CheckInterval %v: interval %v, want %v", tt.validity, tt.interval, r.interval, tt.want)
		}
	}
}

func TestRotatorRun(t *testing.T) {
	env := newRotatorEnv(t)
	cfg := env.config()
	cfg.CheckInterval = 5 * time.Millisecond
	rotated := make(chan RotationEvent, 10)
	cfg.OnRotate = func(ev RotationEvent) { rotated <- ev }
	r, err := NewRotator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	<-rotated // initial
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()

	env.clock.Advance(7 * 24 * time.Hour)
	select {
	case ev := <-rotated:
		if ev.Reason != "expiring" {
			t.Errorf("Run rotated for %q, want expiring", ev.Reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not rotate an expired certificate")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRotatorConcurrent runs handshake-side reads against rotations; run
// with -race it shows reads need no lock.
func TestRotatorConcurrent(t *testing.T) {
	env := newRotatorEnv(t)
	r, err := NewRotator(env.config())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if tc, err := r.GetCertificate(nil); err != nil || tc.Leaf == nil {
					t.Errorf("GetCertificate = %v, %v", tc, err)
					return
				}
			}
		}()
	}
	for i := range 10 {
		if i%2 == 0 {
			env.clock.Advance(7 * 24 * time.Hour)
			if _, err := r.Check(); err != nil {
				t.Error(err)
			}
		} else if err := r.Rotate("forced"); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := env.eventCount(); n != 11 {
		t.Errorf("%d rotation events, want 11 (initial and 10)", n)
	}
}
