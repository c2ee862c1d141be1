package bridge

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// writeIdentity makes a test CA and a client certificate for "core" and writes the three files the
// core.* keys name. It returns their paths.
func writeIdentity(t *testing.T, dir string) (cert, key, ca string) {
	t.Helper()
	auth, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "test CA"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _, err := auth.IssueClient("core", certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca = filepath.Join(dir, "core.pem.crt"), filepath.Join(dir, "core.private.key"), filepath.Join(dir, "root-ca.pem")
	for p, b := range map[string][]byte{cert: certPEM, key: keyPEM, ca: auth.CertPEM()} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

// testPKI is a CA with a server certificate for localhost and a client certificate, for a fake
// upstream and the bridge's side of it.
type testPKI struct {
	server *tls.Config
	client *tls.Config
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	auth, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "test CA"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := auth.IssueServer(certs.ServerCertRequest{DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, _, err := auth.IssueClient("core", certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{
		server: &tls.Config{Certificates: []tls.Certificate{*srv}, ClientCAs: auth.Pool(), ClientAuth: tls.RequireAndVerifyClientCert},
		client: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: auth.Pool(), ServerName: "localhost"},
	}
}
