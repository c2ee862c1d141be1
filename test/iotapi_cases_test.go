package test

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
)

// TestAPIAcceptanceCases covers the spec's cases that the other tests do not: 8, 15, 18, 22, 24, 25, 26.
func TestAPIAcceptanceCases(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	d := provisionViaAPI(t, c, "case-dev", "case-policy", thingPolicy)
	certArn := "arn:aws:iot:us-east-1:123456789012:cert/" + d.certID

	t.Run("22: CreatePolicy again names the resource", func(t *testing.T) {
		_, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("case-policy"), PolicyDocument: aws.String(thingPolicy)})
		var exists *iottypes.ResourceAlreadyExistsException
		if !errors.As(err, &exists) || aws.ToString(exists.ResourceId) != "case-policy" || aws.ToString(exists.ResourceArn) != "arn:aws:iot:us-east-1:123456789012:policy/case-policy" {
			t.Fatalf("%v", err)
		}
		out, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("p-new"), PolicyDocument: aws.String(thingPolicy)})
		if err != nil || aws.ToString(out.PolicyVersionId) != "1" {
			t.Fatalf("CreatePolicy: %v %+v", err, out)
		}
	})
	t.Run("18: principals on the wire, missing header", func(t *testing.T) {
		status, _, out := h.callSigned(t, "iot", "GET", "/things/case-dev/principals", nil)
		if p, _ := out["principals"].([]any); status != 200 || len(p) != 1 || p[0] != certArn {
			t.Fatalf("%d %v", status, out)
		}
		if status, typ, out := h.callSigned(t, "iot", "PUT", "/things/case-dev/principals", nil); status != 400 || typ != "InvalidRequestException" || out["message"] == "" {
			t.Fatalf("no x-amzn-principal: %d %s %v", status, typ, out)
		}
	})
	t.Run("26: error wire format", func(t *testing.T) {
		status, typ, out := h.callSigned(t, "iot", "GET", "/things/nope", nil)
		if status != 404 || typ != "ResourceNotFoundException" || out["message"] == nil {
			t.Fatalf("%d %s %v", status, typ, out)
		}
	})
	t.Run("23: attached policies of a URL-encoded ARN", func(t *testing.T) {
		status, _, out := h.callSigned(t, "iot", "POST", "/attached-policies/"+url.PathEscape(certArn), nil)
		if p, _ := out["policies"].([]any); status != 200 || len(p) != 1 || p[0].(map[string]any)["policyName"] != "case-policy" {
			t.Fatalf("%d %v", status, out)
		}
	})
	t.Run("24: DescribeEndpoint", func(t *testing.T) {
		out, err := c.DescribeEndpoint(ctx, &iot.DescribeEndpointInput{EndpointType: aws.String("iot:Data-ATS")})
		if err != nil || aws.ToString(out.EndpointAddress) != "localhost" {
			t.Fatalf("%v %+v", err, out)
		}
	})
	t.Run("25: TestAuthorization explicit deny names the policy", func(t *testing.T) {
		deny := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/dev/case-dev/secret"}]}`
		if _, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("deny"), PolicyDocument: aws.String(deny)}); err != nil {
			t.Fatal(err)
		}
		out, err := c.TestAuthorization(ctx, &iot.TestAuthorizationInput{Principal: aws.String(certArn), ClientId: aws.String("case-dev"),
			PolicyNamesToAdd: []string{"deny"},
			AuthInfos:        []iottypes.AuthInfo{{ActionType: iottypes.ActionTypePublish, Resources: []string{"arn:aws:iot:us-east-1:123456789012:topic/dev/case-dev/secret"}}}})
		if err != nil {
			t.Fatal(err)
		}
		r := out.AuthResults[0]
		if r.AuthDecision != iottypes.AuthDecisionExplicitDeny || len(r.Denied.ExplicitDeny.Policies) != 1 || aws.ToString(r.Denied.ExplicitDeny.Policies[0].PolicyName) != "deny" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("8: a JITP template with a CSR is refused at registration", func(t *testing.T) {
		ca := newTestCA(t, "csr CA")
		_, err := c.RegisterCACertificate(ctx, &iot.RegisterCACertificateInput{CaCertificate: aws.String(string(ca.CertPEM())), CertificateMode: iottypes.CertificateModeSniOnly,
			RegistrationConfig: &iottypes.RegistrationConfig{TemplateBody: aws.String(`{"Resources":{"c":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateSigningRequest":"x"}}}}`)}})
		if apiErrorCode(err) != "InvalidRequestException" {
			t.Fatalf("%v", err)
		}
	})
	t.Run("15: a claim certificate without the provision topic gets no answer", func(t *testing.T) {
		limited := `{"Version":"2012-10-17","Statement":[
		 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
		 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/$aws/certificates/create/*"},
		 {"Effect":"Allow","Action":"iot:Subscribe","Resource":["arn:aws:iot:*:*:topicfilter/$aws/certificates/create/*","arn:aws:iot:*:*:topicfilter/$aws/provisioning-templates/*"]}]}`
		h.writePolicy("limited-claim", limited)
		cl := h.mustConnectV3(h.createDevice("claim-limited", "limited-claim"))
		got := subscribeV3(t, cl, "$aws/provisioning-templates/fleet/provision/json/+", 1)
		tok := cl.Publish("$aws/provisioning-templates/fleet/provision/json", 1, false, `{"certificateOwnershipToken":"x","parameters":{}}`)
		tok.WaitTimeout(waitFor)
		h.record(t, "not authorized", map[string]string{"eventType": "Publish-In", "clientId": "claim-limited", "topicName": "$aws/provisioning-templates/fleet/provision/json"})
		if n := h.logs.FilterMessage("fleet provisioning request rejected").Len(); n != 0 {
			t.Fatalf("the service saw a publish the policy denied (%d records)", n)
		}
		select {
		case m := <-got:
			t.Fatalf("a denied RegisterThing was answered: %s", m)
		default:
		}
	})
}
