package broker

import (
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// adminHandler serves the operator endpoints. The listener only binds loopback addresses (config
// validation refuses others) and every request is checked again here, because POST /rotate changes state.
func (b *Broker) adminHandler() http.Handler {
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
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
