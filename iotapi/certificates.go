package iotapi

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/provisioning"
	"github.com/ggbroker/ggbroker/service"
)

// Limits of botocore's iot model: CertificatePem 1..65536, CertificateSigningRequest 1..4096.
const (
	maxCertPEM = 65536
	maxCSR     = 4096
)

// awsCertCommonName is the subject AWS IoT gives the certificates it makes.
const awsCertCommonName = "AWS IoT Certificate"

func (s *Service) certArn(id string) string { return s.arn("cert", id) }

func (s *Service) clientValidity() time.Duration {
	return time.Duration(s.core.Devices.CertificateValidityDays) * 24 * time.Hour
}

func statusFromActive(active bool) auth.Status {
	if active {
		return auth.StatusActive
	}
	return auth.StatusInactive
}

func (s *Service) createKeysAndCertificate(w http.ResponseWriter, r *http.Request) error {
	active, err := queryBool(r, "setAsActive")
	if err != nil {
		return err
	}
	// AWS makes a 2048-bit RSA key pair (botocore's CreateKeysAndCertificate doc).
	certPEM, keyPEM, cert, err := s.state.DeviceCA.IssueClient(awsCertCommonName, certs.RSA2048, s.clientValidity())
	if err != nil {
		return err
	}
	key, err := certs.ParseKeyPEM(keyPEM)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	rec, err := s.state.Registry.AddCertificate(cert, statusFromActive(active), "")
	if err != nil {
		return err
	}
	return ok(w, map[string]any{
		"certificateArn": s.certArn(rec.ID), "certificateId": rec.ID, "certificatePem": string(certPEM),
		"keyPair": map[string]string{"PublicKey": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})), "PrivateKey": string(keyPEM)},
	})
}

// SignCSR issues a device certificate for a CSR, as CreateCertificateFromCsr and fleet provisioning's
// create-from-csr do: the CSR's subject and public key, signed by the device CA.
func SignCSR(ca *certs.Authority, csrPEM string, validity time.Duration) (*x509.Certificate, []byte, error) {
	if len(csrPEM) == 0 || len(csrPEM) > maxCSR {
		return nil, nil, invalid("certificateSigningRequest must be 1 to %d characters", maxCSR)
	}
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
		return nil, nil, invalid("certificateSigningRequest is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, nil, invalid("certificateSigningRequest: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, invalid("certificateSigningRequest: the signature does not verify: %v", err)
	}
	subject := csr.Subject
	if subject.CommonName == "" && len(subject.Names) == 0 {
		subject.CommonName = awsCertCommonName
	}
	usage := x509.KeyUsageDigitalSignature
	if certs.KeyTypeOf(csr.PublicKey) == certs.RSA2048 {
		usage |= x509.KeyUsageKeyEncipherment
	}
	now := time.Now()
	cert, err := ca.Sign(&x509.Certificate{
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, csr.PublicKey)
	if err != nil {
		return nil, nil, invalid("certificateSigningRequest: %v", err)
	}
	return cert, certs.EncodeCertsPEM(cert), nil
}

func (s *Service) createCertificateFromCsr(w http.ResponseWriter, r *http.Request) error {
	active, err := queryBool(r, "setAsActive")
	if err != nil {
		return err
	}
	var in struct {
		CSR string `json:"certificateSigningRequest"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	cert, certPEM, err := SignCSR(s.state.DeviceCA, in.CSR, s.clientValidity())
	if err != nil {
		return err
	}
	rec, err := s.state.Registry.AddCertificate(cert, statusFromActive(active), "")
	if err != nil {
		return err
	}
	return ok(w, map[string]any{"certificateArn": s.certArn(rec.ID), "certificateId": rec.ID, "certificatePem": string(certPEM)})
}

func parseCertPEM(field, p string) (*x509.Certificate, error) {
	if len(p) == 0 || len(p) > maxCertPEM {
		return nil, invalid("%s must be 1 to %d characters", field, maxCertPEM)
	}
	cs, err := certs.ParseCertsPEM([]byte(p))
	if err != nil {
		return nil, fail(errCertificateValidation, "%s: %v", field, err)
	}
	return cs[0], nil
}

// registerStatus is the status a registered certificate gets: the body's status, else setAsActive.
func registerStatus(status string, active bool) (auth.Status, error) {
	if status == "" {
		return statusFromActive(active), nil
	}
	st := auth.Status(status)
	if !st.Valid() {
		return "", invalid("status %q is not ACTIVE, INACTIVE, REVOKED, PENDING_TRANSFER, REGISTER_INACTIVE or PENDING_ACTIVATION", status)
	}
	return st, nil
}

// certRegistration is the body of RegisterCertificate; RegisterCertificateWithoutCA's is the same
// without caCertificatePem.
type certRegistration struct {
	CertificatePem   string `json:"certificatePem"`
	CACertificatePem string `json:"caCertificatePem"`
	Status           string `json:"status"`
}

// readCertRegistration decodes a registration body, its certificate and the status to register it
// with (setAsActive: the query parameter RegisterCertificate also takes).
func readCertRegistration(r *http.Request, setAsActive bool) (certRegistration, *x509.Certificate, auth.Status, error) {
	var in certRegistration
	if err := decode(r, &in); err != nil {
		return in, nil, "", err
	}
	cert, err := parseCertPEM("certificatePem", in.CertificatePem)
	if err != nil {
		return in, nil, "", err
	}
	status, err := registerStatus(in.Status, setAsActive)
	return in, cert, status, err
}

func (s *Service) registerCertificate(w http.ResponseWriter, r *http.Request) error {
	active, err := queryBool(r, "setAsActive")
	if err != nil {
		return err
	}
	in, cert, status, err := readCertRegistration(r, active)
	if err != nil {
		return err
	}
	// The signer must be a CA AWS knows: a registered CA here, or a CA the broker trusts (the device
	// CA and devices.trustedCAs).
	var issuer *x509.Certificate
	if in.CACertificatePem != "" {
		if issuer, err = parseCertPEM("caCertificatePem", in.CACertificatePem); err != nil {
			return err
		}
		if err := cert.CheckSignatureFrom(issuer); err != nil {
			return fail(errCertificateValidation, "certificatePem is not signed by caCertificatePem: %v", err)
		}
	}
	caID, err := s.signerCA(cert, issuer)
	if err != nil {
		return err
	}
	return s.addCertificate(w, cert, status, caID)
}

// signerCA finds the registered CA (its ID) or trusted CA ("") that signed cert; issuer, if given,
// is the CA the caller named.
func (s *Service) signerCA(cert, issuer *x509.Certificate) (string, error) {
	for _, ca := range s.catalog.CAs() {
		if issuer != nil && !ca.Cert().Equal(issuer) {
			continue
		}
		if cert.CheckSignatureFrom(ca.Cert()) == nil {
			if ca.Status != provisioning.CAActive {
				return "", fail(errCertificateState, "the CA certificate %s that signed it is %s", ca.ID, ca.Status)
			}
			return ca.ID, nil
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: s.state.TrustedDeviceCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		return "", nil
	}
	if issuer != nil {
		return "", fail(errCertificateValidation, "caCertificatePem is not a registered CA certificate: register it first (RegisterCACertificate)")
	}
	return "", fail(errCertificateValidation, "the certificate is not signed by a registered CA certificate; use RegisterCertificateWithoutCA, or register its CA")
}

func (s *Service) addCertificate(w http.ResponseWriter, cert *x509.Certificate, status auth.Status, caID string) error {
	rec, err := s.state.Registry.AddCertificate(cert, status, caID)
	if err != nil {
		if errors.Is(err, auth.ErrExists) {
			id := certs.Fingerprint(cert)
			return &apiError{typ: errResourceAlreadyExists, msg: "The certificate is already provisioned or registered",
				fields: map[string]any{"resourceId": id, "resourceArn": s.certArn(id)}}
		}
		return err
	}
	return ok(w, map[string]any{"certificateArn": s.certArn(rec.ID), "certificateId": rec.ID})
}

func (s *Service) registerCertificateWithoutCA(w http.ResponseWriter, r *http.Request) error {
	_, cert, status, err := readCertRegistration(r, false)
	if err != nil {
		return err
	}
	return s.addCertificate(w, cert, status, "")
}

func (s *Service) certificate(r *http.Request) (*auth.Certificate, *x509.Certificate, error) {
	id := r.PathValue("certificateId")
	if !isCertID(id) {
		return nil, nil, invalid("certificateId %q is not 64 hexadecimal characters", id)
	}
	rec, parsed, err := s.state.Registry.Certificate(id)
	if err != nil {
		return nil, nil, err
	}
	if rec == nil {
		return nil, nil, fail(errResourceNotFound, "The certificate %s does not exist", id)
	}
	return rec, parsed, nil
}

func modified(c *auth.Certificate) time.Time {
	if c.ModifiedAt.IsZero() {
		return c.CreatedAt
	}
	return c.ModifiedAt
}

func generationID(pem string) string {
	sum := sha256.Sum256([]byte(pem))
	return hex.EncodeToString(sum[:16])
}

func (s *Service) describeCertificate(w http.ResponseWriter, r *http.Request) error {
	rec, parsed, err := s.certificate(r)
	if err != nil {
		return err
	}
	d := map[string]any{
		"certificateArn": s.certArn(rec.ID), "certificateId": rec.ID, "status": string(rec.Status), "certificatePem": rec.PEM,
		"ownedBy": s.core.Core.AccountID, "creationDate": epoch(rec.CreatedAt), "lastModifiedDate": epoch(modified(rec)),
		"customerVersion": 1, "generationId": generationID(rec.PEM), "certificateMode": "DEFAULT",
		"validity": map[string]any{"notBefore": epoch(parsed.NotBefore), "notAfter": epoch(parsed.NotAfter)},
	}
	if rec.CACertificateID != "" {
		d["caCertificateId"] = rec.CACertificateID
	}
	return ok(w, map[string]any{"certificateDescription": d})
}

func (s *Service) listCertificates(w http.ResponseWriter, r *http.Request) error {
	all, err := s.state.Registry.Certificates()
	if err != nil {
		return err
	}
	return s.writeCertificateList(w, r, all)
}

// writeCertificateList answers ListCertificates and ListCertificatesByCA: newest first unless
// isAscendingOrder, pageSize 1..250, marker.
func (s *Service) writeCertificateList(w http.ResponseWriter, r *http.Request, list []*auth.Certificate) error {
	asc, err := queryBool(r, "isAscendingOrder")
	if err != nil {
		return err
	}
	if !asc {
		list = slices.Clone(list)
		slices.Reverse(list)
	}
	p, err := paginate(r, len(list), "marker", "pageSize", 25, 250)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, p.end-p.start)
	for _, c := range list[p.start:p.end] {
		out = append(out, map[string]any{"certificateArn": s.certArn(c.ID), "certificateId": c.ID, "status": string(c.Status),
			"certificateMode": "DEFAULT", "creationDate": epoch(c.CreatedAt)})
	}
	res := map[string]any{"certificates": out}
	if p.next != "" {
		res["nextMarker"] = p.next
	}
	return ok(w, res)
}

func (s *Service) updateCertificate(w http.ResponseWriter, r *http.Request) error {
	rec, _, err := s.certificate(r)
	if err != nil {
		return err
	}
	status := auth.Status(r.URL.Query().Get("newStatus"))
	if status == "" {
		return invalid("newStatus is required")
	}
	if !status.Valid() {
		return invalid("newStatus %q is not ACTIVE, INACTIVE, REVOKED, PENDING_TRANSFER, REGISTER_INACTIVE or PENDING_ACTIVATION", status)
	}
	if err := s.state.Registry.SetCertificateStatus(rec.ID, status); err != nil {
		return err
	}
	if status != auth.StatusActive {
		s.disconnectCertificate(rec.ID, "certificate "+string(status)+" by UpdateCertificate")
	}
	return ok(w, nil)
}

// disconnectCertificate closes every live connection of a certificate that may no longer connect.
// AWS does it "within minutes"; here it is at once (the next connect is refused by the registry).
func (s *Service) disconnectCertificate(id, reason string) {
	for _, c := range s.host.Clients() {
		if c.CertificateID != id {
			continue
		}
		if err := s.host.Disconnect(c, reason); errors.Is(err, service.ErrNotConnected) {
			continue // gone already (the broker's own revocation watch may have been first)
		} else if err != nil {
			s.log.Warn("disconnect failed", zap.String("clientId", c.ClientID), zap.String("principalId", id), zap.Error(err))
			continue
		}
		s.log.Info("disconnected a client whose certificate left ACTIVE", zap.String("clientId", c.ClientID),
			zap.String("principalId", id), zap.String("reason", reason))
	}
}

func (s *Service) deleteCertificate(w http.ResponseWriter, r *http.Request) error {
	rec, _, err := s.certificate(r)
	if err != nil {
		return err
	}
	force, err := queryBool(r, "forceDelete")
	if err != nil {
		return err
	}
	if err := s.state.Registry.DeleteCertificate(rec.ID, force); err != nil {
		return err
	}
	return ok(w, nil)
}

// principal is the certificate the x-amzn-principal header names (AttachThingPrincipal and others).
func (s *Service) principal(r *http.Request) (*auth.Certificate, error) {
	p := r.Header.Get("x-amzn-principal")
	if p == "" {
		return nil, invalid("the principal (header x-amzn-principal) is required")
	}
	id, err := certIDFromARN(p)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.state.Registry.Certificate(id)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fail(errResourceNotFound, "The certificate %s does not exist", id)
	}
	return rec, nil
}

func (s *Service) attachThingPrincipal(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	if _, err := s.thing(name); err != nil {
		return err
	}
	rec, err := s.principal(r)
	if err != nil {
		return err
	}
	switch typ := r.URL.Query().Get("thingPrincipalType"); typ {
	case "", "NON_EXCLUSIVE_THING":
	case "EXCLUSIVE_THING":
		for _, other := range rec.Things {
			if other != name {
				return invalid("the certificate is attached to thing %s: an EXCLUSIVE_THING principal has one thing only", other)
			}
		}
	default:
		return invalid("thingPrincipalType %q is not EXCLUSIVE_THING or NON_EXCLUSIVE_THING", typ)
	}
	if err := s.state.Registry.AttachThing(rec.ID, name); err != nil {
		return err
	}
	return ok(w, map[string]any{})
}

func (s *Service) detachThingPrincipal(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	if _, err := s.thing(name); err != nil {
		return err
	}
	rec, err := s.principal(r)
	if err != nil {
		return err
	}
	if err := s.state.Registry.DetachThing(rec.ID, name); err != nil {
		return err
	}
	return ok(w, map[string]any{})
}

func (s *Service) listThingPrincipals(w http.ResponseWriter, r *http.Request) error {
	name, err := thingName(r)
	if err != nil {
		return err
	}
	if _, err := s.thing(name); err != nil {
		return err
	}
	list, err := s.state.Registry.CertificatesOf(name)
	if err != nil {
		return err
	}
	return s.writeCertArnPage(w, r, list, "nextToken", "maxResults", "principals", "nextToken")
}

// writeCertArnPage answers one page of certificates as their ARNs: the request's tokenName and
// limitName page them (25 a page, 250 at most), listKey holds them, nextKey the next page's token.
func (s *Service) writeCertArnPage(w http.ResponseWriter, r *http.Request, list []*auth.Certificate, tokenName, limitName, listKey, nextKey string) error {
	arns := make([]string, len(list))
	for i, c := range list {
		arns[i] = s.certArn(c.ID)
	}
	return writeArnPage(w, r, arns, tokenName, limitName, listKey, nextKey)
}

// writeArnPage answers one page of ARNs, as writeCertArnPage.
func writeArnPage(w http.ResponseWriter, r *http.Request, arns []string, tokenName, limitName, listKey, nextKey string) error {
	p, err := paginate(r, len(arns), tokenName, limitName, 25, 250)
	if err != nil {
		return err
	}
	out := map[string]any{listKey: arns[p.start:p.end]}
	if p.next != "" {
		out[nextKey] = p.next
	}
	return ok(w, out)
}

func (s *Service) listPrincipalThings(w http.ResponseWriter, r *http.Request) error {
	rec, err := s.principal(r)
	if err != nil {
		return err
	}
	things := slices.Sorted(slices.Values(rec.Things))
	p, err := paginate(r, len(things), "nextToken", "maxResults", 25, 250)
	if err != nil {
		return err
	}
	out := map[string]any{"things": things[p.start:p.end]}
	if p.next != "" {
		out["nextToken"] = p.next
	}
	return ok(w, out)
}
