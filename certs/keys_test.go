package certs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
)

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    KeyType
		wantErr bool
	}{
		{"", ECDSAP256, false},
		{"ECDSA_P256", ECDSAP256, false},
		{"ecdsa_p256", ECDSAP256, false},
		{" RSA_2048 ", RSA2048, false},
		{"rsa_2048", RSA2048, false},
		{"RSA_4096", "", true},
		{"ECDSA-P256", "", true},
	}
	for _, tt := range tests {
		got, err := ParseKeyType(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !(strings.Contains(err.Error(), "ECDSA_P256") && strings.Contains(err.Error(), "RSA_2048")) {
			t.Errorf("ParseKeyType(%q) error %q does not name the allowed values", tt.in, err)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	tests := []struct {
		kt      KeyType
		want    KeyType
		wantErr bool
	}{
		{"", ECDSAP256, false},
		{ECDSAP256, ECDSAP256, false},
		{RSA2048, RSA2048, false},
		{"DSA_1024", "", true},
	}
	for _, tt := range tests {
		k, err := GenerateKey(tt.kt)
		if (err != nil) != tt.wantErr {
			t.Errorf("GenerateKey(%q) error = %v, want error %v", tt.kt, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got := KeyTypeOf(k.Public()); got != tt.want {
			t.Errorf("GenerateKey(%q) made a %q key, want %q", tt.kt, got, tt.want)
		}
	}
}

func TestKeyTypeOfOthers(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []any{p384.Public(), pub, small.Public(), nil} {
		if got := KeyTypeOf(k); got != "" {
			t.Errorf("KeyTypeOf(%T) = %q, want \"\"", k, got)
		}
	}
}
