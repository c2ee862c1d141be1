package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"testing"
	"time"
)

func TestIssueServer(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name      string
		req       ServerCertRequest
		wantDNS   []string
		wantIPs   []string
		wantUsage x509.KeyUsage
		wantKey   KeyType
		wantLife  time.Duration
	}{
		{
			name:      "ECDSA defaults",
			req:       ServerCertRequest{DNSNames: []string{"localhost", "gg.local"}, IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}},
			wantDNS:   []string{"localhost", "gg.local"},
			wantIPs:   []string{"127.0.0.1", "::1"},
			wantUsage: x509.KeyUsageDigitalSignature,
			wantKey:   ECDSAP256,
			wantLife:  7 * 24 * time.Hour,
		},
		{
			name: "RSA, duplicates dropped",
			req: ServerCertRequest{CommonName: "core", KeyType: RSA2048, Validity: time.Hour,
				DNSNames: []string{"localhost", "LOCALHOST", "", "localhost"},
				IPs:      []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP("127.0.0.1").To4(), nil}},
			wantDNS:   []string{"localhost"},
			wantIPs:   []string{"127.0.0.1"},
			wantUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			wantKey:   RSA2048,
			wantLife:  time.Hour,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			tc, err := ca.IssueServer(tt.req)
			if err != nil {
				t.Fatalf("IssueServer: %v", err)
			}
			leaf := tc.Leaf
			if leaf == nil || len(tc.Certificate) != 1 || !slices.Equal(tc.Certificate[0], leaf.Raw) {
				t.Fatalf("tls.Certificate chain/leaf wrong: %d certificates, leaf %v", len(tc.Certificate), leaf != nil)
			}
			if !slices.Equal(leaf.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IPAddresses = %v, want %v", ips, tt.wantIPs)
			}
			if leaf.KeyUsage != tt.wantUsage {
				t.Errorf("KeyUsage = %v, want %v", leaf.KeyUsage, tt.wantUsage)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || leaf.IsCA {
				t.Errorf("ExtKeyUsage = %v, IsCA %v", leaf.ExtKeyUsage, leaf.IsCA)
			}
			if got := KeyTypeOf(leaf.PublicKey); got != tt.wantKey {
				t.Errorf("key type %q, want %q", got, tt.wantKey)
			}
			signer, ok := tc.PrivateKey.(crypto.Signer)
			if !ok || !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
				t.Errorf("PrivateKey does not match the leaf")
			}
			if life := leaf.NotAfter.Sub(before); life < tt.wantLife-time.Second || life > tt.wantLife+time.Minute {
				t.Errorf("NotAfter is %v from now, want %v", life, tt.wantLife)
			}
			if !leaf.NotBefore.Before(before) {
				t.Errorf("NotBefore %v is not backdated", leaf.NotBefore)
			}
			for _, name := range []string{"localhost", "127.0.0.1"} {
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()}); err != nil {
					t.Errorf("Verify(%s): %v", name, err)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: ca.Pool()}); err == nil {
				t.Errorf("Verify accepted a name not in the SANs")
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: newTestCA(t).Pool()}); err == nil {
				t.Errorf("Verify accepted another CA")
			}
			// The key must be usable by crypto/tls as is.
			if _, err := tls.X509KeyPair(EncodeCertsPEM(leaf), mustSignerPEM(t, signer)); err != nil {
				t.Errorf("tls.X509KeyPair: %v", err)
			}
		})
	}
}

func TestIssueServerShortValidityBackdate(t *testing.T) {
	tc, err := newTestCA(t).IssueServer(ServerCertRequest{DNSNames: []string{"localhost"}, Validity: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if life := tc.Leaf.NotAfter.Sub(tc.Leaf.NotBefore); life != 2*time.Minute {
		t.Errorf("60 s certificate spans %v, want 2m (backdated by its validity, not an hour)", life)
	}
}

func TestIssueClient(t *testing.T) {
	root, inter := newRootAndIntermediate(t)
	tests := []struct {
		name      string
		ca        *Authority
		wantCerts int // in certPEM
	}{
		{"self-signed CA", newTestCA(t), 1},
		{"intermediate CA", inter, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, cert, err := tt.ca.IssueClient("thing-1", ECDSAP256, 0)
			if err != nil {
				t.Fatalf("IssueClient: %v", err)
			}
			if cert.Subject.CommonName != "thing-1" {
				t.Errorf("CommonName = %q", cert.Subject.CommonName)
			}
			if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
				t.Errorf("key is not a PKCS#8 PRIVATE KEY block")
			}
			certs, err := ParseCertsPEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != tt.wantCerts || !certs[0].Equal(cert) {
				t.Fatalf("certPEM holds %d certificates (leaf first? %v), want %d", len(certs), certs[0].Equal(cert), tt.wantCerts)
			}
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatalf("tls.X509KeyPair: %v", err)
			}
			if pair.Leaf == nil || !pair.Leaf.Equal(cert) {
				t.Errorf("key pair leaf is not the issued certificate")
			}
			roots := tt.ca.Pool()
			if _, err := cert.Verify(x509.VerifyOptions{
				Roots:         roots,
				Intermediates: poolOf(certs[1:]...),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}); err != nil {
				t.Errorf("client certificate does not verify for client auth: %v", err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: poolOf(certs[1:]...)}); err == nil {
				t.Errorf("client certificate verifies for server auth")
			}
			if tt.ca == inter && !roots.Equal(poolOf(root.Cert)) {
				t.Errorf("intermediate's pool is not its root")
			}
		})
	}
	if _, _, _, err := newTestCA(t).IssueClient("", ECDSAP256, time.Hour); err == nil {
		t.Errorf("IssueClient with an empty common name succeeded")
	}
}

func mustSignerPEM(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	b, err := EncodeKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
