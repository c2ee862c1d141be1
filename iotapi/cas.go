package iotapi

import (
	"errors"
	"net/http"

	"github.com/ggbroker/ggbroker/provisioning"
)

func (s *Service) caArn(id string) string { return s.arn("cacert", id) }

// fromCatalog maps the catalog's errors to AWS' types.
func fromCatalog(err error) error {
	var inUse *provisioning.InUseError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, provisioning.ErrNotFound):
		return fail(errResourceNotFound, "%s", err)
	case errors.Is(err, provisioning.ErrExists):
		return fail(errResourceAlreadyExists, "%s", err)
	case errors.As(err, &inUse):
		return fail(errDeleteConflict, "%s", err)
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return err
}

func (s *Service) getRegistrationCode(w http.ResponseWriter, _ *http.Request) error {
	code, err := s.catalog.RegistrationCode()
	if err != nil {
		return err
	}
	return ok(w, map[string]string{"registrationCode": code})
}

// registrationConfig checks a CA's JITP settings: a named template must exist and be of type JITP; an
// inline body must be a template that can run.
func (s *Service) registrationConfig(rc *provisioning.RegistrationConfig) error {
	if rc == nil {
		return nil
	}
	if rc.TemplateName != "" && rc.TemplateBody != "" {
		return invalid("registrationConfig: give templateBody or templateName, not both")
	}
	if rc.TemplateName != "" {
		t, err := s.catalog.Template(rc.TemplateName)
		if err != nil {
			return fromCatalog(err)
		}
		if t.Type != provisioning.TypeJITP {
			return invalid("registrationConfig.templateName %s is a %s template; a CA needs a JITP one", t.Name, t.Type)
		}
	}
	if rc.TemplateBody != "" {
		if _, err := provisioning.ParseTemplate(rc.TemplateBody, provisioning.TypeJITP); err != nil {
			return invalid("registrationConfig.templateBody: %v", err)
		}
	}
	return nil
}

func (s *Service) registerCACertificate(w http.ResponseWriter, r *http.Request) error {
	active, err := queryBool(r, "setAsActive")
	if err != nil {
		return err
	}
	autoReg, err := queryBool(r, "allowAutoRegistration")
	if err != nil {
		return err
	}
	var in struct {
		CACertificate           string                           `json:"caCertificate"`
		VerificationCertificate string                           `json:"verificationCertificate"`
		RegistrationConfig      *provisioning.RegistrationConfig `json:"registrationConfig"`
		CertificateMode         string                           `json:"certificateMode"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	ca, err := parseCertPEM("caCertificate", in.CACertificate)
	if err != nil {
		return err
	}
	if !ca.IsCA || !ca.BasicConstraintsValid {
		return fail(errCertificateValidation, "caCertificate is not a CA certificate (basic constraints CA:TRUE)")
	}
	mode := in.CertificateMode
	switch mode {
	case "", provisioning.ModeDefault:
		mode = provisioning.ModeDefault
		// Proof of possession: a certificate the CA signed whose common name is the registration
		// code (aws-iot-core/register-CA-cert.md).
		if in.VerificationCertificate == "" {
			return invalid("verificationCertificate is required in DEFAULT mode (or register with certificateMode SNI_ONLY)")
		}
		v, err := parseCertPEM("verificationCertificate", in.VerificationCertificate)
		if err != nil {
			return err
		}
		if err := v.CheckSignatureFrom(ca); err != nil {
			return fail(errCertificateValidation, "verificationCertificate is not signed by caCertificate: %v", err)
		}
		code, err := s.catalog.RegistrationCode()
		if err != nil {
			return err
		}
		if v.Subject.CommonName != code {
			return fail(errRegistrationCodeInvalid, "The verification certificate's common name %q is not the registration code (GetRegistrationCode)", v.Subject.CommonName)
		}
	case provisioning.ModeSNIOnly:
		if in.VerificationCertificate != "" {
			return invalid("verificationCertificate must be empty in SNI_ONLY mode")
		}
	default:
		return invalid("certificateMode %q is not DEFAULT or SNI_ONLY", in.CertificateMode)
	}
	if err := s.registrationConfig(in.RegistrationConfig); err != nil {
		return err
	}
	rec := &provisioning.CA{Status: provisioning.CAInactive, AutoRegistration: autoReg, Mode: mode}
	if active {
		rec.Status = provisioning.CAActive
	}
	if in.RegistrationConfig != nil {
		rec.Registration = *in.RegistrationConfig
	}
	if err := s.catalog.AddCA(rec, ca); err != nil {
		if errors.Is(err, provisioning.ErrExists) {
			id := rec.ID
			return &apiError{typ: errResourceAlreadyExists, msg: "The CA certificate is already registered",
				fields: map[string]any{"resourceId": id, "resourceArn": s.caArn(id)}}
		}
		return err
	}
	return ok(w, map[string]string{"certificateArn": s.caArn(rec.ID), "certificateId": rec.ID})
}

func (s *Service) caFromPath(r *http.Request) (*provisioning.CA, error) {
	id := r.PathValue("caCertificateId")
	if !isCertID(id) {
		return nil, invalid("caCertificateId %q is not 64 hexadecimal characters", id)
	}
	ca, err := s.catalog.CA(id)
	return ca, fromCatalog(err)
}

func autoRegistrationStatus(on bool) string {
	if on {
		return "ENABLE"
	}
	return "DISABLE"
}

func (s *Service) describeCACertificate(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.caFromPath(r)
	if err != nil {
		return err
	}
	c := ca.Cert()
	out := map[string]any{
		"certificateDescription": map[string]any{
			"certificateArn": s.caArn(ca.ID), "certificateId": ca.ID, "status": ca.Status, "certificatePem": ca.PEM,
			"ownedBy": s.core.Core.AccountID, "creationDate": epoch(ca.CreatedAt), "lastModifiedDate": epoch(ca.ModifiedAt),
			"autoRegistrationStatus": autoRegistrationStatus(ca.AutoRegistration), "customerVersion": 1,
			"generationId": generationID(ca.PEM), "certificateMode": ca.Mode,
			"validity": map[string]any{"notBefore": epoch(c.NotBefore), "notAfter": epoch(c.NotAfter)},
		},
	}
	if !ca.Registration.Empty() || ca.Registration.RoleArn != "" {
		out["registrationConfig"] = ca.Registration
	}
	return ok(w, out)
}

func (s *Service) listCACertificates(w http.ResponseWriter, r *http.Request) error {
	asc, err := queryBool(r, "isAscendingOrder")
	if err != nil {
		return err
	}
	tmpl := r.URL.Query().Get("templateName")
	var list []*provisioning.CA
	for _, ca := range s.catalog.CAs() {
		if tmpl == "" || ca.Registration.TemplateName == tmpl {
			list = append(list, ca)
		}
	}
	if !asc {
		for i, j := 0, len(list)-1; i < j; i, j = i+1, j-1 {
			list[i], list[j] = list[j], list[i]
		}
	}
	p, err := paginate(r, len(list), "marker", "pageSize", 25, 250)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, p.end-p.start)
	for _, ca := range list[p.start:p.end] {
		out = append(out, map[string]any{"certificateArn": s.caArn(ca.ID), "certificateId": ca.ID, "status": ca.Status, "creationDate": epoch(ca.CreatedAt)})
	}
	res := map[string]any{"certificates": out}
	if p.next != "" {
		res["nextMarker"] = p.next
	}
	return ok(w, res)
}

func (s *Service) updateCACertificate(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.caFromPath(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	status, autoReg := q.Get("newStatus"), q.Get("newAutoRegistrationStatus")
	switch status {
	case "", provisioning.CAActive, provisioning.CAInactive:
	default:
		return invalid("newStatus %q is not ACTIVE or INACTIVE", status)
	}
	switch autoReg {
	case "", "ENABLE", "DISABLE":
	default:
		return invalid("newAutoRegistrationStatus %q is not ENABLE or DISABLE", autoReg)
	}
	var in struct {
		RegistrationConfig     *provisioning.RegistrationConfig `json:"registrationConfig"`
		RemoveAutoRegistration bool                             `json:"removeAutoRegistration"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	if err := s.registrationConfig(in.RegistrationConfig); err != nil {
		return err
	}
	err = s.catalog.UpdateCA(ca.ID, func(c *provisioning.CA) error {
		if status != "" {
			c.Status = status
		}
		if autoReg != "" {
			c.AutoRegistration = autoReg == "ENABLE"
		}
		if in.RegistrationConfig != nil {
			c.Registration = *in.RegistrationConfig
		}
		if in.RemoveAutoRegistration {
			c.Registration = provisioning.RegistrationConfig{}
		}
		return nil
	})
	if err != nil {
		return fromCatalog(err)
	}
	return ok(w, nil)
}

func (s *Service) deleteCACertificate(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.caFromPath(r)
	if err != nil {
		return err
	}
	// AWS: a CA must be deactivated before it is deleted.
	if ca.Status == provisioning.CAActive {
		return fail(errCertificateState, "The CA certificate %s is ACTIVE: set it INACTIVE before deleting it", ca.ID)
	}
	if err := s.catalog.DeleteCA(ca.ID); err != nil {
		return fromCatalog(err)
	}
	return ok(w, nil)
}

func (s *Service) listCertificatesByCA(w http.ResponseWriter, r *http.Request) error {
	ca, err := s.caFromPath(r)
	if err != nil {
		return err
	}
	all, err := s.state.Registry.Certificates()
	if err != nil {
		return err
	}
	var list = all[:0:0]
	for _, c := range all {
		if c.CACertificateID == ca.ID {
			list = append(list, c)
		}
	}
	return s.writeCertificateList(w, r, list)
}
