package test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/ggbroker/ggbroker/certs"
)

// newTestCA makes a device maker's CA in the test, and a verification certificate for it.
func newTestCA(t testing.TB, name string) *certs.Authority {
	t.Helper()
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: name, Organization: "test maker", KeyType: certs.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func verificationCert(t testing.TB, ca *certs.Authority, commonName string) string {
	t.Helper()
	key, err := certs.GenerateKey(certs.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Sign(&x509.Certificate{Subject: pkix.Name{CommonName: commonName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(certs.EncodeCertsPEM(c))
}

// TestCACertificatesThroughAPI: registration code, proof of possession, SNI_ONLY, and the CA's life.
func TestCACertificatesThroughAPI(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	code, err := c.GetRegistrationCode(ctx, &iot.GetRegistrationCodeInput{})
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(aws.ToString(code.RegistrationCode)) {
		t.Fatalf("GetRegistrationCode: %v %v", err, code)
	}
	again, _ := c.GetRegistrationCode(ctx, &iot.GetRegistrationCodeInput{})
	if aws.ToString(again.RegistrationCode) != aws.ToString(code.RegistrationCode) {
		t.Fatal("the registration code changed")
	}
	ca := newTestCA(t, "maker CA")
	caPEM := aws.String(string(ca.CertPEM()))

	cases := []struct {
		name string
		in   *iot.RegisterCACertificateInput
		code string
	}{
		{"wrong common name", &iot.RegisterCACertificateInput{CaCertificate: caPEM, VerificationCertificate: aws.String(verificationCert(t, ca, "not-the-code"))}, "RegistrationCodeValidationException"},
		{"no verification certificate", &iot.RegisterCACertificateInput{CaCertificate: caPEM}, "InvalidRequestException"},
		{"SNI_ONLY with a verification certificate", &iot.RegisterCACertificateInput{CaCertificate: caPEM, CertificateMode: iottypes.CertificateModeSniOnly,
			VerificationCertificate: aws.String(verificationCert(t, ca, aws.ToString(code.RegistrationCode)))}, "InvalidRequestException"},
		{"signed by another CA", &iot.RegisterCACertificateInput{CaCertificate: caPEM,
			VerificationCertificate: aws.String(verificationCert(t, newTestCA(t, "other"), aws.ToString(code.RegistrationCode)))}, "CertificateValidationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.RegisterCACertificate(ctx, tc.in)
			if got := apiErrorCode(err); got != tc.code {
				t.Fatalf("error %v (code %q), want %s", err, got, tc.code)
			}
		})
	}
	reg, err := c.RegisterCACertificate(ctx, &iot.RegisterCACertificateInput{CaCertificate: caPEM, SetAsActive: true, AllowAutoRegistration: true,
		VerificationCertificate: aws.String(verificationCert(t, ca, aws.ToString(code.RegistrationCode)))})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(reg.CertificateId) != ca.Fingerprint() {
		t.Fatalf("CA certificate ID %s, want the SHA-256 %s", aws.ToString(reg.CertificateId), ca.Fingerprint())
	}
	_, err = c.RegisterCACertificate(ctx, &iot.RegisterCACertificateInput{CaCertificate: caPEM, CertificateMode: iottypes.CertificateModeSniOnly})
	if apiErrorCode(err) != "ResourceAlreadyExistsException" {
		t.Fatalf("same CA again: %v", err)
	}
	desc, err := c.DescribeCACertificate(ctx, &iot.DescribeCACertificateInput{CertificateId: reg.CertificateId})
	if err != nil || desc.CertificateDescription.Status != iottypes.CACertificateStatusActive || desc.CertificateDescription.AutoRegistrationStatus != iottypes.AutoRegistrationStatusEnable {
		t.Fatalf("DescribeCACertificate: %v %+v", err, desc)
	}

	// A device certificate that CA signed registers with it (RegisterCertificate).
	devPEM, _, _, err := ca.IssueClient("maker-dev-1", certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := c.RegisterCertificate(ctx, &iot.RegisterCertificateInput{CertificatePem: aws.String(string(devPEM)), Status: iottypes.CertificateStatusActive})
	if err != nil {
		t.Fatal(err)
	}
	dd, err := c.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: dev.CertificateId})
	if err != nil || aws.ToString(dd.CertificateDescription.CaCertificateId) != ca.Fingerprint() || dd.CertificateDescription.Status != iottypes.CertificateStatusActive {
		t.Fatalf("registered certificate: %v %+v", err, dd)
	}
	byCA, err := c.ListCertificatesByCA(ctx, &iot.ListCertificatesByCAInput{CaCertificateId: reg.CertificateId})
	if err != nil || len(byCA.Certificates) != 1 {
		t.Fatalf("ListCertificatesByCA: %v %+v", err, byCA)
	}
	unknownCA := newTestCA(t, "unknown")
	other, _, _, _ := unknownCA.IssueClient("x", certs.ECDSAP256, time.Hour)
	if _, err := c.RegisterCertificate(ctx, &iot.RegisterCertificateInput{CertificatePem: aws.String(string(other))}); apiErrorCode(err) != "CertificateValidationException" {
		t.Fatalf("RegisterCertificate signed by an unregistered CA: %v", err)
	}

	if _, err := c.DeleteCACertificate(ctx, &iot.DeleteCACertificateInput{CertificateId: reg.CertificateId}); apiErrorCode(err) != "CertificateStateException" {
		t.Fatalf("deleting an ACTIVE CA: %v", err)
	}
	if _, err := c.UpdateCACertificate(ctx, &iot.UpdateCACertificateInput{CertificateId: reg.CertificateId, NewStatus: iottypes.CACertificateStatusInactive,
		NewAutoRegistrationStatus: iottypes.AutoRegistrationStatusDisable}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListCACertificates(ctx, &iot.ListCACertificatesInput{})
	if err != nil || len(list.Certificates) != 1 || list.Certificates[0].Status != iottypes.CACertificateStatusInactive {
		t.Fatalf("ListCACertificates: %v %+v", err, list)
	}
	if _, err := c.DeleteCACertificate(ctx, &iot.DeleteCACertificateInput{CertificateId: reg.CertificateId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeCACertificate(ctx, &iot.DescribeCACertificateInput{CertificateId: reg.CertificateId}); apiErrorCode(err) != "ResourceNotFoundException" {
		t.Fatalf("deleted CA: %v", err)
	}
}

// TestProvisioningTemplatesThroughAPI: the template is checked when it is stored.
func TestProvisioningTemplatesThroughAPI(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	role := aws.String("arn:aws:iam::123456789012:role/provisioning")
	body := `{"Parameters":{"SerialNumber":{"Type":"String"}},"Resources":{
	  "thing":{"Type":"AWS::IoT::Thing","Properties":{"ThingName":{"Ref":"SerialNumber"}}},
	  "certificate":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateId":{"Ref":"AWS::IoT::Certificate::Id"},"Status":"ACTIVE"}}}}`
	cases := []struct {
		name string
		in   *iot.CreateProvisioningTemplateInput
		code string
	}{
		{"body of 10241 characters", &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("t1"), ProvisioningRoleArn: role, TemplateBody: aws.String(body + strings.Repeat(" ", 10241-len(body)))}, "InvalidRequestException"},
		{"name with a space", &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("bad name"), ProvisioningRoleArn: role, TemplateBody: aws.String(body)}, "InvalidRequestException"},
		{"not a template", &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("t1"), ProvisioningRoleArn: role, TemplateBody: aws.String(`{"Resources":{"x":{"Type":"AWS::S3::Bucket"}}}`)}, "InvalidRequestException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateProvisioningTemplate(ctx, tc.in)
			if got := apiErrorCode(err); got != tc.code {
				t.Fatalf("error %v (code %q), want %s", err, got, tc.code)
			}
		})
	}
	out, err := c.CreateProvisioningTemplate(ctx, &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("fleet"), ProvisioningRoleArn: role, TemplateBody: aws.String(body), Enabled: aws.Bool(true)})
	if err != nil || aws.ToString(out.TemplateArn) != "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/fleet" {
		t.Fatalf("CreateProvisioningTemplate: %v %+v", err, out)
	}
	if _, err := c.CreateProvisioningTemplate(ctx, &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("fleet"), ProvisioningRoleArn: role, TemplateBody: aws.String(body)}); apiErrorCode(err) != "ResourceAlreadyExistsException" {
		t.Fatalf("same name again: %v", err)
	}
	desc, err := c.DescribeProvisioningTemplate(ctx, &iot.DescribeProvisioningTemplateInput{TemplateName: aws.String("fleet")})
	if err != nil || aws.ToString(desc.TemplateBody) != body || desc.Type != iottypes.TemplateTypeFleetProvisioning || !aws.ToBool(desc.Enabled) {
		t.Fatalf("DescribeProvisioningTemplate: %v %+v", err, desc)
	}
	list, err := c.ListProvisioningTemplates(ctx, &iot.ListProvisioningTemplatesInput{})
	if err != nil || len(list.Templates) != 1 {
		t.Fatalf("ListProvisioningTemplates: %v %+v", err, list)
	}
	if _, err := c.DeleteProvisioningTemplate(ctx, &iot.DeleteProvisioningTemplateInput{TemplateName: aws.String("fleet")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeProvisioningTemplate(ctx, &iot.DescribeProvisioningTemplateInput{TemplateName: aws.String("fleet")}); apiErrorCode(err) != "ResourceNotFoundException" {
		t.Fatalf("deleted template: %v", err)
	}
}
