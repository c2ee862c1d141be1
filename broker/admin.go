package broker

import (
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ggbroker/ggbroker/state"
	"go.uber.org/zap"
)

// adminHandler serves the operator endpoints. The listener only binds loopback addresses (config
// validation refuses others) and every request is checked again here, with its Host and Origin (a web
// page the operator has open must not reach it: DNS rebinding, cross-site POSTs). POST /rotate changes
// state and needs the state directory's admin token; the read-only endpoints do not, so that health
// checks and Prometheus need no secret.
func (b *Broker) adminHandler() http.Handler {
	token := b.adminToken
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, checks := b.readiness(time.Now())
		if !ready {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(map[string]any{"ready": false, "checks": checks})
			return
		}
		writeJSON(w, map[string]any{"ready": true, "checks": checks})
	})
	mux.Handle("GET /metrics", b.metrics.handler())
	mux.HandleFunc("POST /rotate", func(w http.ResponseWriter, r *http.Request) {
		if !bearer(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ggbroker admin"`)
			http.Error(w, "POST /rotate needs the admin token: Authorization: Bearer <contents of "+state.AdminTokenFile+" in the state directory>", http.StatusUnauthorized)
			return
		}
		if err := b.Rotate("forced"); err != nil {
			b.log.Error("forced rotation failed", zap.Error(err))
			http.Error(w, "rotation failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		leaf := b.rotator.Current()
		writeJSON(w, map[string]any{
			"serial":   leaf.SerialNumber.Text(16),
			"notAfter": leaf.NotAfter.UTC().Format(time.RFC3339),
		})
	})
	return loopbackOnly(mux)
}

// bearer reports whether the request carries the token, compared in constant time.
func bearer(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}

// localHost reports whether a Host header or an Origin's host names this machine's loopback.
func localHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readyMargin is how long the CA and the server certificate must still be valid for /readyz: less
// means a rotation is overdue (it starts a day before expiry) or the CA needs replacing.
const readyMargin = time.Hour

// readiness is /readyz: the listeners are serving (and not shutting down), and the core device CA and
// the server certificate are valid for more than readyMargin. checks says why not, one entry each.
func (b *Broker) readiness(now time.Time) (bool, map[string]string) {
	checks := map[string]string{}
	ok := true
	fail := func(k, why string) { checks[k], ok = why, false }
	select {
	case <-b.ready:
		checks["listeners"] = "serving"
		if b.stopping.Load() {
			fail("listeners", "shutting down")
		}
	default:
		fail("listeners", "not serving yet")
	}
	valid := func(k string, c *x509.Certificate) {
		switch {
		case c == nil:
			fail(k, "none")
		case now.Before(c.NotBefore):
			fail(k, "not valid before "+c.NotBefore.UTC().Format(time.RFC3339))
		case c.NotAfter.Sub(now) <= readyMargin:
			fail(k, "expires "+c.NotAfter.UTC().Format(time.RFC3339)+", less than "+readyMargin.String()+" from now")
		default:
			checks[k] = "valid until " + c.NotAfter.UTC().Format(time.RFC3339)
		}
	}
	valid("coreCA", b.state.CoreCA.Cert)
	valid("serverCertificate", b.rotator.Current())
	return ok, checks
}

func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "admin endpoints answer loopback clients only", http.StatusForbidden)
			return
		}
		if !localHost(r.Host) {
			http.Error(w, "admin endpoints answer requests for localhost only (Host "+r.Host+")", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || !localHost(u.Host) {
				http.Error(w, "admin endpoints refuse cross-origin requests (Origin "+o+")", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
