package awsapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"go.uber.org/zap"
)

var testCreds = Credentials{AccessKeyID: "AKIATESTTESTTESTTEST", SecretAccessKey: "secretsecretsecretsecretsecretsecretsecr"}

// signed builds a request to srv signed by the AWS SDK for Go v2's signer, as a client would.
func signed(t *testing.T, srv *httptest.Server, method, path string, body []byte, creds Credentials, service, region string, at time.Time, edit func(*http.Request)) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey},
		req, hex.EncodeToString(sum[:]), service, region, at)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(req)
	}
	return req
}

func presigned(t *testing.T, srv *httptest.Server, path string, expires string, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if expires != "" {
		q := req.URL.Query()
		q.Set("X-Amz-Expires", expires)
		req.URL.RawQuery = q.Encode()
	}
	u, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: testCreds.SecretAccessKey},
		req, "UNSIGNED-PAYLOAD", "iot", "us-east-1", at)
	if err != nil {
		t.Fatal(err)
	}
	out, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifier(t *testing.T) {
	calls := 0
	rt := NewRouter([]Credentials{testCreds}, []string{"us-east-1"}, zap.NewNop())
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		body, _ := io.ReadAll(r.Body)
		WriteJSON(w, http.StatusOK, map[string]string{"body": string(body), "name": r.PathValue("name"), "service": ScopeFrom(r.Context()).Service})
	})
	for _, route := range []struct{ name, pattern string }{{"iot", "POST /things/{name}"}, {"iot", "GET /things/{name}"}, {"greengrass", "GET /greengrass/things/{name}"}} {
		if err := rt.Handle(route.name, route.pattern, echo); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(rt)
	defer srv.Close()
	now := time.Now()
	body := []byte(`{"attributePayload":{"attributes":{"a":"b"}}}`)

	cases := []struct {
		name       string
		req        *http.Request
		wantStatus int
		wantType   string
	}{
		{"valid", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now, nil), 200, ""},
		{"valid GET, encoded path", signed(t, srv, "GET", "/things/a%3Ab", nil, testCreds, "iot", "us-east-1", now, nil), 200, ""},
		{"other signing name reaches its own routes", signed(t, srv, "GET", "/greengrass/things/core", nil, testCreds, "greengrass", "us-east-1", now, nil), 200, ""},
		{"execute-api, the older signing name of the AWS IoT control plane", signed(t, srv, "POST", "/things/t1", body, testCreds, "execute-api", "us-east-1", now, nil), 200, ""},
		{"execute-api reaches only iot's routes", signed(t, srv, "GET", "/greengrass/things/core", nil, testCreds, "execute-api", "us-east-1", now, nil), 404, ErrUnknownOperation},
		{"route of another signing name", signed(t, srv, "GET", "/greengrass/things/core", nil, testCreds, "iot", "us-east-1", now, nil), 404, ErrUnknownOperation},
		{"tampered body", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now, func(r *http.Request) {
			b := bytes.Replace(body, []byte(`"b"`), []byte(`"c"`), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}), 403, ErrInvalidSignature},
		{"tampered path", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now, func(r *http.Request) { r.URL.Path = "/things/t2" }), 403, ErrInvalidSignature},
		{"tampered signed header", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now, func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }), 403, ErrInvalidSignature},
		{"wrong secret", signed(t, srv, "POST", "/things/t1", body, Credentials{testCreds.AccessKeyID, "wrong"}, "iot", "us-east-1", now, nil), 403, ErrInvalidSignature},
		{"unknown access key", signed(t, srv, "POST", "/things/t1", body, Credentials{"AKIAOTHEROTHEROTHER0", testCreds.SecretAccessKey}, "iot", "us-east-1", now, nil), 403, ErrUnrecognizedClient},
		{"stale date", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now.Add(-16*time.Minute), nil), 403, ErrInvalidSignature},
		{"date in the future", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now.Add(16*time.Minute), nil), 403, ErrInvalidSignature},
		{"within the skew", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now.Add(-14*time.Minute), nil), 200, ""},
		{"wrong region", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "eu-west-1", now, nil), 403, ErrInvalidSignature},
		{"unknown service", signed(t, srv, "POST", "/things/t1", body, testCreds, "s3", "us-east-1", now, nil), 403, ErrInvalidSignature},
		{"garbled Authorization", signed(t, srv, "POST", "/things/t1", body, testCreds, "iot", "us-east-1", now, func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 nonsense") }), 403, ErrInvalidSignature},
		{"unsigned", func() *http.Request { r, _ := http.NewRequest("GET", srv.URL+"/things/t1", nil); return r }(), 403, ErrMissingAuthentication},
		{"presigned", presigned(t, srv, "/things/t1", "300", now), 200, ""},
		{"presigned, expired", presigned(t, srv, "/things/t1", "60", now.Add(-2*time.Minute)), 403, ErrInvalidSignature},
		{"presigned without X-Amz-Expires, stale", presigned(t, srv, "/things/t1", "", now.Add(-16*time.Minute)), 403, ErrInvalidSignature},
		{"presigned without X-Amz-Expires, fresh", presigned(t, srv, "/things/t1", "", now), 200, ""},
		{"presigned, tampered", func() *http.Request {
			r := presigned(t, srv, "/things/t1", "300", now)
			r.URL.Path = "/things/t2"
			return r
		}(), 403, ErrInvalidSignature},
		{"unknown operation", signed(t, srv, "DELETE", "/things/t1", nil, testCreds, "iot", "us-east-1", now, nil), 404, ErrUnknownOperation},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := calls
			resp, err := http.DefaultClient.Do(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, raw)
			}
			if got := resp.Header.Get("x-amzn-ErrorType"); got != tc.wantType {
				t.Fatalf("x-amzn-ErrorType %q, want %q (%s)", got, tc.wantType, raw)
			}
			if resp.Header.Get("x-amzn-RequestId") == "" {
				t.Fatal("no x-amzn-RequestId")
			}
			if tc.wantType != "" {
				var e struct{ Message string }
				if err := json.Unmarshal(raw, &e); err != nil || e.Message == "" {
					t.Fatalf("error body %s: want {\"message\": ...}", raw)
				}
				if strings.Contains(string(raw), testCreds.SecretAccessKey) {
					t.Fatal("the secret is in the answer")
				}
				if calls != before {
					t.Fatal("a refused request reached the handler")
				}
			} else if calls != before+1 {
				t.Fatal("handler not called")
			}
		})
	}
}

func TestRouterRefusesConflictingRoutes(t *testing.T) {
	rt := NewRouter(nil, nil, zap.NewNop())
	h := http.NotFoundHandler()
	if err := rt.Handle("iot", "GET /things/{a}", h); err != nil {
		t.Fatal(err)
	}
	if err := rt.Handle("iot", "GET /things/{b}", h); err == nil {
		t.Fatal("conflicting pattern accepted")
	}
	if err := rt.Handle("iotdata", "GET /things/{b}", h); err != nil {
		t.Fatalf("same pattern for another signing name: %v", err)
	}
	if err := rt.Handle("", "GET /x", h); err == nil {
		t.Fatal("empty signing name accepted")
	}
}
