package test

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/bridge"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
)

const mosquittoBin = "/usr/sbin/mosquitto"

// mosquitto is a Mosquitto broker with a mutual-TLS listener on 127.0.0.1, started by the test.
type mosquitto struct {
	t       testing.TB
	dir     string
	addr    string
	caPool  *x509.CertPool
	cmd     *exec.Cmd
	stopped chan struct{}
}

// startMosquitto writes a CA, a server certificate for localhost and a config, and starts Mosquitto.
func startMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	if _, err := os.Stat(mosquittoBin); err != nil {
		t.Skip("Mosquitto is not installed (" + mosquittoBin + "; apt-get install mosquitto, as .ci/run does): skipping the bridge test with Mosquitto as the upstream")
	}
	ca, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "upstream test CA"})
	if err != nil {
		t.Fatal(err)
	}
	m := startMosquittoWith(t, t.TempDir(), ca, "")
	// The core device's certificate and a cloud application's, from the same CA (Mosquitto trusts its cafile).
	for _, name := range []string{"gateway-1", "cloud-app"} {
		certPEM, keyPEM, _, err := ca.IssueClient(name, certs.ECDSAP256, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(m.dir, name+".pem"), certPEM)
		writeFile(t, filepath.Join(m.dir, name+".key"), keyPEM)
	}
	return m
}

// startMosquittoWith starts Mosquitto in dir with a mutual-TLS listener on 127.0.0.1 whose server
// certificate and client CA are ca's, and the extra config lines.
func startMosquittoWith(t testing.TB, dir string, ca *certs.Authority, extra string) *mosquitto {
	t.Helper()
	srv, err := ca.IssueServer(certs.ServerCertRequest{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certs.EncodeKeyPEM(srv.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM())
	writeFile(t, filepath.Join(dir, "server.pem"), certs.EncodeCertsPEM(srv.Leaf))
	writeFile(t, filepath.Join(dir, "server.key"), keyPEM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	// user root: when started as root Mosquitto would otherwise switch to the mosquitto user, which
	// cannot read the test's 0600 files.
	conf := fmt.Sprintf(`user root
log_dest stderr
log_type error
log_type warning
log_type notice
listener %s 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
%s`, port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), extra)
	if extra == "" {
		conf = "persistence false\n" + conf
	}
	writeFile(t, filepath.Join(dir, "mosquitto.conf"), []byte(conf))
	m := &mosquitto{t: t, dir: dir, addr: addr, caPool: ca.Pool()}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs Mosquitto and waits until its listener accepts connections.
func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(mosquittoBin, "-c", filepath.Join(m.dir, "mosquitto.conf"))
	out := &lockedBuffer{}
	m.cmd.Stdout, m.cmd.Stderr = out, out
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.stopped = make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(m.stopped) }()
	deadline := time.Now().Add(waitFor)
	for {
		c, err := net.Dial("tcp", m.addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.stopped:
			m.t.Fatalf("mosquitto exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto not listening on %s: %s", m.addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the Mosquitto process this test started.
func (m *mosquitto) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.stopped
	m.cmd = nil
}

// identity is a client's files at Mosquitto.
func (m *mosquitto) identity(name string) coreIdentity {
	return coreIdentity{thing: name, cert: filepath.Join(m.dir, name+".pem"), key: filepath.Join(m.dir, name+".key"), ca: filepath.Join(m.dir, "ca.pem")}
}

// connect connects an MQTT 3.1.1 client to Mosquitto with the named identity.
func (m *mosquitto) connect(name string) pahov3.Client {
	m.t.Helper()
	id := m.identity(name)
	pair, err := tls.LoadX509KeyPair(id.cert, id.key)
	if err != nil {
		m.t.Fatal(err)
	}
	return connectFiles(m.t, m.addr, name, &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: m.caPool, ServerName: "localhost"}, true)
}

// TestBridgeMosquittoUpstream: any MQTT broker can be the upstream. Mosquitto with mutual TLS gets the
// devices' messages under the gateway's prefix and sends commands down; after Mosquitto restarts
// (without persistence: the bridge's session is gone) the bridge subscribes again by itself.
func TestBridgeMosquittoUpstream(t *testing.T) {
	m := startMosquitto(t)
	local := startBroker(t, func(c *config.Config) {
		setCore(c, upstreamEndpoint(m.addr), m.identity("gateway-1"))
		setBridge(c, map[string]any{"mqttTopicMapping": map[string]any{
			"Up":   mapping("telemetry/#", bridge.LocalMqtt, bridge.IotCore, "site/gw1/"),
			"Down": mapping("site/gw1/cmd/+", bridge.IotCore, bridge.LocalMqtt, "from-cloud/"),
		}})
	})
	local.record(t, "upstream connected", map[string]string{"protocol": "MQTT 5", "clientId": "gateway-1"})
	cloud := m.connect("cloud-app")
	up := collectV3(t, cloud, "site/#")
	dev := local.mustConnectV3(local.createDevice("d1"))
	down := collectV3(t, dev, "from-cloud/#")

	publishV3(t, dev, "telemetry/d1/temp", 1, false, "21.5")
	if msg := next(t, up, "telemetry at Mosquitto"); msg.String() != "site/gw1/telemetry/d1/temp 21.5" || msg.qos != 1 {
		t.Fatalf("Mosquitto got %+v", msg)
	}
	publishV3(t, cloud, "site/gw1/cmd/reboot", 1, false, "now")
	if msg := next(t, down, "the command locally"); msg.String() != "from-cloud/site/gw1/cmd/reboot now" {
		t.Fatalf("device got %v", msg)
	}

	m.stop()
	local.record(t, "upstream disconnected", nil)
	publishV3(t, dev, "telemetry/d1/temp", 1, false, "22.0") // spooled
	m.start()
	deadline := time.Now().Add(waitFor)
	// "upstream connected" is logged once the subscriptions are back.
	for local.logs.FilterMessage("upstream connected").Len() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the bridge did not reconnect to Mosquitto")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cloud = m.connect("cloud-app")
	publishV3(t, cloud, "site/gw1/cmd/ping", 1, false, "again")
	if msg := next(t, down, "a command after Mosquitto restarted"); msg.String() != "from-cloud/site/gw1/cmd/ping again" {
		t.Fatalf("device got %v", msg)
	}
	local.waitMetric("ggbroker_bridge_spool_messages", func(v float64) bool { return v == 0 })
}
