package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"testing"
)

func TestParseKeyPEM(t *testing.T) {
	ec, err := GenerateKey(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024) // size does not matter here; small is fast
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k crypto.Signer) []byte {
		b, err := EncodeKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sec1DER, err := x509.MarshalECPrivateKey(ec.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER})
	// `openssl ecparam -genkey` writes the curve parameters first.
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})

	tests := []struct {
		name    string
		data    []byte
		want    crypto.Signer
		wantErr string
	}{
		{"PKCS#8 ECDSA", pkcs8(ec), ec, ""},
		{"PKCS#8 RSA", pkcs8(rsaKey), rsaKey, ""},
		{"PKCS#8 Ed25519", pkcs8(ed), ed, ""},
		{"SEC1", sec1, ec, ""},
		{"SEC1 after EC PARAMETERS", append(ecParams, sec1...), ec, ""},
		{"PKCS#1", pkcs1, rsaKey, ""},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), nil, "encrypted"},
		{"certificate only", EncodeCertsPEM(newTestCA(t).Cert), nil, "no PEM private key"},
		{"empty", nil, nil, "no PEM private key"},
		{"garbage PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), nil, "PKCS#8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeyPEM(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseKeyPEM error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeyPEM: %v", err)
			}
			if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.want.Public()) {
				t.Errorf("ParseKeyPEM returned a different key")
			}
		})
	}
}

func TestParseCertsPEM(t *testing.T) {
	a, b := newTestCA(t), newTestCA(t)
	key := mustKeyPEM(t, a)
	tests := []struct {
		name    string
		data    []byte
		want    []*x509.Certificate
		wantErr bool
	}{
		{"one", EncodeCertsPEM(a.Cert), []*x509.Certificate{a.Cert}, false},
		{"two in order", EncodeCertsPEM(b.Cert, a.Cert), []*x509.Certificate{b.Cert, a.Cert}, false},
		{"key blocks skipped", append(append(append([]byte{}, key...), EncodeCertsPEM(a.Cert)...), key...), []*x509.Certificate{a.Cert}, false},
		{"none", key, nil, true},
		{"empty", nil, nil, true},
		{"DER is not PEM", a.Cert.Raw, nil, true},
		{"bad certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCertsPEM(tt.data)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCertsPEM error = %v, want error %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseCertsPEM gave %d certificates, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("certificate %d differs", i)
				}
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	a := newTestCA(t)
	sum := sha256.Sum256(a.Cert.Raw)
	want := hex.EncodeToString(sum[:])
	if got := Fingerprint(a.Cert); got != want {
		t.Errorf("Fingerprint = %q, want %q", got, want)
	}
	if got := a.Fingerprint(); got != want {
		t.Errorf("Authority.Fingerprint = %q, want %q", got, want)
	}
	if len(want) != 64 || strings.ToLower(want) != want {
		t.Errorf("fingerprint %q is not 64 lowercase hex digits", want)
	}
	if !bytes.Equal(a.CertPEM(), EncodeCertsPEM(a.Cert)) {
		t.Errorf("CertPEM of a root is not just its certificate")
	}
}
