package provisioning

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/state"
)

const fleetTemplate = `{
 "Parameters": {"SerialNumber": {"Type": "String"}, "Location": {"Type": "String", "Default": "Seattle"}, "CertificateId": {"Type": "String"}},
 "Mappings": {"LocationTable": {"Seattle": {"LocationUrl": "https://example.aws"}}},
 "Resources": {
  "thing": {"Type": "AWS::IoT::Thing", "Properties": {
    "ThingName": {"Fn::Join": ["", ["dev_", {"Ref": "SerialNumber"}]]},
    "AttributePayload": {"serial": {"Ref": "SerialNumber"}, "part": {"Fn::Select": [1, {"Fn::Split": ["-", {"Ref": "SerialNumber"}]}]}}}},
  "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "CertificateId"}, "Status": "Active"}},
  "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": {"Fn::Sub": "arn:aws:iot:*:*:client/dev_${SerialNumber}"}}]}}}
 },
 "DeviceConfiguration": {"Url": {"Fn::FindInMap": ["LocationTable", {"Ref": "Location"}, "LocationUrl"]}, "Fixed": "x"}
}`

func TestParseTemplateRefuses(t *testing.T) {
	cases := []struct{ name, body, typ, want string }{
		{"not JSON", "nope", TypeFleet, "not a JSON template"},
		{"no resources", `{"Resources":{}}`, TypeFleet, "no Resources"},
		{"CSR in JITP", `{"Resources":{"c":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateSigningRequest":"x"}}}}`, TypeJITP, "must use CertificateId"},
		{"other parameter in JITP", `{"Parameters":{"Serial":{"Type":"String"}},"Resources":{"c":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateId":"x"}}}}`, TypeJITP, "only the certificate's fields"},
		{"unknown type", `{"Resources":{"x":{"Type":"AWS::S3::Bucket"}}}`, TypeFleet, "is not AWS::IoT::Thing"},
		{"nested device configuration", `{"Resources":{"c":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateId":"x"}}},"DeviceConfiguration":{"a":{"b":"c"}}}`, TypeFleet, "nested objects"},
		{"function in mappings", `{"Mappings":{"m":{"k":{"v":{"Ref":"x"}}}},"Resources":{"c":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateId":"x"}}}}`, TypeFleet, "no Ref or functions"},
		{"too long", `{"Resources":{}}` + strings.Repeat(" ", MaxTemplateBody), TypeFleet, "limit is 10240"},
		{"bad override", `{"Resources":{"c":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateId":"x"},"OverrideSettings":{"Status":"MAYBE"}}}}`, TypeFleet, "OverrideSettings"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTemplate(tc.body, tc.typ)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestResolveFunctions(t *testing.T) {
	tpl, err := ParseTemplate(fleetTemplate, TypeFleet)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tpl.Resolve(map[string]string{"SerialNumber": "ab-12", "CertificateId": "cid"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Thing.Name != "dev_ab-12" || p.Thing.Attributes["part"] != "12" || p.Thing.Attributes["serial"] != "ab-12" {
		t.Fatalf("thing: %+v", p.Thing)
	}
	if p.CertificateStatus != "ACTIVE" || p.CertificateID != "cid" {
		t.Fatalf("certificate: %s %s", p.CertificateID, p.CertificateStatus)
	}
	if p.DeviceConfiguration["Url"] != "https://example.aws" || p.DeviceConfiguration["Fixed"] != "x" {
		t.Fatalf("device configuration: %v", p.DeviceConfiguration)
	}
	if len(p.Policies) != 1 || !strings.Contains(p.Policies[0].Document, "client/dev_ab-12") {
		t.Fatalf("policies: %+v", p.Policies)
	}
	_, err = tpl.Resolve(map[string]string{"CertificateId": "cid"})
	var missing *MissingParameterError
	if !errors.As(err, &missing) || missing.Name != "SerialNumber" {
		t.Fatalf("missing parameter: %v", err)
	}
	if _, err := tpl.Resolve(map[string]string{"SerialNumber": "nodash", "CertificateId": "cid"}); err == nil || !strings.Contains(err.Error(), "out of bounds") {
		t.Fatalf("Fn::Select out of bounds: %v", err)
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	reg, err := auth.OpenRegistry(filepath.Join(dir, "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "ca", KeyType: certs.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	_, _, cert, err := ca.IssueClient("d", certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reg.AddCertificate(cert, auth.StatusPendingActivation, "")
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := ParseTemplate(fleetTemplate, TypeFleet)
	if err != nil {
		t.Fatal(err)
	}
	policyDir := filepath.Join(dir, "policies")

	// A certificate that is not registered: the update fails, and the policy file written first goes.
	p, _ := tpl.Resolve(map[string]string{"SerialNumber": "ab-12", "CertificateId": strings.Repeat("0", 64)})
	if _, err := p.Apply(reg, policyDir); err == nil {
		t.Fatal("applied for an unregistered certificate")
	}
	if names, _ := state.PolicyNames(policyDir); len(names) != 0 {
		t.Fatalf("a failed provisioning left policies %v", names)
	}
	if _, found, _ := reg.Thing("dev_ab-12"); found {
		t.Fatal("a failed provisioning left a thing")
	}

	p, _ = tpl.Resolve(map[string]string{"SerialNumber": "ab-12", "CertificateId": rec.ID})
	res, err := p.Apply(reg, policyDir)
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := reg.Certificate(rec.ID)
	if res.ThingName != "dev_ab-12" || got.Status != auth.StatusActive || !got.AttachedTo("dev_ab-12") || len(got.Policies) != 1 {
		t.Fatalf("after Apply: %+v %+v", res, got)
	}
	if _, err := os.Stat(state.PolicyPath(policyDir, got.Policies[0])); err != nil {
		t.Fatalf("policy file: %v", err)
	}
}

// TestApplyGroups: a template's ThingGroups for a new thing, and each OverrideSettings.ThingGroups
// action for a thing that is already in group a (aws-iot-core/provision-template.md).
func TestApplyGroups(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existed  bool
		override string
		groups   []string
		want     []string // groups of the thing afterwards
		fails    bool
	}{
		{"new thing", false, "", []string{"b"}, []string{"b"}, false},
		{"existing, default DO_NOTHING", true, "", []string{"b"}, []string{"a"}, false},
		{"existing, REPLACE", true, overrideReplace, []string{"b"}, []string{"b"}, false},
		{"existing, MERGE", true, overrideMerge, []string{"b"}, []string{"a", "b"}, false},
		{"existing, FAIL, other groups", true, overrideFail, []string{"b"}, []string{"a"}, true},
		{"existing, FAIL, same groups", true, overrideFail, []string{"a"}, []string{"a"}, false},
		{"group does not exist", false, "", []string{"nope"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &auth.Data{Things: map[string]*auth.Thing{"t": {Name: "t"}}, ThingGroups: map[string]*auth.ThingGroup{
				"a": {Name: "a"}, "b": {Name: "b"}}}
			if tc.existed {
				d.ThingGroups["a"].Things = []string{"t"}
			}
			err := applyGroups(d, &ThingPlan{Name: "t", Groups: tc.groups, override: map[string]string{"THINGGROUPS": tc.override}}, tc.existed)
			if (err != nil) != tc.fails {
				t.Fatalf("err %v, want failure %v", err, tc.fails)
			}
			if tc.fails && tc.existed && !errors.Is(err, ErrResourceConflict) {
				t.Errorf("err %v is not a resource conflict", err)
			}
			if got := d.GroupsOf("t"); !tc.fails && !slices.Equal(got, tc.want) {
				t.Errorf("groups %v, want %v", got, tc.want)
			}
		})
	}
}
