package test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
)

func TestRegisteredDevicePublishesAndReceives(t *testing.T) {
	h := startBroker(t, nil)
	sensor := h.createDevice("sensor-1")
	app := h.createDevice("app-1")

	sub := h.mustConnectV3(app)
	got := subscribeV3(t, sub, "sensor-1/#", 1)
	pub := h.mustConnectV3(sensor)
	publishV3(t, pub, "sensor-1/temperature", 1, false, "21.5")
	expectMessage(t, got, "sensor-1/temperature 21.5")

	rec := h.record(t, "client connected", map[string]string{"clientId": "sensor-1"})
	for k, want := range map[string]string{"eventType": "Connect", "status": "Success", "principalId": sensor.certID, "thingName": "sensor-1", "sourceIp": "127.0.0.1"} {
		if got := rec[k]; got != want {
			t.Errorf("connect record %s = %v, want %q", k, got, want)
		}
	}
	if rec["sourcePort"] == nil || rec["sourcePort"] == int64(0) {
		t.Errorf("connect record has no sourcePort: %v", rec)
	}

	pub.Disconnect(250)
	h.record(t, "client disconnected", map[string]string{"clientId": "sensor-1", "eventType": "Disconnect", "disconnectReason": "CLIENT_INITIATED_DISCONNECT"})
}

func TestMQTT5DevicePublishesAndReceives(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("sensor-5")
	got := make(chan string, 10)
	_, c, err := h.connectV5(d, "sensor-5", func(p paho.PublishReceived) { got <- p.Packet.Topic + " " + string(p.Packet.Payload) })
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	subscribeV5(t, c, "sensor-5/#")
	publishV5(t, c, "sensor-5/hello", 1, "v5")
	expectMessage(t, got, "sensor-5/hello v5")
}

// TestRefusedAtConnect covers every way a certificate or client ID is refused: each gets CONNACK 5 on
// MQTT 3.1.1, the right MQTT 5 reason code, and one log record with the reason.
func TestRefusedAtConnect(t *testing.T) {
	h := startBroker(t, nil)
	st := h.broker.State()
	otherCA, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "Some Other CA", KeyType: certs.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	register := func(d *device) *device {
		if _, err := auth.RegisterDevice(st.Registry, auth.Thing{Name: d.name}, d.cert.Leaf, nil); err != nil {
			t.Fatal(err)
		}
		return d
	}
	setStatus := func(d *device, s auth.Status) *device {
		if _, err := st.Registry.SetStatus(d.certID, s); err != nil {
			t.Fatal(err)
		}
		return d
	}
	h.createDevice("other-thing")

	cases := []struct {
		name     string
		dev      *device
		clientID string
		reason   string
		v5Code   byte
	}{
		{"unregistered certificate from the device CA", issueOdd(t, st.DeviceCA, "ghost", nil), "ghost", auth.ReasonNotRegistered, 0x86},
		{"certificate from another CA", issueOdd(t, otherCA, "stranger", nil), "stranger", auth.ReasonUntrustedCertificate, 0x86},
		{"expired certificate", register(issueOdd(t, st.DeviceCA, "old-timer", func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		})), "old-timer", auth.ReasonCertificateExpired, 0x86},
		{"revoked certificate", setStatus(h.createDevice("revoked-1"), auth.StatusRevoked), "revoked-1", auth.ReasonRevoked, 0x87},
		{"inactive certificate", setStatus(h.createDevice("inactive-1"), auth.StatusInactive), "inactive-1", auth.ReasonInactive, 0x87},
		{"client ID is not the certificate's thing", h.createDevice("honest-1"), "other-thing", auth.ReasonClientIDNotThing, 0x87},
		{"client ID is no thing at all", h.createDevice("honest-2"), "nobody", auth.ReasonClientIDNotThing, 0x87},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.connectV3(tc.dev, tc.clientID)
			if err == nil || !strings.Contains(err.Error(), "not Authorized") {
				t.Fatalf("MQTT 3.1.1 connect: err = %v, want CONNACK 5 (not authorized)", err)
			}
			h.record(t, "connection refused", map[string]string{"clientId": tc.clientID, "reason": tc.reason, "connackCode": "5", "eventType": "Connect", "status": "Failure"})

			ack, _, err := h.connectV5(tc.dev, tc.clientID, nil)
			if err == nil || ack == nil || ack.ReasonCode != tc.v5Code {
				code := -1
				if ack != nil {
					code = int(ack.ReasonCode)
				}
				t.Fatalf("MQTT 5 connect: err = %v, reason code %#x, want %#x", err, code, tc.v5Code)
			}
		})
	}
}

// TestRevokeAppliesFromNextConnect shows the registry is read on every connect: no restart needed.
func TestRevokeAppliesFromNextConnect(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("sensor-r")
	c := h.mustConnectV3(d)
	c.Disconnect(250)
	if _, err := h.broker.State().Registry.SetStatus("sensor-r", auth.StatusInactive); err != nil {
		t.Fatal(err)
	}
	if _, err := h.connectV3(d, "sensor-r"); err == nil {
		t.Fatal("inactive certificate connected")
	}
	if _, err := h.broker.State().Registry.SetStatus("sensor-r", auth.StatusActive); err != nil {
		t.Fatal(err)
	}
	h.mustConnectV3(d).Disconnect(250)
	if _, err := h.broker.State().Registry.SetStatus("sensor-r", auth.StatusRevoked); err != nil {
		t.Fatal(err)
	}
	if _, err := h.connectV3(d, "sensor-r"); err == nil {
		t.Fatal("revoked certificate connected")
	}
	// Revocation is final, as in AWS IoT.
	if _, err := h.broker.State().Registry.SetStatus("sensor-r", auth.StatusActive); !errors.Is(err, auth.ErrCertificateState) {
		t.Fatalf("activating a revoked certificate: %v, want refused", err)
	}
}

// TestNoClientCertificateFailsHandshake: the listener requires a client certificate.
func TestNoClientCertificateFailsHandshake(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("sensor-n")
	cfg := h.tlsConfig(d, nil)
	cfg.Certificates = nil
	c := pahov3.NewClient(h.v3Options(d, "sensor-n", nil).SetTLSConfig(cfg))
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		t.Fatal("connect did not finish")
	}
	if tok.Error() == nil {
		t.Fatal("connected without a client certificate")
	}
	h.record(t, "TLS handshake failed", map[string]string{"reason": "TLS_HANDSHAKE_FAILED", "sourceIp": "127.0.0.1"})
}

// TestSilentSocketIsClosed: a client that opens a socket and sends nothing is dropped after the
// handshake timeout instead of holding a connection forever.
func TestSilentSocketIsClosed(t *testing.T) {
	h := startBroker(t, func(c *config.Config) { c.MQTT.TLSHandshakeTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("read data from a silent socket's connection, want it closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("broker kept a silent socket open")
	}
}

// TestStateFilesArePrivate: every private key is 0600, in the state directory and in a device's files.
func TestStateFilesArePrivate(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("sensor-f")
	for _, p := range []string{
		filepath.Join(h.cfg.StateDir, "ca", "core-ca.key"),
		filepath.Join(h.cfg.StateDir, "ca", "device-ca.key"),
		filepath.Join(h.cfg.StateDir, "server", "server.key"),
		filepath.Join(d.dir, auth.DeviceKeyFile),
	} {
		if m := fileMode(t, p); m != 0o600 {
			t.Errorf("%s has mode %o, want 600", p, m)
		}
	}
	for _, r := range h.logs.All() {
		for _, v := range r.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, "PRIVATE KEY") {
				t.Errorf("a log record contains a private key: %s", r.Message)
			}
		}
	}
}

// TestCASurvivesRestart: the core CA (which devices trust) is the same after a restart, and devices
// made before it still connect.
func TestCASurvivesRestart(t *testing.T) {
	h := startBroker(t, nil)
	d := h.createDevice("sensor-s")
	before := h.broker.State().CoreCA.Fingerprint()
	h.stop()

	h2 := startWith(t, h.cfg)
	if after := h2.broker.State().CoreCA.Fingerprint(); after != before {
		t.Fatalf("core CA changed across restart: %s -> %s", before, after)
	}
	h2.mustConnectV3(d)
}

// TestBringYourOwnCA: the core device CA given as file:// URIs (an intermediate and its chain to a
// root), as in Greengrass' client device auth component, signs the server certificate; devices that
// trust the root connect, and no CA is generated in the state directory.
func TestBringYourOwnCA(t *testing.T) {
	dir := t.TempDir()
	rootKey, err := certs.GenerateKey(certs.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "My Root CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	rootCA := &certs.Authority{Cert: root, Key: rootKey}
	interKey, err := certs.GenerateKey(certs.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := rootCA.Sign(&x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "My Greengrass Core CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, interKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := certs.EncodeKeyPEM(interKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"inter.pem": certs.EncodeCertsPEM(inter), "inter.key": keyPEM, "root.pem": certs.EncodeCertsPEM(root)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h := startBroker(t, func(c *config.Config) {
		ca := &c.ClientDeviceAuth.CertificateAuthority
		ca.CertificateURI = "file://" + filepath.Join(dir, "inter.pem")
		ca.PrivateKeyURI = "file://" + filepath.Join(dir, "inter.key")
		ca.CertificateChainURI = "file://" + filepath.Join(dir, "root.pem")
	})
	if got := h.broker.ServerCertificate().Issuer.CommonName; got != "My Greengrass Core CA" {
		t.Fatalf("server certificate issued by %q", got)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.StateDir, "ca", "core-ca.pem")); err == nil {
		t.Fatal("a core CA was generated although one was brought")
	}
	d := h.createDevice("byo-1")
	pool := x509.NewCertPool()
	pool.AddCert(root)
	cfg := h.tlsConfig(d, nil)
	cfg.RootCAs = pool // the device trusts only the user's root
	c := pahov3.NewClient(h.v3Options(d, d.name, nil).SetTLSConfig(cfg))
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect trusting only the root: %v", tok.Error())
	}
	c.Disconnect(100)
	written, err := os.ReadFile(filepath.Join(d.dir, auth.CoreCAFile))
	if err != nil || !strings.Contains(string(written), string(certs.EncodeCertsPEM(root))) {
		t.Fatalf("the device's core-ca.pem does not hold the root: %v", err)
	}
}
