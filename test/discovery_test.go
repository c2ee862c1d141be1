package test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/discovery"
)

// loopbackEndpoint is a manual connectivity entry for 127.0.0.1 at the MQTT listener's port (0).
func loopbackEndpoint(c *config.Config) {
	c.Connectivity.Endpoints = []config.Endpoint{{HostAddress: "127.0.0.1"}}
}

// discoveryClient is what a device's discovery client does: mutual TLS with its certificate, the core
// device CA from its core-ca.pem to verify the server, and the AWS endpoint name as TLS server name, as
// the Device SDKs send it (here dialled at 127.0.0.1, as an /etc/hosts entry would).
func (h *harness) discoveryClient(d *device, nextProtos ...string) *http.Client {
	h.t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(d.dir, auth.CoreCAFile))
	if err != nil {
		h.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		h.t.Fatal("no CA in core-ca.pem")
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{d.cert},
		RootCAs:      pool,
		ServerName:   h.cfg.AWSDiscoveryEndpoint(),
		NextProtos:   nextProtos,
	}
	tr := &http.Transport{TLSClientConfig: tc}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitFor}
}

// discoverAt calls the discovery API at addr for thing and returns the response and its body.
func discoverAt(c *http.Client, addr net.Addr, thing string) (*http.Response, []byte, error) {
	resp, err := c.Get("https://" + addr.String() + discovery.PathPrefix + thing)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// mustDiscover expects a 200 and decodes it.
func (h *harness) mustDiscover(d *device, thing string) discovery.Response {
	h.t.Helper()
	resp, body, err := discoverAt(h.discoveryClient(d), h.broker.DiscoveryAddr(), thing)
	if err != nil {
		h.t.Fatalf("discover %s: %v", thing, err)
	}
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("discover %s: HTTP %d %s", thing, resp.StatusCode, body)
	}
	var r discovery.Response
	if err := json.Unmarshal(body, &r); err != nil {
		h.t.Fatalf("discover %s: %v\n%s", thing, err, body)
	}
	return r
}

// TestDiscoveryEndToEnd: a device made as `device create` makes it discovers the core over mutual TLS,
// takes the CA and the first connectivity entry from the answer, and connects to the MQTT listener with
// them (client ID = thing name), as the SDKs' basic_discovery samples do; then publishes and receives.
func TestDiscoveryEndToEnd(t *testing.T) {
	h := startBroker(t, loopbackEndpoint)
	d := h.createDevice("sensor-1")
	answer := h.mustDiscover(d, "sensor-1")

	group := answer.GGGroups[0]
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(group.CAs[0])) {
		t.Fatalf("CAs[0] is not PEM: %q", group.CAs[0])
	}
	ep := group.Cores[0].Connectivity[0]
	brokerURL := "ssl://" + net.JoinHostPort(ep.HostAddress, strconv.Itoa(ep.PortNumber))
	if got := fmt.Sprint(ep.PortNumber); !strings.HasSuffix(h.addr(), ":"+got) {
		t.Fatalf("connectivity port %d, MQTT listener %s", ep.PortNumber, h.addr())
	}
	opts := pahov3.NewClientOptions().AddBroker(brokerURL).SetClientID(d.name).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(waitFor).SetCleanSession(true).
		SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{d.cert}, ServerName: ep.HostAddress, MinVersion: tls.VersionTLS12})
	c := pahov3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect to %s with the discovered CA: %v", brokerURL, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	got := subscribeV3(t, c, "sensor-1/#", 1)
	publishV3(t, c, "sensor-1/hello", 1, false, "from discovery")
	expectMessage(t, got, "sensor-1/hello from discovery")
	h.record(t, "discovery answered", map[string]string{"thingName": "sensor-1", "status": "Success", "sourceIp": "127.0.0.1"})
}

// fakeInterfaces stands in for the machine's network interfaces; set changes them.
type fakeInterfaces struct {
	mu    sync.Mutex
	addrs []discovery.InterfaceAddr
}

func (f *fakeInterfaces) set(ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = nil
	for _, ip := range ips {
		f.addrs = append(f.addrs, discovery.InterfaceAddr{Interface: "eth0", Up: true, IP: netip.MustParseAddr(ip)})
	}
}

func (f *fakeInterfaces) list() ([]discovery.InterfaceAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), nil
}

// TestDiscoveryResponseShape checks the answer field by field against AWS' documented example
// (greengrass-v2/greengrass-discover-api.md): key names and nesting exactly, the group ID, the core's
// thing ARN, each connectivity entry (manual ones first, then detected ones as the IP detector writes
// them), and the core device CA. The same addresses are the server certificates' names.
func TestDiscoveryResponseShape(t *testing.T) {
	ifs := &fakeInterfaces{}
	ifs.set("127.0.0.1", "192.0.2.10", "169.254.3.4") // loopback and link-local are filtered out by default
	h := startBroker(t, func(c *config.Config) {
		c.Core = config.Core{ThingName: "LabCore", Region: "eu-west-1", AccountID: "210987654321"}
		c.Connectivity.Endpoints = []config.Endpoint{
			{ID: "gateway", HostAddress: "gateway.local", PortNumber: 18883, Metadata: "office LAN"},
			{HostAddress: "127.0.0.1"},
		}
		c.Connectivity.DetectIPv4Addresses = true
		c.Connectivity.IPDetector.DefaultPort = 0
	}, broker.WithInterfaceAddrs(ifs.list))
	d := h.createDevice("sensor-1")
	resp, body, err := discoverAt(h.discoveryClient(d), h.broker.DiscoveryAddr(), "sensor-1")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("discover: %v %v %s", err, resp, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	keys(t, "document", doc, "GGGroups")
	groups := doc["GGGroups"].([]any)
	if len(groups) != 1 {
		t.Fatalf("%d groups, want 1 (in V2 each core device is its own group)", len(groups))
	}
	group := groups[0].(map[string]any)
	keys(t, "GGGroups[0]", group, "GGGroupId", "Cores", "CAs")
	if got := group["GGGroupId"]; got != "greengrassV2-coreDevice-LabCore" {
		t.Errorf("GGGroupId %q", got)
	}
	cores := group["Cores"].([]any)
	if len(cores) != 1 {
		t.Fatalf("%d cores, want 1", len(cores))
	}
	core := cores[0].(map[string]any)
	keys(t, "Cores[0]", core, "thingArn", "Connectivity")
	if got := core["thingArn"]; got != "arn:aws:iot:eu-west-1:210987654321:thing/LabCore" {
		t.Errorf("thingArn %q", got)
	}
	_, portStr, _ := net.SplitHostPort(h.addr())
	mqttPort, _ := strconv.Atoi(portStr)
	want := []map[string]any{
		{"Id": "gateway", "HostAddress": "gateway.local", "PortNumber": float64(18883), "Metadata": "office LAN"},
		{"Id": "127.0.0.1", "HostAddress": "127.0.0.1", "PortNumber": float64(mqttPort), "Metadata": ""},
		{"Id": "192.0.2.10", "HostAddress": "192.0.2.10", "PortNumber": float64(mqttPort), "Metadata": ""},
	}
	conn := core["Connectivity"].([]any)
	if len(conn) != len(want) {
		t.Fatalf("Connectivity %v, want %v", conn, want)
	}
	for i, e := range conn {
		entry := e.(map[string]any)
		keys(t, fmt.Sprintf("Connectivity[%d]", i), entry, "Id", "HostAddress", "PortNumber", "Metadata")
		for k, v := range want[i] {
			if entry[k] != v {
				t.Errorf("Connectivity[%d].%s = %#v, want %#v", i, k, entry[k], v)
			}
		}
	}
	cas := group["CAs"].([]any)
	corePEM := string(h.broker.State().CoreCA.CertPEM())
	if len(cas) != 1 || cas[0] != corePEM {
		t.Errorf("CAs %q, want [core CA PEM %q]", cas, corePEM)
	}
	if file, _ := os.ReadFile(filepath.Join(d.dir, auth.CoreCAFile)); string(file) != corePEM {
		t.Error("CAs[0] differs from the device's core-ca.pem")
	}

	// One source of truth: every address discovery hands out is a name of both server certificates.
	for name, leaf := range map[string]*x509.Certificate{"MQTT": h.broker.ServerCertificate(), "discovery": h.broker.DiscoveryCertificate()} {
		for _, host := range []string{"gateway.local", "127.0.0.1", "192.0.2.10", "localhost"} {
			if err := leaf.VerifyHostname(host); err != nil {
				t.Errorf("%s server certificate: %v", name, err)
			}
		}
		if err := leaf.VerifyHostname("169.254.3.4"); err == nil {
			t.Errorf("%s server certificate carries the filtered link-local address", name)
		}
	}
	if err := h.broker.DiscoveryCertificate().VerifyHostname("greengrass-ats.iot.eu-west-1.amazonaws.com"); err != nil {
		t.Errorf("discovery certificate lacks the AWS endpoint name: %v", err)
	}
	if err := h.broker.ServerCertificate().VerifyHostname("greengrass-ats.iot.eu-west-1.amazonaws.com"); err == nil {
		t.Error("the MQTT certificate carries the discovery endpoint name")
	}
}

// keys checks that m has exactly these keys.
func keys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s has keys %v, want exactly %v", what, got, want)
	}
}

// TestDiscoveryFollowsAddressChange: when IP detection sees a new address, both server certificates are
// re-issued with it (hot: a connected client stays connected) and discovery answers with it.
func TestDiscoveryFollowsAddressChange(t *testing.T) {
	ifs := &fakeInterfaces{}
	ifs.set("192.0.2.10")
	h := startBroker(t, func(c *config.Config) {
		c.Connectivity.DetectIPv4Addresses = true
		c.Connectivity.IPDetector.DefaultPort = 0
	}, broker.WithInterfaceAddrs(ifs.list))
	d := h.createDevice("sensor-1")
	if got := h.mustDiscover(d, "sensor-1").GGGroups[0].Cores[0].Connectivity; len(got) != 1 || got[0].HostAddress != "192.0.2.10" {
		t.Fatalf("connectivity before the change: %+v", got)
	}
	c := h.mustConnectV3(d)
	msgs := subscribeV3(t, c, "sensor-1/#", 1)
	oldMQTT, oldDisc := h.broker.ServerCertificate(), h.broker.DiscoveryCertificate()

	ifs.set("192.0.2.20")
	if err := h.broker.RefreshConnectivity(); err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2]*x509.Certificate{"MQTT": {oldMQTT, h.broker.ServerCertificate()}, "discovery": {oldDisc, h.broker.DiscoveryCertificate()}} {
		old, cur := pair[0], pair[1]
		if cur.SerialNumber.Cmp(old.SerialNumber) == 0 {
			t.Errorf("%s certificate not re-issued", name)
		}
		if err := cur.VerifyHostname("192.0.2.20"); err != nil {
			t.Errorf("%s certificate: %v", name, err)
		}
		if err := cur.VerifyHostname("192.0.2.10"); err == nil {
			t.Errorf("%s certificate still names the old address", name)
		}
	}
	h.record(t, "server certificate issued", map[string]string{"reason": certs.ReasonSANChange})
	h.record(t, "discovery server certificate issued", map[string]string{"reason": certs.ReasonSANChange})
	if got := h.mustDiscover(d, "sensor-1").GGGroups[0].Cores[0].Connectivity; len(got) != 1 || got[0].HostAddress != "192.0.2.20" || got[0].ID != "192.0.2.20" {
		t.Fatalf("connectivity after the change: %+v", got)
	}
	// A device dialling the new address verifies the new certificate.
	conn, err := tls.Dial("tcp", h.addr(), &tls.Config{RootCAs: h.broker.State().CoreCA.Pool(), Certificates: []tls.Certificate{d.cert}, ServerName: "192.0.2.20"})
	if err != nil {
		t.Fatalf("TLS to the MQTT listener as 192.0.2.20: %v", err)
	}
	conn.Close()
	// Hot: the client connected before the change is still connected.
	publishV3(t, c, "sensor-1/after", 1, false, "still here")
	expectMessage(t, msgs, "sensor-1/after still here")
}

// denyThing is a discovery Authorizer that denies one thing and records what it was asked.
type denyThing struct {
	thing string
	mu    sync.Mutex
	asked []string
}

func (a *denyThing) Discover(cert *auth.Certificate, leaf *x509.Certificate, thing string, ip netip.Addr) (bool, string) {
	a.mu.Lock()
	a.asked = append(a.asked, fmt.Sprintf("%s %s %s %v", thing, cert.ID, ip, certs.Fingerprint(leaf) == cert.ID))
	a.mu.Unlock()
	if thing == a.thing {
		return false, "no statement allows greengrass:Discover on thing/" + thing
	}
	return true, ""
}

// TestDiscoveryRefusals: 403 when the Authorizer denies greengrass:Discover, 404 with AWS' message for
// an unknown thing, a thing the certificate is not attached to, a thing not associated with the core,
// and a core without connectivity information (greengrass-v2/troubleshooting-client-devices.md).
func TestDiscoveryRefusals(t *testing.T) {
	authz := &denyThing{thing: "sensor-2"}
	h := startBroker(t, func(c *config.Config) {
		loopbackEndpoint(c)
		c.Discovery.ClientDevices = []string{"sensor-*"}
	}, broker.WithDiscoveryAuthorizer(authz))
	s1, s2, a1 := h.createDevice("sensor-1"), h.createDevice("sensor-2"), h.createDevice("actuator-1")
	const notFound = `{"errorMessage":"The thing provided for discovery was not found"}`
	cases := []struct {
		name   string
		dev    *device
		thing  string
		status int
		reason string
	}{
		{"allowed", s1, "sensor-1", 200, ""},
		{"denied by the authorizer", s2, "sensor-2", 403, discovery.ReasonNotAuthorized},
		{"unknown thing", s1, "sensor-9", 404, discovery.ReasonThingNotFound},
		{"thing not attached to the certificate", s1, "actuator-1", 404, discovery.ReasonThingNotAttached},
		{"thing not associated with the core", a1, "actuator-1", 404, discovery.ReasonThingNotAssociate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := discoverAt(h.discoveryClient(tc.dev), h.broker.DiscoveryAddr(), tc.thing)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			switch tc.status {
			case 404:
				if string(body) != notFound {
					t.Errorf("body %s, want %s", body, notFound)
				}
			case 403:
				var doc map[string]any
				if err := json.Unmarshal(body, &doc); err != nil {
					t.Fatal(err)
				}
				keys(t, "403 body", doc, "message", "traceId")
				if doc["message"] != nil || doc["traceId"] == "" {
					t.Errorf("403 body %s, want AWS' {\"message\":null,\"traceId\":...}", body)
				}
				h.record(t, "discovery refused", map[string]string{"traceId": doc["traceId"].(string), "reason": tc.reason})
			}
			if tc.reason != "" {
				h.record(t, "discovery refused", map[string]string{"thingName": tc.thing, "reason": tc.reason, "principalId": tc.dev.certID})
			}
		})
	}
	authz.mu.Lock()
	defer authz.mu.Unlock()
	if want := "sensor-1 " + s1.certID + " 127.0.0.1 true"; authz.asked[0] != want {
		t.Errorf("the Authorizer was asked %q, want %q", authz.asked[0], want)
	}

	// A core without connectivity information: 404 too.
	bare := startBroker(t, nil)
	d := bare.createDevice("sensor-1")
	resp, body, err := discoverAt(bare.discoveryClient(d), bare.broker.DiscoveryAddr(), "sensor-1")
	if err != nil || resp.StatusCode != 404 || string(body) != notFound {
		t.Fatalf("no connectivity: %v %v %s", err, resp, body)
	}
	bare.record(t, "discovery refused", map[string]string{"reason": discovery.ReasonNoConnectivity})
}

// TestDiscoveryTLSRefusal: a certificate the MQTT listener would refuse fails the discovery handshake
// (no HTTP answer at all, as AWS closes the connection), with a log record that says why; so does no
// certificate. A certificate revoked while its connection is open is refused at the next request.
func TestDiscoveryTLSRefusal(t *testing.T) {
	h := startBroker(t, loopbackEndpoint)
	st := h.broker.State()
	otherCA, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "someone else's CA"})
	if err != nil {
		t.Fatal(err)
	}
	revoked, inactive := h.createDevice("revoked-1"), h.createDevice("inactive-1")
	if _, err := st.Registry.SetStatus("revoked-1", auth.StatusRevoked); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Registry.SetStatus("inactive-1", auth.StatusInactive); err != nil {
		t.Fatal(err)
	}
	unregistered := issueOdd(t, st.DeviceCA, "stranger", nil)
	unregistered.dir = revoked.dir // for core-ca.pem
	untrusted := issueOdd(t, otherCA, "stranger", nil)
	untrusted.dir = revoked.dir
	cases := []struct {
		name   string
		dev    *device
		reason string
	}{
		{"unregistered", unregistered, auth.ReasonNotRegistered},
		{"untrusted", untrusted, auth.ReasonUntrustedCertificate},
		{"revoked", revoked, auth.ReasonRevoked},
		{"inactive", inactive, auth.ReasonInactive},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := discoverAt(h.discoveryClient(tc.dev), h.broker.DiscoveryAddr(), tc.dev.name)
			if err == nil {
				t.Fatalf("HTTP %d %s, want a TLS refusal", resp.StatusCode, body)
			}
			h.record(t, "discovery TLS handshake refused", map[string]string{"reason": tc.reason, "principalId": tc.dev.certID, "sourceIp": "127.0.0.1"})
		})
	}
	t.Run("no certificate", func(t *testing.T) {
		c := &http.Client{Timeout: waitFor, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: st.CoreCA.Pool(), ServerName: "localhost"}}}
		if resp, _, err := discoverAt(c, h.broker.DiscoveryAddr(), "sensor-1"); err == nil {
			t.Fatalf("HTTP %d without a client certificate", resp.StatusCode)
		}
	})
	t.Run("revoked while connected", func(t *testing.T) {
		d := h.createDevice("sensor-1")
		c := h.discoveryClient(d) // keeps its connection alive between requests
		if resp, _, err := discoverAt(c, h.broker.DiscoveryAddr(), "sensor-1"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("before the revocation: %v %v", err, resp)
		}
		if _, err := st.Registry.SetStatus("sensor-1", auth.StatusRevoked); err != nil {
			t.Fatal(err)
		}
		if resp, body, err := discoverAt(c, h.broker.DiscoveryAddr(), "sensor-1"); err == nil {
			t.Fatalf("after the revocation: HTTP %d %s", resp.StatusCode, body)
		}
		// The kept-alive connection is closed at the request (a new one fails its handshake).
		h.record(t, "discovery refused", map[string]string{"reason": auth.ReasonRevoked, "principalId": d.certID})
	})
}

// TestDiscoveryALPN: the ALPN listener (port 443 in production) negotiates x-amzn-http-ca, as the AWS
// IoT Device SDKs require there; the main listener accepts that ALPN and plain HTTP/1.1 clients too.
func TestDiscoveryALPN(t *testing.T) {
	h := startBroker(t, func(c *config.Config) {
		loopbackEndpoint(c)
		c.Discovery.ALPNListen = "127.0.0.1:0"
	})
	d := h.createDevice("sensor-1")
	cases := []struct {
		name       string
		addr       net.Addr
		offer      []string
		negotiated string
	}{
		{"ALPN listener", h.broker.DiscoveryALPNAddr(), []string{discovery.ALPNProtocol}, discovery.ALPNProtocol},
		{"main listener with ALPN", h.broker.DiscoveryAddr(), []string{discovery.ALPNProtocol}, discovery.ALPNProtocol},
		{"main listener without ALPN", h.broker.DiscoveryAddr(), nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := discoverAt(h.discoveryClient(d, tc.offer...), tc.addr, "sensor-1")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v %s", err, resp, body)
			}
			if got := resp.TLS.NegotiatedProtocol; got != tc.negotiated {
				t.Errorf("negotiated %q, want %q", got, tc.negotiated)
			}
		})
	}
	t.Run("ALPN listener refuses other protocols", func(t *testing.T) {
		if resp, _, err := discoverAt(h.discoveryClient(d, "h2"), h.broker.DiscoveryALPNAddr(), "sensor-1"); err == nil {
			t.Fatalf("HTTP %d with ALPN h2 only", resp.StatusCode)
		}
	})
}

// TestDiscoveryCertificateRotation: the discovery certificate is signed by the core device CA, persisted
// next to the MQTT one (key 0600), and a forced rotation (SIGUSR1, POST /rotate) re-issues both.
func TestDiscoveryCertificateRotation(t *testing.T) {
	h := startBroker(t, loopbackEndpoint)
	st := h.broker.State()
	leaf := h.broker.DiscoveryCertificate()
	if err := leaf.CheckSignatureFrom(st.CoreCA.Cert); err != nil {
		t.Fatalf("discovery certificate not signed by the core CA: %v", err)
	}
	if got := fileMode(t, filepath.Join(st.Dir, "server", "discovery.key")); got != 0o600 {
		t.Errorf("discovery.key mode %o", got)
	}
	saved, err := os.ReadFile(filepath.Join(st.Dir, "server", "discovery.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if parsed, err := certs.ParseCertsPEM(saved); err != nil || !parsed[0].Equal(leaf) {
		t.Fatalf("discovery.pem does not hold the served certificate: %v", err)
	}
	oldMQTT := h.broker.ServerCertificate()
	if err := h.broker.Rotate("forced"); err != nil {
		t.Fatal(err)
	}
	if h.broker.DiscoveryCertificate().Equal(leaf) || h.broker.ServerCertificate().Equal(oldMQTT) {
		t.Fatal("forced rotation did not re-issue both certificates")
	}
	h.record(t, "discovery server certificate issued", map[string]string{"reason": certs.ReasonForced})
	d := h.createDevice("sensor-1")
	h.mustDiscover(d, "sensor-1") // the next handshake gets the new certificate, which verifies
}

// TestBinaryDiscoverCommand: `ggbroker discover` prints what a device gets, indented, and exits non-zero
// with the HTTP status and AWS' message on a refusal.
func TestBinaryDiscoverCommand(t *testing.T) {
	h := startBroker(t, func(c *config.Config) {
		loopbackEndpoint(c)
		c.Discovery.ALPNListen = "127.0.0.1:0"
	})
	d := h.createDevice("sensor-1")
	files := []string{"--cert", filepath.Join(d.dir, auth.DeviceCertFile), "--key", filepath.Join(d.dir, auth.DeviceKeyFile),
		"--ca", filepath.Join(d.dir, auth.CoreCAFile)}
	dir := t.TempDir()
	out := run(t, dir, append([]string{"discover", "sensor-1", "--endpoint", h.broker.DiscoveryAddr().String()}, files...)...)
	var r discovery.Response
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not the JSON answer: %v\n%s", err, out)
	}
	if !strings.Contains(out, "\n  \"GGGroups\": [") {
		t.Errorf("output not indented:\n%s", out)
	}
	if r.GGGroups[0].GGGroupID != "greengrassV2-coreDevice-MyGreengrassCore" || r.GGGroups[0].Cores[0].Connectivity[0].HostAddress != "127.0.0.1" {
		t.Errorf("answer %+v", r)
	}

	// As the SDKs call port 443: ALPN, and the AWS endpoint name as server name.
	out = run(t, dir, append([]string{"discover", "sensor-1", "--endpoint", h.broker.DiscoveryALPNAddr().String(), "--alpn",
		"--server-name", h.cfg.AWSDiscoveryEndpoint()}, files...)...)
	if !strings.Contains(out, "greengrassV2-coreDevice-MyGreengrassCore") {
		t.Errorf("ALPN answer:\n%s", out)
	}

	cmd := exec.Command(ggbrokerBinary(t), append([]string{"discover", "sensor-9", "--endpoint", h.broker.DiscoveryAddr().String()}, files...)...)
	cmd.Dir = dir
	combined, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("discover of an unknown thing exited 0:\n%s", combined)
	}
	for _, want := range []string{"404", discovery.NotFoundMessage} {
		if !strings.Contains(string(combined), want) {
			t.Errorf("output does not say %q:\n%s", want, combined)
		}
	}
	// Default endpoint: localhost and the port of discovery.listen.
	_, port, _ := net.SplitHostPort(h.broker.DiscoveryAddr().String())
	cmd = exec.Command(ggbrokerBinary(t), append([]string{"discover", "sensor-1"}, files...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GGBROKER_DISCOVERY_LISTEN=127.0.0.1:"+port)
	if combined, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(combined), "GGGroups") {
		t.Fatalf("discover with the default endpoint: %v\n%s", err, combined)
	}
}

// TestDiscoveryUsesAttachedPolicies: greengrass:Discover is decided by the AWS IoT policies attached to
// the device's certificate; without an Allow, discovery answers 403, and attaching one opens it, with
// no restart.
func TestDiscoveryUsesAttachedPolicies(t *testing.T) {
	h := startBroker(t, loopbackEndpoint)
	h.writePolicy("no-discovery", `{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}`)
	d := h.createDevice("gg-client", "no-discovery")
	c := h.discoveryClient(d)
	resp, body, err := discoverAt(c, h.broker.DiscoveryAddr(), d.name)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("discover without greengrass:Discover: %d %s, want 403", resp.StatusCode, body)
	}
	if _, err := h.broker.State().Registry.AttachPolicy(d.name, h.broker.State().DefaultPolicy); err != nil {
		t.Fatal(err)
	}
	resp, body, err = discoverAt(c, h.broker.DiscoveryAddr(), d.name)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("discover with the default device policy attached: %v %d %s", err, resp.StatusCode, body)
	}
}
