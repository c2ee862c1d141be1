package certs

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Defaults for certificates issued by an Authority.
const (
	defaultServerCommonName = "ggbroker"
	// defaultServerValidity is Greengrass' serverCertificateValiditySeconds
	// default (604800 s): short-lived, because it is rotated anyway.
	defaultServerValidity = 7 * 24 * time.Hour
	defaultClientValidity = 365 * 24 * time.Hour
)

// ServerCertRequest describes the broker's TLS server certificate.
type ServerCertRequest struct {
	CommonName string        // "" -> "ggbroker"
	DNSNames   []string      // duplicates (case-insensitive) are dropped
	IPs        []net.IP      // duplicates are dropped
	Validity   time.Duration // 0 -> 7 days, Greengrass' default
	KeyType    KeyType       // "" -> ECDSAP256
}

// IssueServer makes a fresh key and a TLS server certificate for it, signed
// by a, valid from now for req.Validity (NotBefore is backdated by up to an
// hour for clock skew, see backdate). The returned certificate's chain is
// the leaf followed by a.Cert and a.Chain without any self-signed root, and
// its Leaf is set.
func (a *Authority) IssueServer(req ServerCertRequest) (*tls.Certificate, error) {
	return a.issueServer(req, time.Now())
}

// issueServer is IssueServer at a given time, so a Rotator with a fake clock
// issues certificates its own renewal decisions agree with.
func (a *Authority) issueServer(req ServerCertRequest, now time.Time) (*tls.Certificate, error) {
	cn := req.CommonName
	if cn == "" {
		cn = defaultServerCommonName
	}
	validity := req.Validity
	if validity == 0 {
		validity = defaultServerValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("issue server certificate %q: negative validity %v", cn, validity)
	}
	key, err := GenerateKey(req.KeyType)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate %q: %w", cn, err)
	}
	leaf, err := a.Sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              uniqueDNS(req.DNSNames),
		IPAddresses:           uniqueIPs(req.IPs),
		NotBefore:             now.Add(-backdate(validity)),
		NotAfter:              now.Add(validity),
		KeyUsage:              keyUsageFor(key.Public()),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}, key.Public())
	if err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: append([][]byte{leaf.Raw}, a.chainDER()...),
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// IssueClient makes a fresh key and a client (device) certificate with
// Subject CommonName commonName, valid from now for validity (0 -> 1 year).
// certPEM is the leaf followed by the issuers a client must send (a.Cert and
// a.Chain without a self-signed root); keyPEM is PKCS#8 ("PRIVATE KEY"),
// which OpenSSL, mosquitto and the AWS IoT Device SDKs read.
func (a *Authority) IssueClient(commonName string, kt KeyType, validity time.Duration) (certPEM, keyPEM []byte, cert *x509.Certificate, err error) {
	if commonName == "" {
		return nil, nil, nil, errors.New("issue client certificate: empty common name")
	}
	if validity == 0 {
		validity = defaultClientValidity
	}
	if validity < 0 {
		return nil, nil, nil, fmt.Errorf("issue client certificate %q: negative validity %v", commonName, validity)
	}
	key, err := GenerateKey(kt)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issue client certificate %q: %w", commonName, err)
	}
	now := time.Now()
	cert, err = a.Sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate(validity)),
		NotAfter:              now.Add(validity),
		KeyUsage:              keyUsageFor(key.Public()),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, key.Public())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issue client certificate: %w", err)
	}
	keyPEM, err = EncodeKeyPEM(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issue client certificate %q: %w", commonName, err)
	}
	certPEM = EncodeCertsPEM(append([]*x509.Certificate{cert}, a.chain()...)...)
	return certPEM, keyPEM, cert, nil
}

// backdate is how far before now a leaf's NotBefore is set: an hour of clock
// skew tolerance, but never more than the validity itself, so that a very
// short-lived certificate (Greengrass allows 60 s) does not have a lifetime
// mostly in the past, which would make its renewal window (a third of the
// lifetime, see NeedsRotation) larger than the time it is actually valid.
func backdate(validity time.Duration) time.Duration {
	return min(clockSkew, validity)
}

// uniqueDNS drops empty and repeated names; DNS names compare
// case-insensitively.
func uniqueDNS(names []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		k := strings.ToLower(n)
		if n == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, n)
	}
	return out
}

// uniqueIPs drops nil and repeated addresses, comparing by value (an IPv4
// address equals its 16-byte IPv4-mapped form).
func uniqueIPs(ips []net.IP) []net.IP {
	var out []net.IP
	seen := map[string]bool{}
	for _, ip := range ips {
		if ip == nil {
			continue
		}
		k := ip.String()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, ip)
	}
	return out
}
