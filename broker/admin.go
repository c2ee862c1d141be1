package broker

import (
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
