package test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/ggbroker/ggbroker/certs"
)

const eventsPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/$aws/events/certificates/registered/*"},
 {"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:*:*:topic/$aws/events/certificates/registered/*"}]}`

// registerMakerCA registers a CA made in the test, ACTIVE, with auto-registration as asked and an
// optional JITP template body (SNI_ONLY: no proof of possession needed).
func registerMakerCA(t *testing.T, c *iot.Client, name string, autoRegistration bool, templateBody string) (*certs.Authority, string) {
	t.Helper()
	ca := newTestCA(t, name)
	in := &iot.RegisterCACertificateInput{CaCertificate: aws.String(string(ca.CertPEM())), CertificateMode: iottypes.CertificateModeSniOnly,
		SetAsActive: true, AllowAutoRegistration: autoRegistration}
	if templateBody != "" {
		in.RegistrationConfig = &iottypes.RegistrationConfig{TemplateBody: aws.String(templateBody), RoleArn: aws.String("arn:aws:iam::123456789012:role/JITP")}
	}
	out, err := c.RegisterCACertificate(context.Background(), in)
	if err != nil {
		t.Fatalf("RegisterCACertificate: %v", err)
	}
	return ca, aws.ToString(out.CertificateId)
}

// makerDevice is a device whose certificate the maker's CA signed (the CA is not in the chain).
func makerDevice(t *testing.T, ca *certs.Authority, name string) *device {
	t.Helper()
	certPEM, keyPEM, cert, err := ca.IssueClient(name, certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return deviceFromAPI(t, name, certs.Fingerprint(cert), string(certPEM), string(keyPEM))
}

// TestJustInTimeRegistration (cases 4 and 5): the first connection is closed, the certificate is
// PENDING_ACTIVATION with its CA, the event is published; once a rig activates and attaches it, the
// reconnect succeeds. A CA without auto-registration registers nothing.
func TestJustInTimeRegistration(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	ca, caID := registerMakerCA(t, c, "JITR CA", true, "")
	h.writePolicy("events", eventsPolicy)
	watcher := h.mustConnectV3(h.createDevice("watcher", "events"))
	events := subscribeV3(t, watcher, "$aws/events/certificates/registered/+", 1)

	d := makerDevice(t, ca, "jitr-1")
	if _, err := h.connectV3(d, d.name); err == nil {
		t.Fatal("the first connection of an unregistered certificate was accepted")
	}
	desc, err := c.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(d.certID)})
	if err != nil || desc.CertificateDescription.Status != iottypes.CertificateStatusPendingActivation || aws.ToString(desc.CertificateDescription.CaCertificateId) != caID {
		t.Fatalf("certificate after the first connection: %v %+v", err, desc)
	}
	select {
	case m := <-events:
		topic, payload, _ := strings.Cut(m, " ")
		var ev map[string]any
		if err := json.Unmarshal([]byte(payload), &ev); err != nil || topic != "$aws/events/certificates/registered/"+caID {
			t.Fatalf("event %s: %v", m, err)
		}
		if ev["certificateId"] != d.certID || ev["caCertificateId"] != caID || ev["certificateStatus"] != "PENDING_ACTIVATION" ||
			ev["awsAccountId"] != h.cfg.Core.AccountID || ev["timestamp"] == nil || ev["certificateRegistrationTimestamp"] == "" || len(ev) != 6 {
			t.Fatalf("event payload: %v", ev)
		}
	case <-time.After(waitFor):
		t.Fatal("no $aws/events/certificates/registered event")
	}

	// What a JITR rule's Lambda does: activate, make the thing, attach.
	arn := aws.String("arn:aws:iot:us-east-1:123456789012:cert/" + d.certID)
	if _, err := c.UpdateCertificate(ctx, &iot.UpdateCertificateInput{CertificateId: aws.String(d.certID), NewStatus: iottypes.CertificateStatusActive}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("jitr-1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("jitr"), PolicyDocument: aws.String(thingPolicy)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachPolicy(ctx, &iot.AttachPolicyInput{PolicyName: aws.String("jitr"), Target: arn}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{ThingName: aws.String("jitr-1"), Principal: arn}); err != nil {
		t.Fatal(err)
	}
	publishV3(t, h.mustConnectV3(d), "dev/jitr-1/up", 1, false, "registered")

	// Auto-registration off: refused, nothing registered.
	off, _ := registerMakerCA(t, c, "no auto-registration", false, "")
	d2 := makerDevice(t, off, "jitr-2")
	if _, err := h.connectV3(d2, d2.name); err == nil {
		t.Fatal("connected")
	}
	if rec, _, _ := h.broker.State().Registry.Certificate(d2.certID); rec != nil {
		t.Fatalf("a CA without auto-registration registered %+v", rec)
	}
}

const jitpTemplate = `{
 "Parameters": {"AWS::IoT::Certificate::CommonName": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
 "Resources": {
  "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"}, "AttributePayload": {"via": "jitp"}}},
  "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
  "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Connect\",\"Resource\":\"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}\"},{\"Effect\":\"Allow\",\"Action\":[\"iot:Publish\",\"iot:Receive\"],\"Resource\":\"arn:aws:iot:*:*:topic/dev/${iot:Connection.Thing.ThingName}/*\"},{\"Effect\":\"Allow\",\"Action\":\"iot:Subscribe\",\"Resource\":\"arn:aws:iot:*:*:topicfilter/dev/${iot:Connection.Thing.ThingName}/*\"}]}"}}
 }
}`

// TestJustInTimeProvisioning (cases 6 and 7): the CA's template makes the thing, the policy and the
// attachments and activates the certificate, so the device's reconnect succeeds; a template needing a
// subject field the certificate lacks provisions nothing and says which parameter.
func TestJustInTimeProvisioning(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	ca, _ := registerMakerCA(t, c, "JITP CA", true, jitpTemplate)
	d := makerDevice(t, ca, "dev42")
	if _, err := h.connectV3(d, d.name); err == nil {
		t.Fatal("the first connection was accepted (AWS closes it)")
	}
	th, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("dev42")})
	if err != nil || th.Attributes["via"] != "jitp" {
		t.Fatalf("thing after JITP: %v %+v", err, th)
	}
	desc, err := c.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(d.certID)})
	if err != nil || desc.CertificateDescription.Status != iottypes.CertificateStatusActive {
		t.Fatalf("certificate after JITP: %v %+v", err, desc)
	}
	principals, err := c.ListThingPrincipals(ctx, &iot.ListThingPrincipalsInput{ThingName: aws.String("dev42")})
	if err != nil || len(principals.Principals) != 1 {
		t.Fatalf("thing principals: %v %+v", err, principals)
	}
	pols, err := c.ListAttachedPolicies(ctx, &iot.ListAttachedPoliciesInput{Target: aws.String(principals.Principals[0])})
	if err != nil || len(pols.Policies) != 1 {
		t.Fatalf("attached policies: %v %+v", err, pols)
	}
	cl := h.mustConnectV3(d)
	got := subscribeV3(t, cl, "dev/dev42/#", 1)
	publishV3(t, cl, "dev/dev42/t", 1, false, "jitp")
	expectMessage(t, got, "dev/dev42/t jitp")

	countryTemplate := strings.Replace(jitpTemplate, `"AWS::IoT::Certificate::CommonName": {"Type": "String"}`,
		`"AWS::IoT::Certificate::CommonName": {"Type": "String"}, "AWS::IoT::Certificate::Country": {"Type": "String"}`, 1)
	countryTemplate = strings.Replace(countryTemplate, `"AttributePayload": {"via": "jitp"}`, `"AttributePayload": {"country": {"Ref": "AWS::IoT::Certificate::Country"}}`, 1)
	ca2, _ := registerMakerCA(t, c, "JITP CA needing a country", true, countryTemplate)
	d2 := makerDevice(t, ca2, "dev43")
	if _, err := h.connectV3(d2, d2.name); err == nil {
		t.Fatal("connected")
	}
	h.record(t, "just-in-time provisioning failed", map[string]string{"principalId": d2.certID})
	if rec := h.logs.FilterMessage("just-in-time provisioning failed").All(); !strings.Contains(rec[0].ContextMap()["details"].(string), "AWS::IoT::Certificate::Country") {
		t.Fatalf("the record does not name the parameter: %v", rec[0].ContextMap())
	}
	if _, found, _ := h.broker.State().Registry.Thing("dev43"); found {
		t.Fatal("a failed template made a thing")
	}
	if rec, _, _ := h.broker.State().Registry.Certificate(d2.certID); rec == nil || rec.Status != "PENDING_ACTIVATION" {
		t.Fatalf("certificate after a failed template: %+v", rec)
	}
}

// TestJustInTimeProvisioningWithNamedTemplate: a CA names a JITP template (UpdateCACertificate);
// the template cannot be deleted while the CA names it.
func TestJustInTimeProvisioningWithNamedTemplate(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	if _, err := c.CreateProvisioningTemplate(ctx, &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("jitp-named"), Type: iottypes.TemplateTypeJitp,
		ProvisioningRoleArn: aws.String("arn:aws:iam::123456789012:role/JITP"), TemplateBody: aws.String(jitpTemplate), Enabled: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	ca, caID := registerMakerCA(t, c, "named-template CA", true, "")
	if _, err := c.UpdateCACertificate(ctx, &iot.UpdateCACertificateInput{CertificateId: aws.String(caID),
		RegistrationConfig: &iottypes.RegistrationConfig{TemplateName: aws.String("jitp-named")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteProvisioningTemplate(ctx, &iot.DeleteProvisioningTemplateInput{TemplateName: aws.String("jitp-named")}); apiErrorCode(err) != "DeleteConflictException" {
		t.Fatalf("deleting a template a CA names: %v", err)
	}
	d := makerDevice(t, ca, "named-1")
	if _, err := h.connectV3(d, d.name); err == nil {
		t.Fatal("the first connection was accepted")
	}
	publishV3(t, h.mustConnectV3(d), "dev/named-1/x", 1, false, "named template")
}
