package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/broker"
)

// apiErrorCode is the AWS error code an SDK call failed with ("" if it did not fail that way).
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestAPIListenerAuthenticates: the listener serves HTTPS that the core CA verifies, writes the
// credentials file 0600 on first start, and refuses wrong keys with AWS' errors before any service
// sees the request.
func TestAPIListenerAuthenticates(t *testing.T) {
	h := startBroker(t, nil)
	credPath := filepath.Join(h.broker.State().Dir, broker.CredentialsFile)
	if m := fileMode(t, credPath); m.Perm() != 0o600 {
		t.Fatalf("credentials file mode %v, want 0600", m)
	}
	raw, err := os.ReadFile(credPath)
	if err != nil || !strings.Contains(string(raw), "[ggbroker]") {
		t.Fatalf("credentials file: %v\n%s", err, raw)
	}
	ctx := context.Background()
	cases := []struct {
		name   string
		mutate func(*iot.Options)
		want   string
	}{
		{"unknown access key", func(o *iot.Options) {
			o.Credentials = credentials.NewStaticCredentialsProvider("AKIAUNKNOWNUNKNOWN00", "x", "")
		}, "UnrecognizedClientException"},
		{"wrong secret", func(o *iot.Options) {
			c, _ := h.apiConfig(t).Credentials.Retrieve(ctx)
			o.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, "wrong-secret", "")
		}, "InvalidSignatureException"},
		{"anonymous", func(o *iot.Options) { o.Credentials = aws.AnonymousCredentials{} }, "MissingAuthenticationTokenException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.iotClient(t, tc.mutate).DescribeEndpoint(ctx, &iot.DescribeEndpointInput{})
			if got := apiErrorCode(err); got != tc.want {
				t.Fatalf("error %v (code %q), want %s", err, got, tc.want)
			}
		})
	}
	if cert := h.broker.APICertificate(); cert == nil || cert.Issuer.CommonName != h.broker.State().CoreCA.Cert.Subject.CommonName {
		t.Fatalf("API certificate not issued by the core CA: %v", cert)
	}
}

const thingPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/dev/${iot:Connection.Thing.ThingName}/*"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/dev/${iot:Connection.Thing.ThingName}/*"}]}`

// TestProvisionThroughAPIThenConnect is the main case: a test rig creates a thing, keys, a
// policy and the attachments with the AWS SDK; the device connects over mTLS and publishes; revoking
// the certificate through the API closes its live connection at once and refuses the next one.
func TestProvisionThroughAPIThenConnect(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	d := provisionViaAPI(t, c, "api-dev-1", "api-policy", thingPolicy)

	lost := make(chan error, 1)
	cl, err := h.connectV3(d, d.name, func(o *pahov3.ClientOptions) {
		o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
	})
	if err != nil {
		t.Fatalf("device provisioned through the API cannot connect: %v", err)
	}
	got := subscribeV3(t, cl, "dev/api-dev-1/#", 1)
	publishV3(t, cl, "dev/api-dev-1/temp", 1, false, "21")
	expectMessage(t, got, "dev/api-dev-1/temp 21")

	// The same engine decides TestAuthorization.
	ta, err := c.TestAuthorization(ctx, &iot.TestAuthorizationInput{
		Principal: aws.String("arn:aws:iot:us-east-1:123456789012:cert/" + d.certID), ClientId: aws.String(d.name),
		AuthInfos: []iottypes.AuthInfo{
			{ActionType: iottypes.ActionTypePublish, Resources: []string{"arn:aws:iot:us-east-1:123456789012:topic/dev/api-dev-1/x"}},
			{ActionType: iottypes.ActionTypePublish, Resources: []string{"arn:aws:iot:us-east-1:123456789012:topic/other"}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	if ta.AuthResults[0].AuthDecision != iottypes.AuthDecisionAllowed || ta.AuthResults[1].AuthDecision != iottypes.AuthDecisionImplicitDeny {
		t.Fatalf("TestAuthorization: %s, %s", ta.AuthResults[0].AuthDecision, ta.AuthResults[1].AuthDecision)
	}

	if _, err := c.UpdateCertificate(ctx, &iot.UpdateCertificateInput{CertificateId: aws.String(d.certID), NewStatus: iottypes.CertificateStatusRevoked}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("the revoked certificate's connection stayed open")
	}
	if _, err := h.connectV3(d, d.name); err == nil {
		t.Fatal("a revoked certificate connected")
	}
	_, err = c.UpdateCertificate(ctx, &iot.UpdateCertificateInput{CertificateId: aws.String(d.certID), NewStatus: iottypes.CertificateStatusActive})
	var cse *iottypes.CertificateStateException
	if !errors.As(err, &cse) {
		t.Fatalf("reactivating a revoked certificate: %v, want CertificateStateException", err)
	}
	desc, err := c.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(d.certID)})
	if err != nil || desc.CertificateDescription.Status != iottypes.CertificateStatusRevoked {
		t.Fatalf("DescribeCertificate: %v %+v", err, desc)
	}
	resp, err := http.Get("http://" + h.broker.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`ggbroker_iotapi_operations_total{operation="CreateThing",result="success"} 1`,
		`ggbroker_iotapi_operations_total{operation="UpdateCertificate",result="CertificateStateException"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestAPIErrorClasses: every error AWS' model gives these operations reaches the SDK as its own
// error class, with AWS' HTTP status.
func TestAPIErrorClasses(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	d := provisionViaAPI(t, c, "err-dev", "err-policy", thingPolicy)
	arn := aws.String("arn:aws:iot:us-east-1:123456789012:cert/" + d.certID)
	missing := strings.Repeat("ab", 32)

	cases := []struct {
		name   string
		call   func() error
		code   string
		status int
	}{
		{"DescribeThing of a missing thing", func() error {
			_, err := c.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("nope")})
			return err
		}, "ResourceNotFoundException", 404},
		{"CreateThing with other attributes", func() error {
			_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("err-dev"),
				AttributePayload: &iottypes.AttributePayload{Attributes: map[string]string{"a": "b"}}})
			return err
		}, "ResourceAlreadyExistsException", 409},
		{"CreateThing with a bad name", func() error {
			_, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("bad name")})
			return err
		}, "InvalidRequestException", 400},
		{"UpdateThing with a stale version", func() error {
			_, err := c.UpdateThing(ctx, &iot.UpdateThingInput{ThingName: aws.String("err-dev"), ExpectedVersion: aws.Int64(7)})
			return err
		}, "VersionConflictException", 409},
		{"DeleteCertificate while ACTIVE", func() error {
			_, err := c.DeleteCertificate(ctx, &iot.DeleteCertificateInput{CertificateId: aws.String(d.certID)})
			return err
		}, "CertificateStateException", 406},
		{"DescribeCertificate of a missing one", func() error {
			_, err := c.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(missing)})
			return err
		}, "ResourceNotFoundException", 404},
		{"CreatePolicy again", func() error {
			_, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("err-policy"), PolicyDocument: aws.String(thingPolicy)})
			return err
		}, "ResourceAlreadyExistsException", 409},
		{"CreatePolicy not JSON", func() error {
			_, err := c.CreatePolicy(ctx, &iot.CreatePolicyInput{PolicyName: aws.String("p2"), PolicyDocument: aws.String("not json")})
			return err
		}, "MalformedPolicyException", 400},
		{"DeletePolicy while attached", func() error {
			_, err := c.DeletePolicy(ctx, &iot.DeletePolicyInput{PolicyName: aws.String("err-policy")})
			return err
		}, "DeleteConflictException", 409},
		{"GetPolicy of a missing one", func() error {
			_, err := c.GetPolicy(ctx, &iot.GetPolicyInput{PolicyName: aws.String("nope")})
			return err
		}, "ResourceNotFoundException", 404},
		{"AttachPolicy of a missing policy", func() error {
			_, err := c.AttachPolicy(ctx, &iot.AttachPolicyInput{PolicyName: aws.String("nope"), Target: arn})
			return err
		}, "ResourceNotFoundException", 404},
		{"AttachThingPrincipal to a missing thing", func() error {
			_, err := c.AttachThingPrincipal(ctx, &iot.AttachThingPrincipalInput{ThingName: aws.String("nope"), Principal: arn})
			return err
		}, "ResourceNotFoundException", 404},
		{"RegisterCertificateWithoutCA of a registered one", func() error {
			desc, err := c.DescribeCertificate(ctx, &iot.DescribeCertificateInput{CertificateId: aws.String(d.certID)})
			if err != nil {
				return err
			}
			_, err = c.RegisterCertificateWithoutCA(ctx, &iot.RegisterCertificateWithoutCAInput{CertificatePem: desc.CertificateDescription.CertificatePem})
			return err
		}, "ResourceAlreadyExistsException", 409},
		{"RegisterCertificateWithoutCA of garbage", func() error {
			_, err := c.RegisterCertificateWithoutCA(ctx, &iot.RegisterCertificateWithoutCAInput{CertificatePem: aws.String("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")})
			return err
		}, "CertificateValidationException", 400},
		{"TestAuthorization with 11 authInfos", func() error {
			infos := make([]iottypes.AuthInfo, 11)
			for i := range infos {
				infos[i] = iottypes.AuthInfo{ActionType: iottypes.ActionTypePublish, Resources: []string{"arn:aws:iot:us-east-1:123456789012:topic/a"}}
			}
			_, err := c.TestAuthorization(ctx, &iot.TestAuthorizationInput{Principal: arn, AuthInfos: infos})
			return err
		}, "InvalidRequestException", 400},
		{"DescribeEndpoint of an unknown type", func() error {
			_, err := c.DescribeEndpoint(ctx, &iot.DescribeEndpointInput{EndpointType: aws.String("iot:Nope")})
			return err
		}, "InvalidRequestException", 400},
		{"DeleteThing with principals", func() error {
			_, err := c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("err-dev")})
			return err
		}, "InvalidRequestException", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := apiErrorCode(err); got != tc.code {
				t.Fatalf("error %v (code %q), want %s", err, got, tc.code)
			}
			var re *awshttp.ResponseError
			if !errors.As(err, &re) || re.HTTPStatusCode() != tc.status {
				t.Fatalf("HTTP status of %v: want %d", err, tc.status)
			}
		})
	}

	// The delete rules in order: INACTIVE but attached -> 409; detached -> deleted.
	if _, err := c.UpdateCertificate(ctx, &iot.UpdateCertificateInput{CertificateId: aws.String(d.certID), NewStatus: iottypes.CertificateStatusInactive}); err != nil {
		t.Fatal(err)
	}
	_, err := c.DeleteCertificate(ctx, &iot.DeleteCertificateInput{CertificateId: aws.String(d.certID)})
	if apiErrorCode(err) != "DeleteConflictException" {
		t.Fatalf("delete while attached: %v", err)
	}
	if _, err := c.DetachThingPrincipal(ctx, &iot.DetachThingPrincipalInput{ThingName: aws.String("err-dev"), Principal: arn}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DetachPolicy(ctx, &iot.DetachPolicyInput{PolicyName: aws.String("err-policy"), Target: arn}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteCertificate(ctx, &iot.DeleteCertificateInput{CertificateId: aws.String(d.certID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("err-dev")}); err != nil {
		t.Fatal(err)
	}
	// AWS answers 200 for a thing that does not exist.
	if _, err := c.DeleteThing(ctx, &iot.DeleteThingInput{ThingName: aws.String("err-dev")}); err != nil {
		t.Fatalf("DeleteThing of a missing thing: %v", err)
	}
}

// TestAPIPaging: ListThings and ListCertificates hand out pages and tokens the SDK's paginators follow.
func TestAPIPaging(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("page-%02d", i)
		want = append(want, name)
		if _, err := c.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name),
			AttributePayload: &iottypes.AttributePayload{Attributes: map[string]string{"even": fmt.Sprint(i%2 == 0)}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateKeysAndCertificate(ctx, &iot.CreateKeysAndCertificateInput{}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	pages := 0
	for p := iot.NewListThingsPaginator(c, &iot.ListThingsInput{MaxResults: aws.Int32(3)}); p.HasMorePages(); {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(out.Things) > 3 {
			t.Fatalf("page of %d things, asked for 3", len(out.Things))
		}
		for _, th := range out.Things {
			got = append(got, aws.ToString(th.ThingName))
		}
	}
	if pages != 3 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%d pages: %v, want 3 pages of %v", pages, got, want)
	}
	even, err := c.ListThings(ctx, &iot.ListThingsInput{AttributeName: aws.String("even"), AttributeValue: aws.String("true")})
	if err != nil || len(even.Things) != 4 {
		t.Fatalf("ListThings by attribute: %v, %d things", err, len(even.Things))
	}
	certCount := 0
	for p := iot.NewListCertificatesPaginator(c, &iot.ListCertificatesInput{PageSize: aws.Int32(2)}); p.HasMorePages(); {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ce := range out.Certificates {
			if ce.Status != iottypes.CertificateStatusInactive {
				t.Fatalf("certificate made without setAsActive is %s, want INACTIVE", ce.Status)
			}
		}
		certCount += len(out.Certificates)
	}
	if certCount != 7 {
		t.Fatalf("ListCertificates paged through %d certificates, want 7", certCount)
	}
	if _, err := c.ListThings(ctx, &iot.ListThingsInput{NextToken: aws.String("forged")}); apiErrorCode(err) != "InvalidRequestException" {
		t.Fatalf("forged token: %v", err)
	}
}

// TestAPIBadSignatureChangesNothing: a request with a wrong signature is refused before the service
// sees it.
func TestAPIBadSignatureChangesNothing(t *testing.T) {
	h := startAPIBroker(t, nil)
	ctx := context.Background()
	creds, err := h.apiConfig(t).Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := h.iotClient(t, func(o *iot.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey+"x", "")
	})
	if _, err := bad.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String("forged")}); apiErrorCode(err) != "InvalidSignatureException" {
		t.Fatalf("bad signature: %v", err)
	}
	if _, err := bad.CreateKeysAndCertificate(ctx, &iot.CreateKeysAndCertificateInput{SetAsActive: true}); apiErrorCode(err) != "InvalidSignatureException" {
		t.Fatalf("bad signature: %v", err)
	}
	if _, found, _ := h.broker.State().Registry.Thing("forged"); found {
		t.Fatal("a refused request created a thing")
	}
	if list, _ := h.broker.State().Registry.Certificates(); len(list) != 0 {
		t.Fatalf("a refused request created %d certificates", len(list))
	}
	h.record(t, "API request refused", map[string]string{"reason": "InvalidSignatureException"})
	for _, e := range h.logs.All() {
		if strings.Contains(fmt.Sprint(e.ContextMap()), creds.SecretAccessKey) {
			t.Fatalf("the secret is in a log record: %s", e.Message)
		}
	}
}

// TestAPIStateSurvivesRestart: what the API made is in the state directory, not in memory.
func TestAPIStateSurvivesRestart(t *testing.T) {
	h := startAPIBroker(t, nil)
	c := h.iotClient(t)
	ctx := context.Background()
	d := provisionViaAPI(t, c, "persist-dev", "persist-policy", thingPolicy)
	h.stop()

	h2 := startWith(t, h.cfg)
	c2 := h2.iotClient(t)
	th, err := c2.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String("persist-dev")})
	if err != nil {
		t.Fatalf("thing after restart: %v", err)
	}
	if aws.ToString(th.ThingId) == "" || th.Version != 1 {
		t.Fatalf("DescribeThing after restart: %+v", th)
	}
	pols, err := c2.ListAttachedPolicies(ctx, &iot.ListAttachedPoliciesInput{Target: aws.String("arn:aws:iot:us-east-1:123456789012:cert/" + d.certID)})
	if err != nil || len(pols.Policies) != 1 || aws.ToString(pols.Policies[0].PolicyName) != "persist-policy" {
		t.Fatalf("attached policies after restart: %v %+v", err, pols)
	}
	cl := h2.mustConnectV3(d)
	publishV3(t, cl, "dev/persist-dev/x", 1, false, "after restart")
}
