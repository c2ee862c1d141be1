package iotapi

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/provisioning"
	"github.com/ggbroker/ggbroker/service"
)

// oidDNQualifier is the subject's distinguishedNameQualifier (X.520, 2.5.4.46), which crypto/x509
// does not name.
var oidDNQualifier = asn1.ObjectIdentifier{2, 5, 4, 46}

// justInTime is AWS IoT's just-in-time registration (JITR) and provisioning (JITP) for a certificate
// that was refused at CONNECT (Host.OnUnknownCertificate): if a registered CA that is ACTIVE with auto-registration ENABLE signed
// it, it is registered PENDING_ACTIVATION, $aws/events/certificates/registered/<caCertificateId> is
// published (also when a PENDING_ACTIVATION certificate presents itself again), and, when the CA has
// a template, the template runs so that the device's reconnect succeeds. The first connection stays
// refused, as AWS closes it (aws-iot-core/jit-provisioning.md, auto-register-device-cert.md).
func (s *Service) justInTime(chain []*x509.Certificate) {
	if len(chain) == 0 {
		return
	}
	ca := s.catalog.SignerOf(chain)
	if ca == nil || ca.Status != provisioning.CAActive || !ca.AutoRegistration {
		return
	}
	leaf := chain[0]
	id := certs.Fingerprint(leaf)
	rec, _, err := s.state.Registry.Certificate(id)
	if err != nil {
		s.log.Error("just-in-time registration: registry unavailable", zap.Error(err))
		return
	}
	switch {
	case rec == nil:
		if rec, err = s.state.Registry.AddCertificate(leaf, auth.StatusPendingActivation, ca.ID); errors.Is(err, auth.ErrExists) {
			if rec, _, _ = s.state.Registry.Certificate(id); rec == nil {
				return
			}
		} else if err != nil {
			s.log.Error("just-in-time registration failed", zap.String("principalId", id), zap.Error(err))
			return
		}
		s.metrics.justInTime.WithLabelValues("registered").Inc()
		s.log.Info("certificate registered just in time", zap.String("eventType", "JustInTimeRegistration"),
			zap.String("principalId", id), zap.String("caCertificateId", ca.ID))
	case rec.Status != auth.StatusPendingActivation:
		return // INACTIVE or REVOKED on purpose: nothing to register
	}
	s.publishRegistered(rec, ca.ID)
	if ca.Registration.Empty() {
		return // JITR: a rule or a test rig activates it (UpdateCertificate)
	}
	s.provisionJustInTime(leaf, rec, ca)
}

func (s *Service) publishRegistered(rec *auth.Certificate, caID string) {
	now := time.Now()
	payload, _ := json.Marshal(map[string]any{
		"certificateId": rec.ID, "caCertificateId": caID, "timestamp": now.UnixMilli(),
		"certificateStatus": string(rec.Status), "awsAccountId": s.core.Core.AccountID,
		"certificateRegistrationTimestamp": rec.CreatedAt.UTC().Format(time.RFC3339),
	})
	if err := s.host.Publish(service.Message{Topic: "$aws/events/certificates/registered/" + caID, Payload: payload, QoS: 1}); err != nil {
		s.log.Warn("certificate registered event not published", zap.String("principalId", rec.ID), zap.Error(err))
	}
}

// certificateParameters are JITP's parameters: the certificate's subject fields that are present, and
// its ID.
func certificateParameters(c *x509.Certificate, id string) map[string]string {
	p := map[string]string{"AWS::IoT::Certificate::Id": id}
	set := func(name string, vals []string) {
		if len(vals) > 0 && vals[0] != "" {
			p["AWS::IoT::Certificate::"+name] = vals[0]
		}
	}
	sub := c.Subject
	set("Country", sub.Country)
	set("Organization", sub.Organization)
	set("OrganizationalUnit", sub.OrganizationalUnit)
	set("StateName", sub.Province)
	set("CommonName", []string{sub.CommonName})
	set("SerialNumber", []string{sub.SerialNumber})
	for _, n := range sub.Names {
		if n.Type.Equal(oidDNQualifier) {
			if v, ok := n.Value.(string); ok {
				set("DistinguishedNameQualifier", []string{v})
			}
		}
	}
	return p
}

func (s *Service) provisionJustInTime(leaf *x509.Certificate, rec *auth.Certificate, ca *provisioning.CA) {
	fail := func(err error) {
		// Nothing half-made stays (Plan.Apply is all or nothing); the certificate stays
		// PENDING_ACTIVATION, and the record says which parameter or resource failed.
		s.metrics.justInTime.WithLabelValues("failed").Inc()
		s.log.Error("just-in-time provisioning failed", zap.String("eventType", "JustInTimeProvisioning"), zap.String("status", "Failure"),
			zap.String("principalId", rec.ID), zap.String("caCertificateId", ca.ID), zap.String("reason", "TEMPLATE_FAILED"), zap.String("details", err.Error()))
	}
	body := ca.Registration.TemplateBody
	if name := ca.Registration.TemplateName; name != "" {
		t, err := s.catalog.Template(name)
		if err != nil {
			fail(err)
			return
		}
		body = t.Body
	}
	tpl, err := provisioning.ParseTemplate(body, provisioning.TypeJITP)
	if err != nil {
		fail(err)
		return
	}
	plan, err := tpl.Resolve(certificateParameters(leaf, rec.ID))
	if err != nil {
		fail(err)
		return
	}
	if plan.CertificateID != rec.ID {
		fail(errors.New("the template's CertificateId is not {\"Ref\":\"AWS::IoT::Certificate::Id\"}"))
		return
	}
	res, err := plan.Apply(s.state.Registry, s.state.PolicyDir)
	if err != nil {
		fail(err)
		return
	}
	s.metrics.justInTime.WithLabelValues("provisioned").Inc()
	s.log.Info("certificate provisioned just in time", zap.String("eventType", "JustInTimeProvisioning"), zap.String("status", "Success"),
		zap.String("principalId", rec.ID), zap.String("caCertificateId", ca.ID), zap.String("thingName", res.ThingName), zap.Strings("policies", res.Policies))
}
