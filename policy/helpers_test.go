package policy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"
)

const arnPrefix = "arn:aws:iot:us-east-1:123456789012:"

var testEnv = Env{Region: "us-east-1", AccountID: "123456789012"}

// check is one question asked of a policy, with the answer the AWS page
// states (or implies).
type check struct {
	name     string
	action   string
	resource string // kind/name, e.g. "topic/a/b"
	ctx      *Context
	want     Decision
}

// thingCtx is a registered device: the client ID is the name of a thing the
// certificate is attached to.
func thingCtx(name string) *Context {
	return &Context{ClientID: name, Thing: &Thing{Name: name}}
}

// clientCtx is an unregistered device: no thing.
func clientCtx(id string) *Context { return &Context{ClientID: id} }

func mustParse(tb testing.TB, name, doc string) *Policy {
	tb.Helper()
	p, err := ParseDocument(name, []byte(doc))
	if err != nil {
		tb.Fatalf("ParseDocument(%s): %v", name, err)
	}
	return p
}

func request(tb testing.TB, c check) Request {
	tb.Helper()
	kind, name, ok := strings.Cut(c.resource, "/")
	if !ok {
		tb.Fatalf("bad resource %q", c.resource)
	}
	return Request{Action: c.action, Kind: kind, Name: name, Context: c.ctx}
}

// runChecks evaluates every check both as Kind/Name (the broker) and as a
// full ARN (the CLI), which must agree.
func runChecks(t *testing.T, set *Set, checks []check) {
	t.Helper()
	for _, c := range checks {
		req := request(t, c)
		got, diag := set.Evaluate(req)
		if got != c.want {
			t.Errorf("%s: %s %s: got %v (%v), want %v", c.name, c.action, c.resource, got, diag, c.want)
			continue
		}
		arn, err := ExpandResource(testEnv, c.resource)
		if err != nil {
			t.Errorf("%s: ExpandResource(%q): %v", c.name, c.resource, err)
			continue
		}
		if got2, diag2 := set.Evaluate(Request{Action: c.action, ARN: arn, Context: c.ctx}); got2 != got {
			t.Errorf("%s: by ARN %s: got %v (%v), by kind/name %v", c.name, arn, got2, diag2, got)
		}
	}
}

var (
	oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
)

// testCert makes a real (parsed) self-signed certificate whose subject has
// the given attributes, in order, so that multi-valued fields are as a
// device's certificate would have them.
func testCert(tb testing.TB, subject []pkix.AttributeTypeAndValue) *x509.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4242),
		Subject:      pkix.Name{ExtraNames: subject},
		Issuer:       pkix.Name{CommonName: "Test CA"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"dev.example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

func attrs(oid asn1.ObjectIdentifier, values ...string) []pkix.AttributeTypeAndValue {
	var out []pkix.AttributeTypeAndValue
	for _, v := range values {
		out = append(out, pkix.AttributeTypeAndValue{Type: oid, Value: v})
	}
	return out
}
