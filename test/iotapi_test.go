package test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
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
	h.record(t, "disconnected a client whose certificate left ACTIVE", map[string]string{"clientId": d.name, "principalId": d.certID})
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
}
