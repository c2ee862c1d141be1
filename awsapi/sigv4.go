package awsapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// MaxSkew is how far a request's X-Amz-Date may be from the server's clock: AWS refuses requests
// signed more than 15 minutes before or after its time ("Signature expired").
const MaxSkew = 15 * time.Minute

// MaxBodyBytes bounds the request bodies the verifier reads (it must hash them): AWS IoT's largest
// input is a policy document of 404600 characters.
const MaxBodyBytes = 1 << 20

const (
	algorithm       = "AWS4-HMAC-SHA256"
	amzDateFormat   = "20060102T150405Z"
	scopeDateFormat = "20060102"
	unsignedPayload = "UNSIGNED-PAYLOAD"
)

// Scope is a verified request's credential scope: who signed it, and for which region and service.
type Scope struct {
	AccessKeyID string
	Date        string
	Region      string
	Service     string
}

// AuthError is why a request was refused before any service saw it: the HTTP status, the AWS error
// type and AWS' message.
type AuthError struct {
	Status  int
	Type    string
	Message string
}

func (e *AuthError) Error() string { return e.Type + ": " + e.Message }

func refuse(errType, format string, args ...any) *AuthError {
	return &AuthError{Status: http.StatusForbidden, Type: errType, Message: fmt.Sprintf(format, args...)}
}

// AWS' messages, word for word, since people search for them.
const (
	msgSignatureMismatch = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
	msgUnknownKey        = "The security token included in the request is invalid."
	msgMissingToken      = "Missing Authentication Token"
)

// Verifier checks AWS Signature Version 4 on incoming requests. It does not implement SigV4 itself: it
// rebuilds the request from what the client says it signed (the signed headers, the raw path and
// query, the body's SHA-256), signs that again with the AWS SDK for Go v2's own signer
// (github.com/aws/aws-sdk-go-v2/aws/signer/v4) and the secret it knows for the access key, and compares
// the two signatures in constant time. So what the SDKs and the AWS CLI sign is what verifies, with no
// hand-made canonicalisation to drift from theirs.
type Verifier struct {
	// Keys maps access key IDs to their secret access keys.
	Keys map[string]string
	// Regions, if not empty, are the regions a credential scope may name (AWS answers "Credential
	// should be scoped to a valid region" otherwise).
	Regions []string
	// Services, if set, says whether a scope's service name is served (else "Credential should be
	// scoped to correct service").
	Services func(name string) bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Verify checks r's signature, in the Authorization header or in the query (a presigned URL). It
// reads the body (at most MaxBodyBytes) and puts it back, so handlers read it as usual.
func (v *Verifier) Verify(r *http.Request) (*Scope, *AuthError) {
	body, aerr := readBody(r)
	if aerr != nil {
		return nil, aerr
	}
	sum := sha256.Sum256(body)
	bodyHash := hex.EncodeToString(sum[:])

	q := r.URL.Query()
	var (
		cred, signedHeaders, signature, amzDate string
		presigned                               = q.Get("X-Amz-Signature") != ""
		expires                                 time.Duration
	)
	switch authz := r.Header.Get("Authorization"); {
	case authz != "":
		var err error
		if cred, signedHeaders, signature, err = parseAuthorization(authz); err != nil {
			return nil, refuse(ErrInvalidSignature, "%v", err)
		}
		amzDate = r.Header.Get("X-Amz-Date")
	case presigned:
		if q.Get("X-Amz-Algorithm") != algorithm {
			return nil, refuse(ErrInvalidSignature, "X-Amz-Algorithm must be %s", algorithm)
		}
		cred, signedHeaders, signature, amzDate = q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature"), q.Get("X-Amz-Date")
		if e := q.Get("X-Amz-Expires"); e != "" {
			secs, err := strconv.Atoi(e)
			if err != nil || secs < 1 || secs > 604800 {
				return nil, refuse(ErrInvalidSignature, "X-Amz-Expires must be 1 to 604800 seconds, got %q", e)
			}
			expires = time.Duration(secs) * time.Second
		}
	default:
		// API Gateway-fronted AWS APIs answer an unsigned request so (AWS IoT included).
		return nil, refuse(ErrMissingAuthentication, msgMissingToken)
	}

	scope, err := parseCredential(cred)
	if err != nil {
		return nil, refuse(ErrInvalidSignature, "%v", err)
	}
	secret, ok := v.Keys[scope.AccessKeyID]
	if !ok {
		return nil, refuse(ErrUnrecognizedClient, msgUnknownKey)
	}
	signedAt, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return nil, refuse(ErrInvalidSignature, "X-Amz-Date %q is not of the form YYYYMMDDTHHMMSSZ (the Date header is not supported)", amzDate)
	}
	if signedAt.Format(scopeDateFormat) != scope.Date {
		return nil, refuse(ErrInvalidSignature, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", scope.Date, signedAt.Format(scopeDateFormat), amzDate)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now().UTC()
	switch {
	case presigned && expires > 0 && t.After(signedAt.Add(expires)):
		return nil, refuse(ErrInvalidSignature, "Signature expired: %s is now earlier than %s (%s + %d sec.)",
			signedAt.Add(expires).Format(amzDateFormat), t.Format(amzDateFormat), amzDate, int(expires/time.Second))
	case (!presigned || expires == 0) && signedAt.Before(t.Add(-MaxSkew)):
		return nil, refuse(ErrInvalidSignature, "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			amzDate, t.Add(-MaxSkew).Format(amzDateFormat), t.Format(amzDateFormat))
	case signedAt.After(t.Add(MaxSkew)):
		return nil, refuse(ErrInvalidSignature, "Signature not yet current: %s is still later than %s (%s + 15 min.)",
			amzDate, t.Add(MaxSkew).Format(amzDateFormat), t.Format(amzDateFormat))
	}
	if len(v.Regions) > 0 && !slices.Contains(v.Regions, scope.Region) {
		return nil, refuse(ErrInvalidSignature, "Credential should be scoped to a valid region, not '%s' (this endpoint serves %s). ", scope.Region, strings.Join(v.Regions, ", "))
	}
	if v.Services != nil && !v.Services(scope.Service) {
		return nil, refuse(ErrInvalidSignature, "Credential should be scoped to correct service: '%s' is not served here.", scope.Service)
	}

	payloadHash := bodyHash
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && !presigned {
		if h == unsignedPayload {
			payloadHash = h // the signature covers the headers only, as the client chose
		} else if h != bodyHash {
			return nil, refuse(ErrInvalidSignature, "The provided 'x-amz-content-sha256' header does not match what was computed.")
		}
	} else if presigned && len(body) == 0 {
		payloadHash = unsignedPayload // what presigning clients put in the canonical request
	}

	want, err := v.resign(r, secret, scope, signedHeaders, payloadHash, signedAt, presigned)
	if err != nil {
		return nil, refuse(ErrInvalidSignature, "%v", err)
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(signature))) != 1 {
		if presigned && payloadHash == unsignedPayload {
			// A presigning client may also have hashed the (empty) body.
			if alt, err := v.resign(r, secret, scope, signedHeaders, bodyHash, signedAt, true); err == nil &&
				subtle.ConstantTimeCompare([]byte(alt), []byte(strings.ToLower(signature))) == 1 {
				return scope, nil
			}
		}
		return nil, refuse(ErrInvalidSignature, msgSignatureMismatch)
	}
	return scope, nil
}

// resign signs a copy of r made of what the client signed only, and returns the signature.
func (v *Verifier) resign(r *http.Request, secret string, scope *Scope, signedHeaders, payloadHash string, at time.Time, presigned bool) (string, error) {
	names := strings.Split(signedHeaders, ";")
	if !slices.Contains(names, "host") {
		return "", fmt.Errorf("the signed headers must include host")
	}
	// The path exactly as the client sent it: the signer escapes it once more (AWS' rule for every
	// service but S3), and r.URL.Path has lost the client's escaping.
	rawPath, rawQuery, _ := strings.Cut(r.RequestURI, "?")
	if rawPath == "" || rawPath[0] != '/' {
		rawPath = r.URL.EscapedPath()
		rawQuery = r.URL.RawQuery
	}
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("query string: %w", err)
	}
	if presigned {
		query.Del("X-Amz-Signature")
	}
	u := &url.URL{Scheme: "https", Host: r.Host, Opaque: rawPath, RawQuery: query.Encode()}
	cp := &http.Request{Method: r.Method, URL: u, Host: r.Host, Header: http.Header{}}
	for _, n := range names {
		switch n {
		case "host":
		case "content-length":
			cp.ContentLength = r.ContentLength
		default:
			if vals := r.Header.Values(n); len(vals) > 0 {
				cp.Header[http.CanonicalHeaderKey(n)] = vals
			} else {
				return "", fmt.Errorf("signed header %q is not in the request", n)
			}
		}
	}
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: scope.AccessKeyID, SecretAccessKey: secret}
	if tok := r.Header.Get("X-Amz-Security-Token"); tok != "" || query.Get("X-Amz-Security-Token") != "" {
		return "", fmt.Errorf("session tokens are not supported here: use the access key of the credentials file")
	}
	ctx := context.Background()
	if presigned {
		signed, _, err := signer.PresignHTTP(ctx, creds, cp, payloadHash, scope.Service, scope.Region, at)
		if err != nil {
			return "", err
		}
		su, err := url.Parse(signed)
		if err != nil {
			return "", err
		}
		return su.Query().Get("X-Amz-Signature"), nil
	}
	if err := signer.SignHTTP(ctx, creds, cp, payloadHash, scope.Service, scope.Region, at); err != nil {
		return "", err
	}
	_, sh, sig, err := parseAuthorization(cp.Header.Get("Authorization"))
	if err != nil {
		return "", err
	}
	if sh != signedHeaders {
		// The signer signs every header it is given that SigV4 does not exclude; a client that
		// signed one it excludes (user-agent, expect) cannot be verified.
		return "", fmt.Errorf("signed headers %q cannot be verified (the SDK signer signs %q)", signedHeaders, sh)
	}
	return sig, nil
}

// parseAuthorization splits "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
func parseAuthorization(h string) (cred, signedHeaders, signature string, err error) {
	alg, rest, _ := strings.Cut(h, " ")
	if alg != algorithm {
		return "", "", "", fmt.Errorf("Authorization header: algorithm %q is not %s", alg, algorithm)
	}
	for _, part := range strings.Split(rest, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = val
		case "SignedHeaders":
			signedHeaders = val
		case "Signature":
			signature = val
		}
	}
	if cred == "" || signedHeaders == "" || signature == "" {
		return "", "", "", fmt.Errorf("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters")
	}
	return cred, signedHeaders, signature, nil
}

// parseCredential splits "AKID/20260101/us-east-1/iot/aws4_request".
func parseCredential(cred string) (*Scope, error) {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return nil, fmt.Errorf("Credential %q is not of the form <access key>/<date>/<region>/<service>/aws4_request", cred)
	}
	if _, err := time.Parse(scopeDateFormat, parts[1]); err != nil {
		return nil, fmt.Errorf("Credential %q: date %q is not YYYYMMDD", cred, parts[1])
	}
	return &Scope{AccessKeyID: parts[0], Date: parts[1], Region: parts[2], Service: parts[3]}, nil
}

func readBody(r *http.Request) ([]byte, *AuthError) {
	if r.Body == nil || r.Body == http.NoBody {
		r.Body = http.NoBody
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	r.Body.Close()
	if err != nil {
		return nil, &AuthError{Status: http.StatusBadRequest, Type: ErrSerialization, Message: "reading the request body: " + err.Error()}
	}
	if len(body) > MaxBodyBytes {
		return nil, &AuthError{Status: http.StatusRequestEntityTooLarge, Type: ErrInvalidRequest, Message: fmt.Sprintf("the request body is larger than %d bytes", MaxBodyBytes)}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}
