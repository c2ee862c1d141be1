package provisioning

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

func TestCatalogPersistsAndFindsSigners(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCatalog(dir)
	if err != nil {
		t.Fatal(err)
	}
	code, err := c.RegistrationCode()
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(code) {
		t.Fatalf("registration code %q %v", code, err)
	}
	root, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "root", KeyType: certs.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddCA(&CA{Status: CAActive, AutoRegistration: true, Mode: ModeSNIOnly}, root.Cert); err != nil {
		t.Fatal(err)
	}
	if err := c.AddCA(&CA{}, root.Cert); err == nil {
		t.Fatal("the same CA registered twice")
	}
	// An intermediate the root signed, which signs the device: the device sends the intermediate.
	ikey, _ := certs.GenerateKey(certs.ECDSAP256)
	inter, err := root.Sign(&x509.Certificate{Subject: pkix.Name{CommonName: "inter"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, ikey.Public())
	if err != nil {
		t.Fatal(err)
	}
	ia := &certs.Authority{Cert: inter, Key: ikey}
	_, _, leaf, err := ia.IssueClient("dev", certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.SignerOf([]*x509.Certificate{leaf}) != nil {
		t.Fatal("a leaf without its intermediate matched the root")
	}
	if got := c.SignerOf([]*x509.Certificate{leaf, inter}); got == nil || got.ID != root.Fingerprint() {
		t.Fatalf("signer through the intermediate: %+v", got)
	}

	again, err := OpenCatalog(dir)
	if err != nil {
		t.Fatal(err)
	}
	if code2, _ := again.RegistrationCode(); code2 != code {
		t.Fatal("the registration code changed across a reopen")
	}
	if cas := again.CAs(); len(cas) != 1 || !cas[0].AutoRegistration || cas[0].Cert() == nil {
		t.Fatalf("CAs after a reopen: %+v", cas)
	}
	if m := fileMode(t, dir+"/provisioning.json"); m != 0o600 {
		t.Fatalf("catalog file mode %v", m)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
