package certs

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons a server certificate is (re)issued, as given in RotationEvent.
const (
	ReasonInitial   = "initial"    // first certificate of this Rotator
	ReasonExpiring  = "expiring"   // inside the renewal window, expired or not yet valid
	ReasonSANChange = "san-change" // the wanted DNS names or IPs changed
	ReasonCAChange  = "ca-change"  // the core device CA changed
	ReasonForced    = "forced"     // Rotate called
)

// maxRenewWindow is how long before expiry Greengrass rotates its server
// certificate (24 hours); shorter-lived certificates are renewed when a
// third of their lifetime is left, as certmagic does.
const maxRenewWindow = 24 * time.Hour

// NeedsRotation decides whether leaf must be replaced, and why. It is pure
// (the Rotator calls it with its clock) so the rules can be table-tested:
//
//   - "ca-change" when leaf was not signed by ca (checked by signature, so a
//     CA re-made with the same name is noticed); a nil ca skips this check;
//   - "expiring" when now is outside the leaf's validity, or the time left is
//     less than min(24h, lifetime/3), lifetime being NotAfter-NotBefore of
//     the leaf itself, backdating included: the decision needs nothing but
//     the certificate, whoever issued it. IssueServer backdates by at most
//     the validity, so for Greengrass' 7-day default the window is 24 hours
//     and for a 60-second certificate 40 seconds;
//   - "san-change" when leaf's DNS names and IPs, as a set (order, duplicates
//     and DNS case ignored, IPs compared by value), differ from the wanted.
//
// A nil leaf needs an "initial" certificate.
func NeedsRotation(leaf *x509.Certificate, ca *x509.Certificate, wantDNS []string, wantIPs []net.IP, now time.Time) (reason string, needed bool) {
	if leaf == nil {
		return ReasonInitial, true
	}
	if ca != nil && leaf.CheckSignatureFrom(ca) != nil {
		return ReasonCAChange, true
	}
	if now.Before(leaf.NotBefore) {
		return ReasonExpiring, true
	}
	window := min(maxRenewWindow, leaf.NotAfter.Sub(leaf.NotBefore)/3)
	if leaf.NotAfter.Sub(now) < window {
		return ReasonExpiring, true
	}
	if !sameSANs(leaf.DNSNames, leaf.IPAddresses, wantDNS, wantIPs) {
		return ReasonSANChange, true
	}
	return "", false
}

func sameSANs(dnsA []string, ipsA []net.IP, dnsB []string, ipsB []net.IP) bool {
	a, b := sanSet(dnsA, ipsA), sanSet(dnsB, ipsB)
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func sanSet(dns []string, ips []net.IP) map[string]bool {
	s := map[string]bool{}
	for _, n := range uniqueDNS(dns) {
		s["dns:"+strings.ToLower(n)] = true
	}
	for _, ip := range uniqueIPs(ips) {
		s["ip:"+ip.String()] = true
	}
	return s
}

// RotatorConfig configures a Rotator. Authority and SANs are functions so a
// CA swap or a change of the core device's connectivity information is
// noticed at the next check.
type RotatorConfig struct {
	Authority func() *Authority                   // current core device CA; required
	SANs      func() (dns []string, ips []net.IP) // wanted SANs, asked at every check; required

	CommonName string        // "" -> "ggbroker"
	Validity   time.Duration // serverCertificateValiditySeconds; 0 -> 7 days. Clamping is the caller's job.
	KeyType    KeyType       // "" -> ECDSAP256
	Disabled   bool          // disableCertificateRotation: no automatic rotation; Rotate still works

	// CertPath and KeyPath, both or neither, persist the current server
	// certificate (leaf then chain) and key (0600), written atomically, so a
	// restart reuses a certificate that is still good (same CA, same SANs,
	// not inside the renewal window) instead of issuing one per boot.
	CertPath, KeyPath string

	CheckInterval time.Duration    // 0 -> 1 minute, or Validity/4 if shorter, so a check falls inside the renewal window
	Now           func() time.Time // nil -> time.Now

	OnRotate func(ev RotationEvent) // called after a new certificate is in place, under no lock; may be nil
	OnError  func(err error)        // errors of Run's checks and of reusing a persisted certificate; may be nil
}

// RotationEvent tells what a rotation replaced.
type RotationEvent struct {
	Reason   string            // one of the Reason constants
	Old, New *x509.Certificate // Old is nil for the first certificate unless a persisted one was replaced
}

// Rotator keeps the broker's TLS server certificate fresh. Handshakes read
// the current certificate through GetCertificate without any lock, so a
// rotation only affects the next handshake and drops no connection; issuing
// (key generation, signing) happens under no lock either, and only the
// pointer swap is atomic.
type Rotator struct {
	cfg      RotatorConfig
	now      func() time.Time
	interval time.Duration

	cur atomic.Pointer[served]
	// persistMu orders writes of the persisted files; it is never held by
	// readers nor while issuing.
	persistMu sync.Mutex
}

// served is a certificate in use with the fingerprint of the CA that issued
// it, so that a new CA with the same key (which still verifies the leaf, but
// changes the chain sent) is noticed too.
type served struct {
	cert *tls.Certificate
	caFP string
}

// NewRotator validates cfg and puts the first certificate in place: the
// persisted one if CertPath is set and it is still good, else a new one (and
// then OnRotate is called with Reason "initial").
func NewRotator(cfg RotatorConfig) (*Rotator, error) {
	switch {
	case cfg.Authority == nil:
		return nil, errors.New("server certificate rotator: Authority is required")
	case cfg.SANs == nil:
		return nil, errors.New("server certificate rotator: SANs is required")
	case cfg.Validity < 0:
		return nil, fmt.Errorf("server certificate rotator: negative validity %v", cfg.Validity)
	case cfg.CheckInterval < 0:
		return nil, fmt.Errorf("server certificate rotator: negative check interval %v", cfg.CheckInterval)
	case (cfg.CertPath == "") != (cfg.KeyPath == ""):
		return nil, fmt.Errorf("server certificate rotator: CertPath (%q) and KeyPath (%q) must be set together", cfg.CertPath, cfg.KeyPath)
	}
	if cfg.KeyType != "" {
		if _, err := ParseKeyType(string(cfg.KeyType)); err != nil {
			return nil, fmt.Errorf("server certificate rotator: %w", err)
		}
	}
	r := &Rotator{cfg: cfg, now: cfg.Now}
	if r.now == nil {
		r.now = time.Now
	}
	validity := cfg.Validity
	if validity == 0 {
		validity = defaultServerValidity
	}
	r.interval = cfg.CheckInterval
	if r.interval == 0 {
		r.interval = min(time.Minute, validity/4)
	}

	ca := cfg.Authority()
	if ca == nil {
		return nil, errors.New("server certificate rotator: no CA")
	}
	dns, ips := cfg.SANs()
	var old *x509.Certificate
	if cfg.CertPath != "" {
		s, err := r.load(ca)
		switch {
		case err != nil:
			r.reportError(fmt.Errorf("reuse server certificate: %w; issuing a new one", err))
		case s != nil:
			if _, needed := NeedsRotation(s.cert.Leaf, ca.Cert, dns, ips, r.now()); !needed {
				r.cur.Store(s)
				return r, nil
			}
			old = s.cert.Leaf
		}
	}
	s, err := r.issue(ca, dns, ips)
	if err != nil {
		return nil, err
	}
	r.cur.Store(s)
	if err := r.persist(s); err != nil {
		return nil, err
	}
	r.notify(ReasonInitial, old, s)
	return r, nil
}

// GetCertificate returns the current certificate; it is meant for
// tls.Config.GetCertificate, so each handshake gets the newest one.
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load().cert, nil
}

// Current returns the current leaf certificate.
func (r *Rotator) Current() *x509.Certificate {
	return r.cur.Load().cert.Leaf
}

// Rotate issues a new certificate now, whatever Disabled says: for an admin
// endpoint or a signal. reason "" means "forced". If persisting the new
// certificate fails, it is in use all the same and the error is returned.
func (r *Rotator) Rotate(reason string) error {
	if reason == "" {
		reason = ReasonForced
	}
	ca := r.cfg.Authority()
	if ca == nil {
		return errors.New("rotate server certificate: no CA")
	}
	dns, ips := r.cfg.SANs()
	s, err := r.issue(ca, dns, ips)
	if err != nil {
		return fmt.Errorf("rotate server certificate (%s): %w", reason, err)
	}
	old := r.cur.Swap(s)
	perr := r.persist(s)
	r.notify(reason, old.cert.Leaf, s)
	return perr
}

// Check is one maintenance pass: it rotates the certificate if NeedsRotation
// says so or the CA changed, unless Disabled. rotated is true when a new
// certificate is in place, even if persisting it failed (err says so).
func (r *Rotator) Check() (rotated bool, err error) {
	if r.cfg.Disabled {
		return false, nil
	}
	old := r.cur.Load()
	ca := r.cfg.Authority()
	if ca == nil {
		return false, errors.New("check server certificate: no CA")
	}
	dns, ips := r.cfg.SANs()
	reason, needed := NeedsRotation(old.cert.Leaf, ca.Cert, dns, ips, r.now())
	if !needed && old.caFP != ca.Fingerprint() {
		reason, needed = ReasonCAChange, true
	}
	if !needed {
		return false, nil
	}
	s, err := r.issue(ca, dns, ips)
	if err != nil {
		return false, fmt.Errorf("rotate server certificate (%s): %w", reason, err)
	}
	if !r.cur.CompareAndSwap(old, s) {
		// A concurrent Rotate got there first; its certificate is as new.
		return false, nil
	}
	perr := r.persist(s)
	r.notify(reason, old.cert.Leaf, s)
	return true, perr
}

// Run calls Check every CheckInterval until ctx is done, passing errors to
// OnError. With Disabled it only waits for ctx.
func (r *Rotator) Run(ctx context.Context) {
	if r.cfg.Disabled {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := r.Check(); err != nil {
				r.reportError(err)
			}
		}
	}
}

func (r *Rotator) issue(ca *Authority, dns []string, ips []net.IP) (*served, error) {
	c, err := ca.issueServer(ServerCertRequest{
		CommonName: r.cfg.CommonName,
		DNSNames:   dns,
		IPs:        ips,
		Validity:   r.cfg.Validity,
		KeyType:    r.cfg.KeyType,
	}, r.now())
	if err != nil {
		return nil, err
	}
	return &served{cert: c, caFP: ca.Fingerprint()}, nil
}

func (r *Rotator) notify(reason string, old *x509.Certificate, s *served) {
	if r.cfg.OnRotate != nil {
		r.cfg.OnRotate(RotationEvent{Reason: reason, Old: old, New: s.cert.Leaf})
	}
}

func (r *Rotator) reportError(err error) {
	if r.cfg.OnError != nil {
		r.cfg.OnError(err)
	}
}

// persist writes s to CertPath and KeyPath if they are set and s is still
// the current certificate (a later rotation's files must not be overwritten
// by an earlier one's). The key is written first: after a power cut between
// the two writes the pair does not match, and the next start issues anew.
func (r *Rotator) persist(s *served) error {
	if r.cfg.CertPath == "" {
		return nil
	}
	r.persistMu.Lock()
	defer r.persistMu.Unlock()
	if r.cur.Load() != s {
		return nil
	}
	keyPEM, err := EncodeKeyPEM(s.cert.PrivateKey.(crypto.Signer))
	if err != nil {
		return fmt.Errorf("save server private key %q: %w", r.cfg.KeyPath, err)
	}
	var certPEM []byte
	for _, der := range s.cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for _, p := range []string{r.cfg.KeyPath, r.cfg.CertPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("create directory for %q: %w", p, err)
		}
	}
	if err := WriteFileAtomic(r.cfg.KeyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("save server private key: %w", err)
	}
	if err := WriteFileAtomic(r.cfg.CertPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("save server certificate: %w", err)
	}
	return nil
}

// load reads the persisted certificate and key. Neither file existing is
// not an error (nil, nil); anything else unusable is, so it can be reported
// before a new certificate replaces it.
func (r *Rotator) load(ca *Authority) (*served, error) {
	certExists, err := fileExists(r.cfg.CertPath)
	if err != nil {
		return nil, fmt.Errorf("server certificate %q: %w", r.cfg.CertPath, err)
	}
	keyExists, err := fileExists(r.cfg.KeyPath)
	if err != nil {
		return nil, fmt.Errorf("server private key %q: %w", r.cfg.KeyPath, err)
	}
	switch {
	case !certExists && !keyExists:
		return nil, nil
	case !keyExists:
		return nil, fmt.Errorf("server private key %q: %w", r.cfg.KeyPath, fs.ErrNotExist)
	case !certExists:
		return nil, fmt.Errorf("server certificate %q: %w", r.cfg.CertPath, fs.ErrNotExist)
	}
	certs, err := readCerts(r.cfg.CertPath)
	if err != nil {
		return nil, fmt.Errorf("server certificate %q: %w", r.cfg.CertPath, err)
	}
	key, err := readKey(r.cfg.KeyPath)
	if err != nil {
		return nil, fmt.Errorf("server private key %q: %w", r.cfg.KeyPath, err)
	}
	leaf := certs[0]
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("server private key %q does not match certificate %q", r.cfg.KeyPath, r.cfg.CertPath)
	}
	// The chain is rebuilt from the current CA rather than read back: it
	// is what NeedsRotation checked the leaf against.
	return &served{
		cert: &tls.Certificate{
			Certificate: append([][]byte{leaf.Raw}, ca.chainDER()...),
			PrivateKey:  key,
			Leaf:        leaf,
		},
		caFP: ca.Fingerprint(),
	}, nil
}
