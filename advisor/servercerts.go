package advisor

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// WrongServerName is the only name in the certificate TLS_Incorrect_Subject_Name_Server_Cert serves
// (advisor.md acceptance case 3).
const WrongServerName = "wrong.example"

// largeChainFactor is how much larger than the normal chain TLS_Large_Size_Server_Cert's chain is
// (DA-TLS: "20% larger than normal").
const largeChainFactor = 1.2

// paddingOID marks the non-critical extension that pads the large certificate. It is under the
// example arc 1.3.6.1.4.1.32473 (RFC 5612), which no verifier acts on.
var paddingOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 1, 1}

// serverCerts are the certificates one run serves. They are made in memory when the run starts and
// dropped with it: none is written to disk, so the broker's listeners (which serve only what the
// rotator keeps in the state directory) can never hand one out.
type serverCerts struct {
	normal    *tls.Certificate // signed by the core CA, valid for the names the device dials
	unknownCA *tls.Certificate // same names, signed by a CA made for this run and trusted by no one
	wrongName *tls.Certificate // signed by the core CA, valid only for WrongServerName
	expired   *tls.Certificate // signed by the core CA, expired a day ago
	large     *tls.Certificate // signed by the core CA, chain at least 20% larger than normal's
}

func newServerCerts(ca *certs.Authority, names []string, ips []net.IP, validity time.Duration, now time.Time) (*serverCerts, error) {
	kt := certs.KeyTypeOf(ca.Cert.PublicKey)
	if kt == "" {
		kt = certs.ECDSAP256
	}
	s := &serverCerts{}
	var err error
	if s.normal, err = ca.IssueServer(certs.ServerCertRequest{CommonName: "ggbroker advisor", DNSNames: names, IPs: ips, Validity: validity, KeyType: kt}); err != nil {
		return nil, fmt.Errorf("advisor server certificate: %w", err)
	}
	untrusted, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "ggbroker advisor untrusted CA", Organization: "ggbroker advisor", KeyType: kt, Validity: validity})
	if err != nil {
		return nil, fmt.Errorf("advisor untrusted CA: %w", err)
	}
	if s.unknownCA, err = untrusted.IssueServer(certs.ServerCertRequest{CommonName: "ggbroker advisor", DNSNames: names, IPs: ips, Validity: validity, KeyType: kt}); err != nil {
		return nil, fmt.Errorf("advisor certificate of an unknown CA: %w", err)
	}
	// The untrusted CA's certificate is sent too, so a device that skips verification sees a complete chain.
	s.unknownCA.Certificate = append(s.unknownCA.Certificate, untrusted.Cert.Raw)
	if s.wrongName, err = ca.IssueServer(certs.ServerCertRequest{CommonName: WrongServerName, DNSNames: []string{WrongServerName}, Validity: validity, KeyType: kt}); err != nil {
		return nil, fmt.Errorf("advisor certificate with a wrong name: %w", err)
	}
	if s.expired, err = signServer(ca, kt, names, ips, now.Add(-48*time.Hour), now.Add(-24*time.Hour), 0); err != nil {
		return nil, fmt.Errorf("advisor expired certificate: %w", err)
	}
	normalSize := chainSize(s.normal)
	target := int(float64(normalSize)*largeChainFactor) + 1
	pad := target - normalSize
	for range 3 {
		s.large, err = signServer(ca, kt, names, ips, now.Add(-time.Hour), now.Add(validity), pad)
		if err != nil {
			return nil, fmt.Errorf("advisor large certificate: %w", err)
		}
		if got := chainSize(s.large); got >= target {
			break
		} else {
			pad += target - got
		}
	}
	return s, nil
}

// signServer signs a server certificate with an explicit validity window and, when pad > 0, a
// non-critical padding extension of pad bytes.
func signServer(ca *certs.Authority, kt certs.KeyType, names []string, ips []net.IP, notBefore, notAfter time.Time, pad int) (*tls.Certificate, error) {
	key, err := certs.GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "ggbroker advisor"},
		DNSNames:              names,
		IPAddresses:           ips,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              keyUsage(key.Public()),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if pad > 0 {
		filler := make([]byte, pad)
		if _, err := rand.Read(filler); err != nil {
			return nil, err
		}
		val, err := asn1.Marshal(filler)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: paddingOID, Value: val}}
	}
	leaf, err := ca.Sign(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	chain := [][]byte{leaf.Raw}
	if ca.Cert.Issuer.String() != ca.Cert.Subject.String() {
		chain = append(chain, ca.Cert.Raw)
	}
	for _, c := range ca.Chain {
		if c.Issuer.String() != c.Subject.String() {
			chain = append(chain, c.Raw)
		}
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

func keyUsage(pub crypto.PublicKey) x509.KeyUsage {
	if certs.KeyTypeOf(pub) == certs.RSA2048 {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

// chainSize is the number of DER bytes a certificate chain puts on the wire.
func chainSize(c *tls.Certificate) int {
	n := 0
	for _, der := range c.Certificate {
		n += len(der)
	}
	return n
}
