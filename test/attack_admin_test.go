package test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggbroker/ggbroker/state"
)

// adminPost POSTs to the admin listener with the state directory's admin token and any extra headers.
func (h *harness) adminPost(t *testing.T, path string, headers map[string]string) *http.Response {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(h.cfg.StateDir, state.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+h.broker.AdminAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(raw)))
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestAdminRotateNeedsTokenAndLocalOrigin (issue 17, medium): any local user could force rotations
// (in restart mode: disconnect every device) with an unauthenticated POST; a web page could too, through
// DNS rebinding or a cross-site form. POST /rotate needs the 0600 token; foreign Host and Origin
// headers are refused on every endpoint; the read-only health endpoints stay open.
func TestAdminRotateNeedsTokenAndLocalOrigin(t *testing.T) {
	h := startBroker(t, nil)
	if m := fileMode(t, filepath.Join(h.cfg.StateDir, state.AdminTokenFile)); m != 0o600 {
		t.Fatalf("admin token file mode %o, want 600", m)
	}
	serial := h.broker.ServerCertificate().SerialNumber.String()
	base := "http://" + h.broker.AdminAddr().String()
	for _, tc := range []struct {
		name    string
		auth    string
		headers map[string]string
		want    int
	}{
		{"no token", "", nil, http.StatusUnauthorized},
		{"wrong token", "Bearer nope", nil, http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodPost, base+"/rotate", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("%s: %s, want %d", tc.name, resp.Status, tc.want)
		}
	}
	for name, hdr := range map[string]map[string]string{
		"rebound Host":   {"Host": "evil.example:9883"},
		"foreign Origin": {"Origin": "http://evil.example"},
	} {
		if resp := h.adminPost(t, "/rotate", hdr); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s with the token: %s, want 403", name, resp.Status)
		}
	}
	if got := h.broker.ServerCertificate().SerialNumber.String(); got != serial {
		t.Fatal("a refused request rotated the server certificate")
	}
	if code, _ := h.adminGet("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz without a token: %d", code)
	}
	if resp := h.adminPost(t, "/rotate", map[string]string{"Origin": "http://localhost:9883"}); resp.StatusCode != http.StatusOK {
		t.Fatalf("with the token from localhost: %s", resp.Status)
	}
	if h.broker.ServerCertificate().SerialNumber.String() == serial {
		t.Fatal("POST /rotate with the token did not rotate")
	}
}
