package advisor

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/advisor/refdevice"
	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
)

// scopedPolicy is a policy that passes Security_Device_Policies.
const scopedPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/ref/*"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/ref/*"}]}`

// fixture is a state for one run: a core CA the device trusts, a registered thing with its
// certificate and policy, and an endpoint listener.
type fixture struct {
	core     *certs.Authority
	devCA    *certs.Authority
	registry *auth.Registry
	policies string
	ln       net.Listener
	cert     tls.Certificate
}

func newFixture(t *testing.T, policyDoc string) *fixture {
	t.Helper()
	dir := t.TempDir()
	core, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "test core CA"})
	if err != nil {
		t.Fatal(err)
	}
	devCA, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "test device CA"})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := auth.OpenRegistry(filepath.Join(dir, "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	pdir := filepath.Join(dir, "policies")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, "dut.json"), []byte(policyDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := auth.CreateDevice(reg, devCA, auth.NewDevice{Thing: auth.Thing{Name: "dut"}, Policies: []string{"dut"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(dev.CertPEM, dev.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fixture{core: core, devCA: devCA, registry: reg, policies: pdir, ln: ln, cert: cert}
}

// options are fast timings: every wait is configured short, none is slept for a real default.
func (f *fixture) options() Options {
	return Options{
		Thing: "dut", Registry: f.registry, CoreCA: f.core, PolicyDir: f.policies, Listener: f.ln,
		Grace: 100 * time.Millisecond, Timeout: 4 * time.Second, HandshakeTimeout: 2 * time.Second,
		StableConnection: 300 * time.Millisecond, Settle: 300 * time.Millisecond,
	}
}

// start runs a reference device against the fixture's endpoint until the test ends.
func (f *fixture) start(t *testing.T, b refdevice.Behaviour) *refdevice.Device {
	t.Helper()
	d := &refdevice.Device{Addr: f.ln.Addr().String(), ServerName: "localhost", RootCAs: f.core.Pool(), Cert: f.cert, ClientID: "dut", B: b}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

func x509VerifyOptions(f *fixture, name string, now time.Time) x509.VerifyOptions {
	return x509.VerifyOptions{DNSName: name, Roots: f.core.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}
