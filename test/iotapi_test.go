package test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/smithy-go"

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
