package certs

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults for a CA made by NewAuthority.
const (
	defaultCACommonName = "ggbroker Core Device CA"
	defaultCAValidity   = 5 * 365 * 24 * time.Hour
	// clockSkew is how far NotBefore is backdated: edge boards often boot
	// with a clock that is behind until NTP catches up, and a client whose
	// clock is a little behind the broker's must not see a certificate that
	// is "not yet valid".
	clockSkew = time.Hour
)

// Authority is a CA that can sign certificates: the core device CA that
// client devices trust and that signs the broker's server certificate.
type Authority struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate // certificates above Cert up to the root (empty for a self-signed root)
}

// AuthorityOptions describe a CA to create. The zero value is usable.
type AuthorityOptions struct {
	CommonName   string           // "" -> "ggbroker Core Device CA"
	Organization string           // optional
	KeyType      KeyType          // "" -> ECDSAP256
	Validity     time.Duration    // 0 -> 5 years
	Now          func() time.Time // nil -> time.Now
}

// CertPEM returns Cert followed by Chain, PEM-encoded: the bundle a client
// device is given (what Greengrass discovery hands out as the group CA).
func (a *Authority) CertPEM() []byte {
	return EncodeCertsPEM(append([]*x509.Certificate{a.Cert}, a.Chain...)...)
}

// Fingerprint is the lowercase hex SHA-256 of Cert.Raw; it identifies the CA
// in logs and tells whether the CA changed.
func (a *Authority) Fingerprint() string {
	return Fingerprint(a.Cert)
}

// Pool returns a pool holding the root of the chain (Cert if self-signed,
// else the last of Chain): what a client trusts to verify the broker.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.root())
	return p
}

func (a *Authority) root() *x509.Certificate {
	if len(a.Chain) == 0 {
		return a.Cert
	}
	return a.Chain[len(a.Chain)-1]
}

// chainDER is what a TLS peer must send after its leaf: a.Cert and a.Chain
// without any self-signed root, which the other side already has and which
// would only lengthen every handshake.
func (a *Authority) chainDER() [][]byte {
	var out [][]byte
	for _, c := range append([]*x509.Certificate{a.Cert}, a.Chain...) {
		if !isSelfSigned(c) {
			out = append(out, c.Raw)
		}
	}
	return out
}

func (a *Authority) chain() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range append([]*x509.Certificate{a.Cert}, a.Chain...) {
		if !isSelfSigned(c) {
			out = append(out, c)
		}
	}
	return out
}

// Sign issues a certificate from tmpl for pub, signed by a. The template is
// used as given (so tests can make expired or otherwise odd certificates),
// except that a missing serial number is filled with a random 128-bit one.
// The caller's template is not modified.
func (a *Authority) Sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	if a == nil || a.Cert == nil || a.Key == nil {
		return nil, errors.New("sign certificate: authority has no certificate or key")
	}
	t := *tmpl
	if t.SerialNumber == nil {
		sn, err := randomSerial()
		if err != nil {
			return nil, err
		}
		t.SerialNumber = sn
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, a.Cert, pub, a.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q with CA %q: %w", t.Subject.CommonName, a.Cert.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate just signed: %w", err)
	}
	return c, nil
}

// randomSerial returns a random positive 128-bit serial number: unique
// without keeping a counter on disk, as RFC 5280 and the CA/B rules want.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		sn, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if sn.Sign() > 0 {
			return sn, nil
		}
	}
}

// NewAuthority creates a new self-signed CA in memory. It may sign only end
// entity certificates (MaxPathLen 0): the broker never needs an intermediate.
// NotBefore is backdated an hour for clock skew.
func NewAuthority(opts AuthorityOptions) (*Authority, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	cn := opts.CommonName
	if cn == "" {
		cn = defaultCACommonName
	}
	validity := opts.Validity
	if validity == 0 {
		validity = defaultCAValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("create CA %q: negative validity %v", cn, validity)
	}
	key, err := GenerateKey(opts.KeyType)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", cn, err)
	}
	sn, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", cn, err)
	}
	subject := pkix.Name{CommonName: cn}
	if opts.Organization != "" {
		subject.Organization = []string{opts.Organization}
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               subject,
		NotBefore:             t.Add(-clockSkew),
		NotAfter:              t.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// SubjectKeyId is derived from the key by x509.CreateCertificate for
		// CA templates; leaves then carry it as AuthorityKeyId.
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: parse certificate: %w", cn, err)
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// LoadOrCreateAuthority loads the CA kept at certPath and keyPath, or, when
// neither file exists, creates one with opts and writes both atomically (key
// 0600, certificate 0644, missing parent directories 0700). created says
// which happened.
//
// It never replaces a CA on its own: devices trust it, and a new one would
// cut them all off. So a lone certificate or key, a key that does not match
// the certificate, or a certificate that is not a CA is an error saying what
// to do, and a CA whose key type is not opts.KeyType is loaded anyway (the
// caller may warn, comparing KeyTypeOf(a.Key.Public()) with opts.KeyType).
func LoadOrCreateAuthority(certPath, keyPath string, opts AuthorityOptions) (a *Authority, created bool, err error) {
	certExists, err := fileExists(certPath)
	if err != nil {
		return nil, false, fmt.Errorf("load CA certificate %q: %w", certPath, err)
	}
	keyExists, err := fileExists(keyPath)
	if err != nil {
		return nil, false, fmt.Errorf("load CA private key %q: %w", keyPath, err)
	}
	switch {
	case certExists && keyExists:
		a, err := loadAuthorityFiles(certPath, keyPath)
		return a, false, err
	case certExists:
		return nil, false, fmt.Errorf("CA certificate %q exists but its private key %q does not: restore the key, "+
			"or remove the certificate to create a new CA (client devices must then be given the new CA)", certPath, keyPath)
	case keyExists:
		return nil, false, fmt.Errorf("CA private key %q exists but its certificate %q does not: restore the certificate, "+
			"or remove the key to create a new CA (client devices must then be given the new CA)", keyPath, certPath)
	}

	a, err = NewAuthority(opts)
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := EncodeKeyPEM(a.Key)
	if err != nil {
		return nil, false, fmt.Errorf("save CA private key %q: %w", keyPath, err)
	}
	for _, p := range []string{keyPath, certPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, false, fmt.Errorf("create directory for %q: %w", p, err)
		}
	}
	// Key first: a power cut between the two writes leaves a lone key,
	// which the next start reports instead of silently making a new CA.
	if err := WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, fmt.Errorf("save CA private key: %w", err)
	}
	if err := WriteFileAtomic(certPath, a.CertPEM(), 0o644); err != nil {
		return nil, false, fmt.Errorf("save CA certificate: %w", err)
	}
	return a, true, nil
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

func loadAuthorityFiles(certPath, keyPath string) (*Authority, error) {
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %q: %w", certPath, err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA private key %q: %w", keyPath, err)
	}
	return assembleAuthority(certs, nil, key, certPath, keyPath, "")
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCertsPEM(data)
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKeyPEM(data)
}

// assembleAuthority checks the parts of a loaded CA and puts them together.
// certs is the certificate file (the CA first, possibly followed by its
// chain, as CertPEM writes it); chain the separate chain file, if any. The
// names are the files or URIs to cite in errors.
func assembleAuthority(certs, chain []*x509.Certificate, key crypto.Signer, certName, keyName, chainName string) (*Authority, error) {
	ca := certs[0]
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, fmt.Errorf("CA certificate %q (subject %q) is not a CA certificate (basic constraints CA:TRUE missing): "+
			"use a CA certificate, not a device or server certificate", certName, ca.Subject.String())
	}
	if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %q (subject %q) may not sign certificates (key usage lacks keyCertSign)",
			certName, ca.Subject.String())
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, fmt.Errorf("CA private key %q does not match the public key of CA certificate %q: "+
			"put back the key this certificate was made with, or replace both files", keyName, certName)
	}

	// The rest of the certificate file, then the chain file, without
	// repeats: chain files often start with the CA itself.
	seen := map[string]bool{string(ca.Raw): true}
	var above []*x509.Certificate
	for _, c := range append(append([]*x509.Certificate{}, certs[1:]...), chain...) {
		if !seen[string(c.Raw)] {
			seen[string(c.Raw)] = true
			above = append(above, c)
		}
	}
	child := ca
	for i, parent := range above {
		if err := child.CheckSignatureFrom(parent); err != nil {
			name := chainName
			if name == "" {
				name = certName
			}
			return nil, fmt.Errorf("CA certificate chain %q: certificate %d (subject %q) did not sign %q: %w; "+
				"list the chain in order from the CA's issuer up to the root", name, i+1,
				parent.Subject.String(), child.Subject.String(), err)
		}
		child = parent
	}
	return &Authority{Cert: ca, Key: key, Chain: above}, nil
}

// isSelfSigned reports whether c is a root: issued by itself and verified
// by its own key.
func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// LoadAuthorityFromURIs loads a bring-your-own CA named the way Greengrass'
// client device auth component names it (certificateAuthority.certificateUri,
// privateKeyUri and certificateChainUri): each a file:// URI
// (file:///abs/path) or a plain path. chainURI may be "". Other schemes, such
// as Greengrass' pkcs11: for a key in an HSM, are not supported offline.
func LoadAuthorityFromURIs(certURI, keyURI, chainURI string) (*Authority, error) {
	certPath, err := uriPath(certURI)
	if err != nil {
		return nil, fmt.Errorf("CA certificate URI %q: %w", certURI, err)
	}
	keyPath, err := uriPath(keyURI)
	if err != nil {
		return nil, fmt.Errorf("CA private key URI %q: %w", keyURI, err)
	}
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate URI %q: %w", certURI, err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA private key URI %q: %w", keyURI, err)
	}
	var chain []*x509.Certificate
	if chainURI != "" {
		chainPath, err := uriPath(chainURI)
		if err != nil {
			return nil, fmt.Errorf("CA certificate chain URI %q: %w", chainURI, err)
		}
		if chain, err = readCerts(chainPath); err != nil {
			return nil, fmt.Errorf("load CA certificate chain URI %q: %w", chainURI, err)
		}
	}
	return assembleAuthority(certs, chain, key, certURI, keyURI, chainURI)
}

// uriPath turns a file:// URI or a plain path into a path.
func uriPath(uri string) (string, error) {
	if uri == "" {
		return "", errors.New("empty: give a file:///absolute/path URI or a path")
	}
	u, err := url.Parse(uri)
	// No scheme, or a one-letter one (a Windows drive, C:\...): a path.
	if err != nil || len(u.Scheme) <= 1 {
		if strings.Contains(uri, "://") {
			return "", fmt.Errorf("not a valid URI: %v", err)
		}
		return uri, nil
	}
	if !strings.EqualFold(u.Scheme, "file") {
		return "", fmt.Errorf("scheme %q is not supported: only file:// URIs (file:///absolute/path) and plain paths are; "+
			"ggbroker cannot use keys in an HSM (pkcs11:) or other stores", u.Scheme)
	}
	if u.Host != "" && u.Host != "localhost" {
		return "", fmt.Errorf("file URI names host %q: use file:///absolute/path (three slashes)", u.Host)
	}
	if u.Opaque != "" || u.Path == "" {
		return "", errors.New("file URI has no absolute path: use file:///absolute/path")
	}
	return filepath.FromSlash(u.Path), nil
}
