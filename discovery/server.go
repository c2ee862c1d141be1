// Package discovery serves the Greengrass discovery API offline: GET /greengrass/discover/thing/{thingName}
// over mutual TLS, answered in AWS' shape with this core's connectivity information and its core device
// CA (greengrass-v2/greengrass-discover-api.md). It also owns that connectivity information (manual
// entries and IP detection with the flags of Greengrass' IP detector), which the broker uses for its
// server certificates' names too, so that what discovery tells a device and what the certificate
// proves never disagree.
package discovery

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/internal/ids"
)

// ALPNProtocol is the ALPN protocol name the AWS IoT Device SDKs offer when they call discovery on
// port 443 (greengrass-v2/greengrass-discover-api.md, "Request").
const ALPNProtocol = "x-amzn-http-ca"

// PathPrefix is the discovery API's path, followed by the thing name.
const PathPrefix = "/greengrass/discover/thing/"

// NotFoundMessage is AWS' 404 message (greengrass-v2/troubleshooting-client-devices.md): for a thing
// that does not exist, is not associated with the core, or whose core has no MQTT endpoint.
const NotFoundMessage = "The thing provided for discovery was not found"

// Refusal reasons in the discovery log records.
const (
	ReasonNotAuthorized     = "NOT_AUTHORIZED"
	ReasonThingNotFound     = "THING_NOT_FOUND"
	ReasonThingNotAttached  = "THING_NOT_ATTACHED_TO_CERTIFICATE"
	ReasonThingNotAssociate = "THING_NOT_ASSOCIATED_WITH_CORE"
	ReasonNoConnectivity    = "NO_CONNECTIVITY_INFO"
	// ReasonAssociationsUnavailable: the API's client-device associations could not be read (HTTP 500).
	ReasonAssociationsUnavailable = "ASSOCIATIONS_UNAVAILABLE"
)

// Authorizer decides whether a device may call greengrass:Discover for a thing. In AWS this is the
// device's IoT policy, on resource arn:aws:iot:REGION:ACCOUNT:thing/THING. reason is logged on deny.
type Authorizer interface {
	Discover(cert *auth.Certificate, leaf *x509.Certificate, thingName string, sourceIP netip.Addr) (allowed bool, reason string)
}

// AllowAll allows every authenticated device to discover: the default until policies are evaluated.
type AllowAll struct{}

// Discover allows.
func (AllowAll) Discover(*auth.Certificate, *x509.Certificate, string, netip.Addr) (bool, string) {
	return true, ""
}

// CoreDevice names the Greengrass core device this broker stands in for.
type CoreDevice struct {
	ThingName, Region, AccountID string
}

// ThingARN is the core device's thing ARN.
func (c CoreDevice) ThingARN() string {
	return ThingARN(c.Region, c.AccountID, c.ThingName)
}

// GroupID is the group ID discovery reports for the core: in Greengrass V2 each core device is its own
// group, greengrassV2-coreDevice-<thing name>.
func (c CoreDevice) GroupID() string { return "greengrassV2-coreDevice-" + c.ThingName }

// ThingARN formats a thing's ARN.
func ThingARN(region, account, thing string) string {
	return fmt.Sprintf("arn:aws:iot:%s:%s:thing/%s", region, account, thing)
}

// Response is the discover response document.
type Response struct {
	GGGroups []Group `json:"GGGroups"`
}

// Group is one Greengrass group; in V2, one core device.
type Group struct {
	GGGroupID string   `json:"GGGroupId"`
	Cores     []Core   `json:"Cores"`
	CAs       []string `json:"CAs"`
}

// Core is a core device and where to reach it.
type Core struct {
	ThingARN     string     `json:"thingArn"`
	Connectivity []Endpoint `json:"Connectivity"`
}

// Server answers discovery requests. Fields are set by the caller before Handler or TLSConfig is used.
type Server struct {
	Core          CoreDevice
	Registry      *auth.Registry
	Authenticator *auth.Authenticator
	CoreCA        func() *certs.Authority
	Connectivity  *Connectivity
	// ClientDevices are the things associated with the core by config: names, or patterns where *
	// matches any run of characters. Empty: none.
	ClientDevices []string
	// Associated, if set, reports whether a thing is associated with the core through the Greengrass
	// API (BatchAssociateClientDeviceWithCoreDevice); a thing is associated if either says so.
	Associated func(thing string) (bool, error)
	Authorizer Authorizer // nil: AllowAll
	Log        *zap.Logger
	// Device, if set, serves every other request on this listener (the device services' HTTPS APIs:
	// shadows, jobs), after the client certificate passed the same checks as for discovery; cert is its
	// registry record.
	Device func(w http.ResponseWriter, r *http.Request, cert *auth.Certificate)
}

// TLSConfig is the listener's TLS configuration: the server certificate from getCert, and a client
// certificate that must pass the same identity checks as on the MQTT listener (registered, ACTIVE,
// valid now), refused in the handshake otherwise (AWS closes the connection too: "Empty reply from
// server"). nextProtos are the ALPN protocols offered.
func (s *Server) TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), nextProtos []string) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequireAnyClientCert,
		GetCertificate: getCert,
		NextProtos:     nextProtos,
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// A per-connection config, so the refusal record can say which address was refused.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			var remote net.Addr
			if hello.Conn != nil {
				remote = hello.Conn.RemoteAddr()
			}
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if _, err := s.Authenticator.Certificate(cs.PeerCertificates); err != nil {
					s.refuseTLS(remote, cs.PeerCertificates, err)
					return err
				}
				return nil
			}
			return c, nil
		},
	}
}

func (s *Server) refuseTLS(remote net.Addr, chain []*x509.Certificate, err error) {
	ip, port := splitAddr(remote)
	fields := []zap.Field{zap.String("eventType", "Discover"), zap.String("status", "Failure"),
		zap.String("sourceIp", ip), zap.Int("sourcePort", port), zap.String("details", err.Error())}
	var r *auth.Refusal
	if errors.As(err, &r) {
		fields = append(fields, zap.String("reason", r.Reason))
	}
	if len(chain) > 0 {
		fields = append(fields, zap.String("principalId", certs.Fingerprint(chain[0])))
	}
	s.Log.Warn("discovery TLS handshake refused", fields...)
}

// Handler serves GET /greengrass/discover/thing/{thingName}.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathPrefix+"{thingName}", s.discover)
	if s.Device != nil {
		mux.HandleFunc("/", s.device)
	}
	return withTLSState(mux)
}

// HTTPServer is an http.Server for the discovery API, to Serve on NewListener(ln, s.TLSConfig(...)).
// timeout bounds the TLS handshake and the request headers.
func (s *Server) HTTPServer(timeout time.Duration, errorLog *log.Logger) *http.Server {
	return &http.Server{Handler: s.Handler(), ConnContext: ConnContext, ReadHeaderTimeout: timeout,
		IdleTimeout: time.Minute, ErrorLog: errorLog}
}

// device authenticates a request for the device services and hands it to Device.
func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "mutual TLS required", http.StatusBadRequest)
		return
	}
	rec, err := s.Authenticator.Certificate(r.TLS.PeerCertificates)
	if err != nil {
		ip, port := splitRemote(r.RemoteAddr)
		s.Log.Warn("device HTTPS request refused", zap.String("status", "Failure"), zap.String("sourceIp", ip.String()),
			zap.Int("sourcePort", port), zap.String("principalId", certs.Fingerprint(r.TLS.PeerCertificates[0])), zap.String("details", err.Error()))
		panic(http.ErrAbortHandler) // as for a refused handshake: a revoked certificate's keep-alive connection ends
	}
	s.Device(w, r, rec)
}

func (s *Server) discover(w http.ResponseWriter, r *http.Request) {
	thing := r.PathValue("thingName")
	ip, port := splitRemote(r.RemoteAddr)
	base := []zap.Field{zap.String("eventType", "Discover"), zap.String("thingName", thing),
		zap.String("sourceIp", ip.String()), zap.Int("sourcePort", port)}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "mutual TLS required", http.StatusBadRequest)
		return
	}
	leaf := r.TLS.PeerCertificates[0]
	base = append(base, zap.String("principalId", certs.Fingerprint(leaf)))
	// Checked again per request: a keep-alive connection outlives a revocation otherwise.
	rec, err := s.Authenticator.Certificate(r.TLS.PeerCertificates)
	if err != nil {
		fields := slices.Concat(base, []zap.Field{zap.String("status", "Failure"), zap.String("details", err.Error())})
		var ref *auth.Refusal
		if errors.As(err, &ref) {
			fields = append(fields, zap.String("reason", ref.Reason))
		}
		s.Log.Warn("discovery refused", fields...)
		panic(http.ErrAbortHandler) // close the connection without an answer, as for a refused handshake
	}
	fail := func(status int, reason, details string, more ...zap.Field) {
		s.Log.Warn("discovery refused", slices.Concat(base, []zap.Field{zap.String("status", "Failure"), zap.Int("httpStatus", status),
			zap.String("reason", reason), zap.String("details", details)}, more)...)
	}

	authz := s.Authorizer
	if authz == nil {
		authz = AllowAll{}
	}
	if ok, why := authz.Discover(rec, leaf, thing, ip); !ok {
		// AWS answers a denied greengrass:Discover with a null message and a trace ID
		// (troubleshooting-client-devices.md); the trace ID is in the log record with the reason.
		trace := ids.TraceID()
		fail(http.StatusForbidden, ReasonNotAuthorized, why, zap.String("traceId", trace))
		writeJSON(w, http.StatusForbidden, map[string]any{"message": nil, "traceId": trace})
		return
	}
	notFound := func(reason, details string) {
		fail(http.StatusNotFound, reason, details)
		writeJSON(w, http.StatusNotFound, map[string]string{"errorMessage": NotFoundMessage})
	}
	if _, ok, err := s.Registry.Thing(thing); err != nil || !ok {
		notFound(ReasonThingNotFound, fmt.Sprintf("no thing named %q is registered", thing))
		return
	}
	if !rec.AttachedTo(thing) {
		notFound(ReasonThingNotAttached, fmt.Sprintf("certificate %s is not attached to thing %q (attached: %s)", short(rec.ID), thing, strings.Join(rec.Things, ", ")))
		return
	}
	associated, err := s.associated(thing)
	if err != nil {
		fail(http.StatusInternalServerError, ReasonAssociationsUnavailable, err.Error())
		writeJSON(w, http.StatusInternalServerError, map[string]string{"errorMessage": "internal error"})
		return
	}
	if !associated {
		notFound(ReasonThingNotAssociate, fmt.Sprintf("thing %q is not associated with core device %q (discovery.clientDevices: %s; none through BatchAssociateClientDeviceWithCoreDevice)",
			thing, s.Core.ThingName, strings.Join(s.ClientDevices, ", ")))
		return
	}
	endpoints := s.Connectivity.Endpoints()
	if len(endpoints) == 0 {
		notFound(ReasonNoConnectivity, "the core device has no connectivity information: list connectivity.endpoints or turn IP detection on")
		return
	}
	resp := Response{GGGroups: []Group{{
		GGGroupID: s.Core.GroupID(),
		Cores:     []Core{{ThingARN: s.Core.ThingARN(), Connectivity: endpoints}},
		CAs:       []string{string(s.CoreCA().CertPEM())},
	}}}
	s.Log.Info("discovery answered", slices.Concat(base, []zap.Field{zap.String("status", "Success"), zap.Int("endpoints", len(endpoints))})...)
	writeJSON(w, http.StatusOK, resp)
}

// associated reports whether thing is associated with the core, by config or through the API.
func (s *Server) associated(thing string) (bool, error) {
	if MatchAny(s.ClientDevices, thing) {
		return true, nil
	}
	if s.Associated == nil {
		return false, nil
	}
	ok, err := s.Associated(thing)
	if err != nil {
		return false, fmt.Errorf("client device associations: %w", err)
	}
	return ok, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// MatchAny reports whether name matches one of the patterns, where * matches any run of characters
// (as the thing name wildcards of AWS IoT policies and Greengrass device groups: MyClientDevice*).
func MatchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if matchWildcard(p, name) {
			return true
		}
	}
	return false
}

func matchWildcard(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return strings.HasSuffix(name, last)
}

func splitRemote(addr string) (netip.Addr, int) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}, 0
	}
	return ap.Addr().Unmap(), int(ap.Port())
}

func splitAddr(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	ip, port := splitRemote(a.String())
	return ip.String(), port
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
