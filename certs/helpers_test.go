package certs

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Rotator.Now and AuthorityOptions.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestCA makes a self-signed ECDSA core CA.
func newTestCA(t *testing.T) *Authority {
	t.Helper()
	a, err := NewAuthority(AuthorityOptions{CommonName: "test CA " + t.Name()})
	if err != nil {
		t.Fatalf("NewAuthority: %v", err)
	}
	return a
}

// newRootAndIntermediate makes a root that may sign intermediates and an
// intermediate CA signed by it, the shape of a bring-your-own CA.
func newRootAndIntermediate(t *testing.T) (root, inter *Authority) {
	t.Helper()
	now := time.Now()
	rootKey, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(t),
		Subject:               pkix.Name{CommonName: "test root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	root = &Authority{Cert: rootCert, Key: rootKey}

	interKey, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	interCert, err := root.Sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "test intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, interKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	return root, &Authority{Cert: interCert, Key: interKey, Chain: []*x509.Certificate{rootCert}}
}

func mustSerial(t *testing.T) *big.Int {
	t.Helper()
	sn, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustKeyPEM(t *testing.T, a *Authority) []byte {
	t.Helper()
	b, err := EncodeKeyPEM(a.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
