package certs

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewAuthority(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name         string
		opts         AuthorityOptions
		wantCN       string
		wantKey      KeyType
		wantValidity time.Duration
	}{
		{"defaults", AuthorityOptions{Now: func() time.Time { return now }}, "ggbroker Core Device CA", ECDSAP256, 5 * 365 * 24 * time.Hour},
		{"RSA", AuthorityOptions{CommonName: "rsa CA", Organization: "Example", KeyType: RSA2048, Validity: 48 * time.Hour, Now: func() time.Time { return now }},
			"rsa CA", RSA2048, 48 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAuthority(tt.opts)
			if err != nil {
				t.Fatalf("NewAuthority: %v", err)
			}
			c := a.Cert
			if c.Subject.CommonName != tt.wantCN {
				t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, tt.wantCN)
			}
			if tt.opts.Organization != "" && (len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != tt.opts.Organization) {
				t.Errorf("Organization = %v, want %q", c.Subject.Organization, tt.opts.Organization)
			}
			if got := KeyTypeOf(a.Key.Public()); got != tt.wantKey {
				t.Errorf("key type = %q, want %q", got, tt.wantKey)
			}
			if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 {
				t.Errorf("IsCA %v BasicConstraintsValid %v MaxPathLen %d", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen)
			}
			if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("KeyUsage = %v", c.KeyUsage)
			}
			if !c.NotBefore.Equal(now.Add(-time.Hour)) || !c.NotAfter.Equal(now.Add(tt.wantValidity)) {
				t.Errorf("validity %v .. %v, want %v .. %v", c.NotBefore, c.NotAfter, now.Add(-time.Hour), now.Add(tt.wantValidity))
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 || c.SerialNumber.BitLen() < 64 {
				t.Errorf("serial %v is not a random positive 128-bit number", c.SerialNumber)
			}
			if !isSelfSigned(c) {
				t.Errorf("CA is not self-signed")
			}
			if len(c.SubjectKeyId) == 0 {
				t.Errorf("CA has no SubjectKeyId")
			}
		})
	}
}

func TestLoadOrCreateAuthority(t *testing.T) {
	for _, kt := range []KeyType{ECDSAP256, RSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca") // does not exist yet
			certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
			opts := AuthorityOptions{KeyType: kt}

			a, created, err := LoadOrCreateAuthority(certPath, keyPath, opts)
			if err != nil || !created {
				t.Fatalf("first LoadOrCreateAuthority = created %v, %v; want created", created, err)
			}
			for _, f := range []struct {
				path string
				perm os.FileMode
			}{{dir, 0o700}, {keyPath, 0o600}, {certPath, 0o644}} {
				fi, err := os.Stat(f.path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != f.perm {
					t.Errorf("%s mode = %v, want %v", f.path, fi.Mode().Perm(), f.perm)
				}
			}

			b, created, err := LoadOrCreateAuthority(certPath, keyPath, opts)
			if err != nil || created {
				t.Fatalf("second LoadOrCreateAuthority = created %v, %v; want loaded", created, err)
			}
			if b.Fingerprint() != a.Fingerprint() {
				t.Errorf("reloaded CA fingerprint %s, want %s", b.Fingerprint(), a.Fingerprint())
			}
			if KeyTypeOf(b.Key.Public()) != kt {
				t.Errorf("reloaded key type %q, want %q", KeyTypeOf(b.Key.Public()), kt)
			}
			if len(b.Chain) != 0 {
				t.Errorf("reloaded root has a chain of %d", len(b.Chain))
			}
		})
	}
}

func TestLoadOrCreateAuthorityKeepsOtherKeyType(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	a, _, err := LoadOrCreateAuthority(certPath, keyPath, AuthorityOptions{KeyType: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	b, created, err := LoadOrCreateAuthority(certPath, keyPath, AuthorityOptions{KeyType: RSA2048})
	if err != nil || created {
		t.Fatalf("LoadOrCreateAuthority with another key type = created %v, %v; want the existing CA", created, err)
	}
	if b.Fingerprint() != a.Fingerprint() || KeyTypeOf(b.Key.Public()) != ECDSAP256 {
		t.Errorf("the existing CA was replaced")
	}
}

func TestLoadOrCreateAuthorityErrors(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	leafKey, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Sign(&x509.Certificate{
		Subject:   pkix.Name{CommonName: "device"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
	}, leafKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	leafAsCA := &Authority{Cert: leaf, Key: leafKey}

	tests := []struct {
		name     string
		cert     []byte // nil: file absent
		key      []byte
		wantFile string // "cert" or "key": which path the error must name
		wantText string
	}{
		{"key missing", ca.CertPEM(), nil, "key", "does not: restore"},
		{"certificate missing", nil, mustKeyPEM(t, ca), "cert", "does not: restore"},
		{"key mismatch", ca.CertPEM(), mustKeyPEM(t, other), "key", "does not match"},
		{"not a CA", leafAsCA.CertPEM(), mustKeyPEM(t, leafAsCA), "cert", "not a CA"},
		{"garbage certificate", []byte("hello"), mustKeyPEM(t, ca), "cert", "no PEM CERTIFICATE"},
		{"garbage key", ca.CertPEM(), []byte("hello"), "key", "no PEM private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
			if tt.cert != nil {
				writeFile(t, dir, "ca.pem", tt.cert)
			}
			if tt.key != nil {
				writeFile(t, dir, "ca.key", tt.key)
			}
			a, created, err := LoadOrCreateAuthority(certPath, keyPath, AuthorityOptions{})
			if err == nil {
				t.Fatalf("LoadOrCreateAuthority succeeded (created %v, CA %v)", created, a != nil)
			}
			want := certPath
			if tt.wantFile == "key" {
				want = keyPath
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not name %s and say %q", err, want, tt.wantText)
			}
			// A broken CA must never be replaced behind the operator's back.
			if tt.cert == nil {
				if _, err := os.Stat(certPath); err == nil {
					t.Errorf("a certificate was created next to a lone key")
				}
			}
		})
	}
}

func TestLoadAuthorityFromURIs(t *testing.T) {
	root, inter := newRootAndIntermediate(t)
	dir := t.TempDir()
	certPath := writeFile(t, dir, "inter.pem", EncodeCertsPEM(inter.Cert))
	keyPath := writeFile(t, dir, "inter.key", mustKeyPEM(t, inter))
	chainPath := writeFile(t, dir, "chain.pem", EncodeCertsPEM(root.Cert))
	fullChainPath := writeFile(t, dir, "full.pem", EncodeCertsPEM(inter.Cert, root.Cert)) // starts with the CA itself
	wrongOrder := writeFile(t, dir, "wrong.pem", EncodeCertsPEM(newTestCA(t).Cert))
	rootCertPath := writeFile(t, dir, "root.pem", EncodeCertsPEM(root.Cert))
	rootKeyPath := writeFile(t, dir, "root.key", mustKeyPEM(t, root))

	tests := []struct {
		name             string
		cert, key, chain string
		wantChain        int
		wantErr          string
		wantErrURI       string
	}{
		{"file URIs with chain", "file://" + certPath, "file://" + keyPath, "file://" + chainPath, 1, "", ""},
		{"file://localhost", "file://localhost" + certPath, "file://" + keyPath, "file://" + chainPath, 1, "", ""},
		{"plain paths", certPath, keyPath, chainPath, 1, "", ""},
		{"chain repeating the CA", "file://" + certPath, "file://" + keyPath, "file://" + fullChainPath, 1, "", ""},
		{"certificate file holding the chain", "file://" + fullChainPath, "file://" + keyPath, "", 1, "", ""},
		{"root, no chain", "file://" + rootCertPath, "file://" + rootKeyPath, "", 0, "", ""},
		{"pkcs11 key", "file://" + certPath, "pkcs11:object=CA;type=private", "", 0, "not supported", "pkcs11:object=CA;type=private"},
		{"https certificate", "https://example.com/ca.pem", "file://" + keyPath, "", 0, "not supported", "https://example.com/ca.pem"},
		{"file URI with a host", "file://server" + certPath, "file://" + keyPath, "", 0, "host", "file://server" + certPath},
		{"missing key", "file://" + certPath, "file://" + dir + "/nope.key", "", 0, "no such file", "file://" + dir + "/nope.key"},
		{"empty key URI", "file://" + certPath, "", "", 0, "empty", "private key"},
		{"chain not above the CA", "file://" + certPath, "file://" + keyPath, "file://" + wrongOrder, 0, "did not sign", "file://" + wrongOrder},
		{"key of another CA", "file://" + certPath, "file://" + rootKeyPath, "", 0, "does not match", "file://" + rootKeyPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := LoadAuthorityFromURIs(tt.cert, tt.key, tt.chain)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatal("LoadAuthorityFromURIs succeeded")
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.wantErrURI) {
					t.Errorf("error %q does not say %q about %q", err, tt.wantErr, tt.wantErrURI)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadAuthorityFromURIs: %v", err)
			}
			if len(a.Chain) != tt.wantChain {
				t.Fatalf("chain length %d, want %d", len(a.Chain), tt.wantChain)
			}
			// Whatever the CA, clients trust the root.
			if !a.root().Equal(root.Cert) {
				t.Errorf("root is %q, want the test root", a.root().Subject)
			}
			verifyServer(t, a, root.Cert)
		})
	}
}

// verifyServer issues a server certificate from a and checks that a client
// trusting only a.Pool() accepts it, and that the pool is exactly wantRoot.
func verifyServer(t *testing.T, a *Authority, wantRoot *x509.Certificate) {
	t.Helper()
	tc, err := a.IssueServer(ServerCertRequest{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatalf("IssueServer: %v", err)
	}
	inters := x509.NewCertPool()
	for _, der := range tc.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if c.Equal(wantRoot) {
			t.Errorf("server chain includes the self-signed root")
		}
		inters.AddCert(c)
	}
	wantLen := 1
	if !isSelfSigned(a.Cert) {
		wantLen = 2 // leaf and the intermediate
	}
	if len(tc.Certificate) != wantLen {
		t.Errorf("server chain has %d certificates, want %d", len(tc.Certificate), wantLen)
	}
	if !a.Pool().Equal(poolOf(wantRoot)) {
		t.Errorf("Pool() is not just the root")
	}
	if _, err := tc.Leaf.Verify(x509.VerifyOptions{
		DNSName:       "localhost",
		Roots:         a.Pool(),
		Intermediates: inters,
	}); err != nil {
		t.Errorf("server certificate does not verify against Pool(): %v", err)
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
