package awsapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// Router serves every AWS API on one listener: it verifies the SigV4 signature, then hands the
// request to the ServeMux of the signing name its credential scope names ("iot", "greengrass", ...),
// where services registered their routes. So one --endpoint-url serves every API, as the issue asks,
// and a request signed for one service can never reach another's routes.
type Router struct {
	verifier *Verifier
	log      *zap.Logger

	mu    sync.RWMutex
	muxes map[string]*http.ServeMux
}

// NewRouter returns a Router that accepts the given credentials, for scopes in the given regions
// (none: any region).
func NewRouter(creds []Credentials, regions []string, log *zap.Logger) *Router {
	rt := &Router{log: log, muxes: map[string]*http.ServeMux{}}
	keys := make(map[string]string, len(creds))
	for _, c := range creds {
		keys[c.AccessKeyID] = c.SecretAccessKey
	}
	rt.verifier = &Verifier{Keys: keys, Regions: regions, Services: rt.serves}
	return rt
}

// Verifier is the router's signature verifier (its clock can be set by tests).
func (rt *Router) Verifier() *Verifier { return rt.verifier }

// signingAliases are older signing names AWS still accepts for a service, mapped to the name its
// routes are registered under. botocore's AWS IoT model carried execute-api (API Gateway's name) as
// the control plane's signing name before it was changed to iot, so older boto3 and AWS CLI v1
// releases (Debian 12's python3-boto3 1.26 among them) sign CreateThing and the rest for
// execute-api, and AWS IoT Core answers them.
var signingAliases = map[string]string{"execute-api": "iot"}

// route is the signing name whose routes serve a scope's service name.
func route(service string) string {
	if to, ok := signingAliases[service]; ok {
		return to
	}
	return service
}

func (rt *Router) serves(name string) bool {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	_, ok := rt.muxes[route(name)]
	return ok
}

// Handle registers h for requests signed for signingName whose method and path match pattern (a
// net/http ServeMux pattern). Conflicting patterns are refused with an error, not a panic.
func (rt *Router) Handle(signingName, pattern string, h http.Handler) (err error) {
	if signingName == "" || strings.ContainsAny(signingName, "/ ") {
		return fmt.Errorf("API route %q: signing name %q is not a service's signing name", pattern, signingName)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	mux, ok := rt.muxes[signingName]
	if !ok {
		mux = http.NewServeMux()
		rt.muxes[signingName] = mux
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("API route %s %q: %v", signingName, pattern, p)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// Mux is the ServeMux of a signing name's routes, nil when none is registered.
func (rt *Router) Mux(signingName string) *http.ServeMux {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	return rt.muxes[signingName]
}

type scopeKey struct{}

// ScopeFrom is the verified credential scope of an API request, or nil.
func ScopeFrom(ctx context.Context) *Scope {
	s, _ := ctx.Value(scopeKey{}).(*Scope)
	return s
}

// ServeHTTP verifies the request and routes it. Nothing reaches a service unless the signature
// verified, so a refused request changes nothing.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amzn-RequestId", requestID())
	scope, aerr := rt.verifier.Verify(r)
	if aerr != nil {
		ip, port, _ := net.SplitHostPort(r.RemoteAddr)
		rt.log.Info("API request refused", zap.String("eventType", "API"), zap.String("status", "Failure"),
			zap.String("reason", aerr.Type), zap.String("details", aerr.Message),
			zap.String("sourceIp", ip), zap.String("sourcePort", port),
			zap.String("method", r.Method), zap.String("path", r.URL.Path))
		WriteError(w, aerr.Status, aerr.Type, aerr.Message)
		return
	}
	rt.mu.RLock()
	mux := rt.muxes[route(scope.Service)]
	rt.mu.RUnlock()
	r = r.WithContext(context.WithValue(r.Context(), scopeKey{}, scope))
	if _, pattern := mux.Handler(r); pattern == "" {
		WriteError(w, http.StatusNotFound, ErrUnknownOperation, fmt.Sprintf("no %s operation is served at %s %s", route(scope.Service), r.Method, r.URL.Path))
		return
	}
	mux.ServeHTTP(w, r)
}
