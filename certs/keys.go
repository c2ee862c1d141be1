package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
)

// KeyType is the Greengrass client device auth key type name, as written in
// the component's certificateAuthority.caType and serverCertificate key
// settings. The zero value means ECDSAP256, Greengrass' default.
type KeyType string

// The key types Greengrass supports for the core device CA and the server
// certificate.
const (
	ECDSAP256 KeyType = "ECDSA_P256" // default: small keys, fast handshakes on small boards
	RSA2048   KeyType = "RSA_2048"   // for clients whose TLS stack has no ECDSA
)

// ParseKeyType turns a configuration value into a KeyType. The match is
// case-insensitive because configuration files written by hand vary; "" gives
// the default ECDSAP256.
func ParseKeyType(s string) (KeyType, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return ECDSAP256, nil
	case strings.EqualFold(s, string(ECDSAP256)):
		return ECDSAP256, nil
	case strings.EqualFold(s, string(RSA2048)):
		return RSA2048, nil
	}
	return "", fmt.Errorf("unknown key type %q: allowed values are %s and %s", s, ECDSAP256, RSA2048)
}

// GenerateKey makes a new private key of type kt (the zero KeyType meaning
// ECDSAP256).
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case ECDSAP256, "":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate %s key: %w", ECDSAP256, err)
		}
		return k, nil
	case RSA2048:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("generate %s key: %w", RSA2048, err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("generate key: unknown key type %q: allowed values are %s and %s", string(kt), ECDSAP256, RSA2048)
}

// KeyTypeOf names the KeyType of a public key, or returns "" for a key that is
// neither an ECDSA P-256 nor a 2048-bit RSA key (a brought CA may use any key
// x509 supports). It lets a caller warn when a loaded CA's key type is not
// the configured one: LoadOrCreateAuthority keeps such a CA rather than
// replace one devices already trust.
func KeyTypeOf(pub crypto.PublicKey) KeyType {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return ECDSAP256
		}
	case *rsa.PublicKey:
		if k.N.BitLen() == 2048 {
			return RSA2048
		}
	}
	return ""
}

// keyUsageFor returns the leaf key usage for a key: RSA key exchange (TLS 1.2
// RSA cipher suites) encrypts with the certificate's key, so RSA leaves also
// need KeyEncipherment; ECDSA keys only sign.
func keyUsageFor(pub crypto.PublicKey) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}
