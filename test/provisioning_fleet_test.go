package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/provisioning"
)

// claimPolicy is FP-CLAIM's claim certificate policy, for template "fleet" (plus iot:Connect for the
// claim thing: in the greengrass profile the client ID is still an attached thing).
const claimPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":["arn:aws:iot:*:*:topic/$aws/certificates/create/*","arn:aws:iot:*:*:topic/$aws/certificates/create-from-csr/*","arn:aws:iot:*:*:topic/$aws/provisioning-templates/fleet/provision/*"]},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":["arn:aws:iot:*:*:topicfilter/$aws/certificates/create/*","arn:aws:iot:*:*:topicfilter/$aws/certificates/create-from-csr/*","arn:aws:iot:*:*:topicfilter/$aws/provisioning-templates/fleet/provision/*"]}]}`

const fleetTemplateBody = `{
 "Parameters": {"SerialNumber": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
 "Resources": {
  "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "SerialNumber"}, "AttributePayload": {"serial": {"Ref": "SerialNumber"}}}},
  "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}},
  "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "fleet-device"}}
 },
 "DeviceConfiguration": {"Url": "x"}
}`

// fleetRig is a broker with the fleet template and a connected claim device.
type fleetRig struct {
	h     *harness
	iot   *iot.Client
	claim pahov3.Client
}

func newFleetRig(t *testing.T, mutate func(*config.Config)) *fleetRig {
	h := startAPIBroker(t, mutate)
	c := h.iotClient(t)
	ctx := context.Background()
	if _, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("fleet-device"), PolicyDocument: aws.String(thingPolicy)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProvisioningTemplate(ctx, &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("fleet"), Enabled: aws.Bool(true),
		ProvisioningRoleArn: aws.String("arn:aws:iam::123456789012:role/p"), TemplateBody: aws.String(fleetTemplateBody)}); err != nil {
		t.Fatal(err)
	}
	h.writePolicy("claim", claimPolicy)
	claim := h.mustConnectV3(h.createDevice("claim-1", "claim"))
	return &fleetRig{h: h, iot: c, claim: claim}
}

// request publishes payload to topic and returns what arrives on topic/accepted or topic/rejected.
func (r *fleetRig) request(t *testing.T, topic, payload string) (accepted bool, body map[string]any) {
	t.Helper()
	acc := subscribeV3(t, r.claim, topic+"/accepted", 1)
	rej := subscribeV3(t, r.claim, topic+"/rejected", 1)
	publishV3(t, r.claim, topic, 1, false, payload)
	var got string
	select {
	case got = <-acc:
		accepted = true
	case got = <-rej:
	case <-time.After(waitFor):
		t.Fatalf("no answer on %s/accepted or /rejected", topic)
	}
	raw := got[len(topic)+len("/accepted "):]
	if !accepted {
		raw = got[len(topic)+len("/rejected "):]
	}
	if err := json.Unmarshal([]byte(raw), &body); err != nil {
		t.Fatalf("answer on %s is not JSON: %v\n%s", topic, err, raw)
	}
	r.claim.Unsubscribe(topic+"/accepted", topic+"/rejected").WaitTimeout(waitFor)
	return accepted, body
}

// TestFleetProvisioningByClaim: the SDK samples' flow over raw topics, then a connect with the new
// certificate (acceptance cases 10, 12, 13).
func TestFleetProvisioningByClaim(t *testing.T) {
	r := newFleetRig(t, nil)
	ctx := context.Background()
	ok, created := r.request(t, "$aws/certificates/create/json", "{}")
	if !ok {
		t.Fatalf("create rejected: %v", created)
	}
	for _, k := range []string{"certificateId", "certificatePem", "privateKey", "certificateOwnershipToken"} {
		if s, _ := created[k].(string); s == "" {
			t.Fatalf("accepted payload lacks %s: %v", k, created)
		}
	}
	certID := created["certificateId"].(string)
	desc, err := r.iot.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(certID)})
	if err != nil || desc.CertificateDescription.Status != iottypes.CertificateStatusPendingActivation {
		t.Fatalf("new certificate: %v %+v", err, desc)
	}

	ok, body := r.request(t, "$aws/provisioning-templates/fleet/provision/json", `{"certificateOwnershipToken":"","parameters":{}}`)
	if ok || body["statusCode"] != 400.0 || body["errorCode"] != "InvalidCertificateOwnershipToken" || body["errorMessage"] != "Certificate ownership token cannot be empty." {
		t.Fatalf("empty token: accepted=%v %v", ok, body)
	}
	ok, body = r.request(t, "$aws/provisioning-templates/fleet/provision/json",
		`{"certificateOwnershipToken":"`+created["certificateOwnershipToken"].(string)+`","parameters":{}}`)
	if ok || body["errorCode"] != "InvalidParameters" {
		t.Fatalf("missing SerialNumber: accepted=%v %v", ok, body)
	}
	if _, found, _ := r.h.broker.State().Registry.Thing("s1"); found {
		t.Fatal("a failed provisioning made a thing")
	}
	ok, body = r.request(t, "$aws/provisioning-templates/fleet/provision/json",
		`{"certificateOwnershipToken":"`+created["certificateOwnershipToken"].(string)+`","parameters":{"SerialNumber":"s1"}}`)
	if !ok || body["thingName"] != "s1" || body["deviceConfiguration"].(map[string]any)["Url"] != "x" {
		t.Fatalf("RegisterThing: accepted=%v %v", ok, body)
	}
	desc, err = r.iot.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(certID)})
	if err != nil || desc.CertificateDescription.Status != iottypes.CertificateStatusActive {
		t.Fatalf("provisioned certificate: %v %+v", err, desc)
	}
	// The token is spent.
	ok, _ = r.request(t, "$aws/provisioning-templates/fleet/provision/json",
		`{"certificateOwnershipToken":"`+created["certificateOwnershipToken"].(string)+`","parameters":{"SerialNumber":"s2"}}`)
	if ok {
		t.Fatal("an ownership token served twice")
	}

	d := deviceFromAPI(t, "s1", certID, created["certificatePem"].(string), created["privateKey"].(string))
	cl := r.h.mustConnectV3(d)
	got := subscribeV3(t, cl, "dev/s1/#", 1)
	publishV3(t, cl, "dev/s1/hello", 1, false, "provisioned")
	expectMessage(t, got, "dev/s1/hello provisioned")
}

// TestFleetCreateFromCSR (case 11): the certificate carries the CSR's public key; a bad CSR is rejected.
func TestFleetCreateFromCSR(t *testing.T) {
	r := newFleetRig(t, nil)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "csr-dev"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := json.Marshal(map[string]string{"certificateSigningRequest": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	ok, body := r.request(t, "$aws/certificates/create-from-csr/json", string(csr))
	if !ok {
		t.Fatalf("create-from-csr rejected: %v", body)
	}
	cs, err := certs.ParseCertsPEM([]byte(body["certificatePem"].(string)))
	if err != nil || !key.PublicKey.Equal(cs[0].PublicKey) {
		t.Fatalf("the certificate does not carry the CSR's key: %v", err)
	}
	if body["certificateOwnershipToken"] == "" || body["certificateId"] != certs.Fingerprint(cs[0]) {
		t.Fatalf("accepted payload: %v", body)
	}
	ok, body = r.request(t, "$aws/certificates/create-from-csr/json", `{"certificateSigningRequest":"not a CSR"}`)
	if ok || body["statusCode"] != 400.0 {
		t.Fatalf("bad CSR: accepted=%v %v", ok, body)
	}
}

// TestFleetTokenExpires (case 14): an expired token is rejected and its unclaimed certificate deleted.
func TestFleetTokenExpires(t *testing.T) {
	r := newFleetRig(t, func(c *config.Config) {
		if c.Sections == nil {
			c.Sections = map[string]any{}
		}
		c.Sections["iotapi"] = map[string]any{"ownershipTokenValidity": "200ms"}
	})
	ok, created := r.request(t, "$aws/certificates/create/json", "{}")
	if !ok {
		t.Fatalf("create rejected: %v", created)
	}
	certID := created["certificateId"].(string)
	deadline := time.Now().Add(waitFor)
	for {
		rec, _, _ := r.h.broker.State().Registry.Certificate(certID)
		if rec == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unclaimed certificate was not deleted when its token expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ok, body := r.request(t, "$aws/provisioning-templates/fleet/provision/json",
		`{"certificateOwnershipToken":"`+created["certificateOwnershipToken"].(string)+`","parameters":{"SerialNumber":"late"}}`)
	if ok || body["errorCode"] != "InvalidCertificateOwnershipToken" {
		t.Fatalf("expired token: accepted=%v %v", ok, body)
	}
}

// requestCBOR is request with CBOR payloads, as the embedded C SDK's fleet provisioning demos send.
func (r *fleetRig) requestCBOR(t *testing.T, topic string, payload map[string]any) (accepted bool, body map[string]any) {
	t.Helper()
	raw, err := provisioning.EncodeCBOR(payload)
	if err != nil {
		t.Fatal(err)
	}
	acc := subscribeV3(t, r.claim, topic+"/accepted", 1)
	rej := subscribeV3(t, r.claim, topic+"/rejected", 1)
	publishV3(t, r.claim, topic, 1, false, string(raw))
	var got string
	select {
	case got = <-acc:
		accepted = true
	case got = <-rej:
	case <-time.After(waitFor):
		t.Fatalf("no answer on %s/accepted or /rejected", topic)
	}
	v, err := provisioning.DecodeCBOR([]byte(got[len(topic)+len("/accepted "):]))
	if err != nil {
		t.Fatalf("answer on %s is not CBOR: %v", topic, err)
	}
	r.claim.Unsubscribe(topic+"/accepted", topic+"/rejected").WaitTimeout(waitFor)
	return accepted, v.(map[string]any)
}

// TestFleetProvisioningCBOR: the same flow in CBOR.
func TestFleetProvisioningCBOR(t *testing.T) {
	r := newFleetRig(t, nil)
	ok, created := r.requestCBOR(t, "$aws/certificates/create/cbor", map[string]any{})
	if !ok || created["certificateOwnershipToken"] == "" {
		t.Fatalf("create: accepted=%v %v", ok, created)
	}
	ok, body := r.requestCBOR(t, "$aws/provisioning-templates/fleet/provision/cbor", map[string]any{"certificateOwnershipToken": ""})
	if ok || body["statusCode"] != 400.0 || body["errorCode"] != "InvalidCertificateOwnershipToken" {
		t.Fatalf("empty token: accepted=%v %v", ok, body)
	}
	ok, body = r.requestCBOR(t, "$aws/provisioning-templates/fleet/provision/cbor",
		map[string]any{"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": map[string]any{"SerialNumber": "c1"}})
	if !ok || body["thingName"] != "c1" {
		t.Fatalf("RegisterThing: accepted=%v %v", ok, body)
	}
	d := deviceFromAPI(t, "c1", created["certificateId"].(string), created["certificatePem"].(string), created["privateKey"].(string))
	publishV3(t, r.h.mustConnectV3(d), "dev/c1/x", 1, false, "cbor-provisioned")
}

// TestFleetThingGroups (case 9): a template's ThingGroups put a new thing in those static groups; with
// OverrideSettings.ThingGroups FAIL, a thing that exists in other groups makes RegisterThing fail
// with ResourceConflictsException, and nothing is changed.
func TestFleetThingGroups(t *testing.T) {
	r := newFleetRig(t, nil)
	ctx := context.Background()
	for _, g := range []string{"fleet-devices", "other"} {
		if _, err := r.iot.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String(g)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.iot.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("s9")}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.iot.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("other"), ThingName: aws.String("s9")}); err != nil {
		t.Fatal(err)
	}
	const grouped = `{
 "Parameters": {"SerialNumber": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
 "Resources": {
  "thing": {"Type": "AWS::IoT::Thing", "OverrideSettings": {"ThingGroups": "FAIL"},
   "Properties": {"ThingName": {"Ref": "SerialNumber"}, "ThingGroups": ["fleet-devices"]}},
  "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}}
 }
}`
	// The claim policy allows the template named fleet only: replace its body.
	if _, err := r.iot.DeleteProvisioningTemplate(ctx, &iot.DeleteProvisioningTemplateInput{TemplateName: aws.String("fleet")}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.iot.CreateProvisioningTemplate(ctx, &iot.CreateProvisioningTemplateInput{TemplateName: aws.String("fleet"), Enabled: aws.Bool(true),
		ProvisioningRoleArn: aws.String("arn:aws:iam::123456789012:role/p"), TemplateBody: aws.String(grouped)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		serial     string
		accepted   bool
		wantGroups []string
	}{
		{"s1", true, []string{"fleet-devices"}},
		{"s9", false, []string{"other"}},
	} {
		ok, created := r.request(t, "$aws/certificates/create/json", "{}")
		if !ok {
			t.Fatalf("create rejected: %v", created)
		}
		ok, body := r.request(t, "$aws/provisioning-templates/fleet/provision/json",
			`{"certificateOwnershipToken":"`+created["certificateOwnershipToken"].(string)+`","parameters":{"SerialNumber":"`+tc.serial+`"}}`)
		if ok != tc.accepted || !ok && body["errorCode"] != "ResourceConflictsException" {
			t.Errorf("RegisterThing %s: accepted=%v %v, want accepted=%v", tc.serial, ok, body, tc.accepted)
		}
		if gs := thingGroupsOf(t, ctx, r.iot, tc.serial); !slices.Equal(gs, tc.wantGroups) {
			t.Errorf("%s is in %v, want %v", tc.serial, gs, tc.wantGroups)
		}
	}
}
