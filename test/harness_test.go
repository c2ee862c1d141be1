// Package test holds ggbroker's end-to-end tests: the real broker on 127.0.0.1 port 0, real MQTT
// clients (paho.mqtt.golang for 3.1.1, paho.golang for MQTT 5) over real mutual TLS, and the records the
// broker logs.
package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
)

// waitFor bounds every wait in these tests; it is a failure deadline, not a timing assumption.
const waitFor = 10 * time.Second

// harness is one running broker and what a test needs to reach it.
type harness struct {
	t      testing.TB
	cfg    *config.Config
	broker *broker.Broker
	logs   *observer.ObservedLogs
	stop   func()
}

// startBroker starts a broker on 127.0.0.1:0 with a fresh state directory (or the one cfg names, when
// reusing state across a restart); mutate adjusts the config first.
func startBroker(t testing.TB, mutate func(*config.Config), opts ...broker.Option) *harness {
	t.Helper()
	cfg, err := app.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	cfg.MQTT.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Discovery.Listen = "127.0.0.1:0"
	cfg.ControlPlane.Listen = "127.0.0.1:0"
	cfg.Connectivity.DetectIPv4Addresses = false
	if mutate != nil {
		mutate(cfg)
	}
	return startWith(t, cfg, opts...)
}

func startWith(t testing.TB, cfg *config.Config, opts ...broker.Option) *harness {
	t.Helper()
	writeCrossDevicePolicy(t, cfg)
	// Tests keep every record to assert on. A benchmark keeps only what its config's log level would
	// write: an observer holding millions of records made the garbage collector, not the broker, the
	// cost a benchmark measured.
	level := zapcore.DebugLevel
	if _, bench := t.(*testing.B); bench {
		if l, err := zapcore.ParseLevel(cfg.Log.Level); err == nil {
			level = l
		}
	}
	core, logs := observer.New(level)
	log := zap.New(zapcore.NewTee(core, testCore(t)))
	b, err := app.New(cfg, log, opts...)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-done:
		t.Fatalf("broker stopped before it was ready: %v", err)
	case <-time.After(waitFor):
		t.Fatal("broker not ready")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("broker.Run: %v", err)
				}
			case <-time.After(waitFor):
				var stacks strings.Builder
				_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
				t.Errorf("broker did not shut down; goroutines:\n%s", stacks.String())
			}
		})
	}
	t.Cleanup(stop)
	return &harness{t: t, cfg: cfg, broker: b, logs: logs, stop: stop}
}

// testCore writes warnings and errors to the test log, so a failing test shows what the broker said.
func testCore(t testing.TB) zapcore.Core {
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zapcore.NewCore(enc, zapcore.AddSync(testWriter{t}), zapcore.WarnLevel)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// addr is the broker's MQTT address.
func (h *harness) addr() string { return h.broker.Addr().String() }

// device is a client device's credentials.
type device struct {
	name   string
	certID string
	cert   tls.Certificate
	dir    string
}

// crossDevicePolicy is the policy createDevice attaches when a test names none. Most end-to-end tests
// have one device publish and another receive on topics of neither (sensors/..., a/b, #), which the
// default device policy, scoped to a device's own topics since issue 15, refuses. This policy is the
// broad one the default used to be: every topic outside $aws/, its own shadow and jobs, discovery.
// A test about the default device policy itself asks for it by name: createDefaultDevice.
const crossDevicePolicy = "test-cross-device-permissive"

const crossDevicePolicyDoc = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "ConnectWithOwnThingName", "Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
    {"Sid": "PublishReceiveOutsideAws", "Effect": "Allow", "Action": ["iot:Publish", "iot:RetainPublish", "iot:Receive"], "NotResource": "arn:aws:iot:*:*:topic/$aws/*"},
    {"Sid": "SubscribeOutsideAws", "Effect": "Allow", "Action": "iot:Subscribe", "NotResource": "arn:aws:iot:*:*:topicfilter/$aws/*"},
    {"Sid": "JobsPublishReceiveOwnThing", "Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"},
    {"Sid": "JobsSubscribeOwnThing", "Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"},
    {"Sid": "JobsHTTPSOwnThing", "Effect": "Allow", "Action": ["iotjobsdata:DescribeJobExecution", "iotjobsdata:GetPendingJobExecutions", "iotjobsdata:StartNextPendingJobExecution", "iotjobsdata:UpdateJobExecution"], "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}"},
    {"Sid": "OwnShadowPublishReceive", "Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"},
    {"Sid": "OwnShadowSubscribe", "Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"},
    {"Sid": "OwnShadowHTTPS", "Effect": "Allow", "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow", "iot:ListNamedShadowsForThing"], "Resource": "arn:aws:iot:*:*:thing/${iot:Connection.Thing.ThingName}"},
    {"Sid": "GreengrassDiscovery", "Effect": "Allow", "Action": "greengrass:Discover", "Resource": "arn:aws:iot:*:*:thing/*"}
  ]
}`

// writeCrossDevicePolicy puts crossDevicePolicy into the policy directory before the broker starts,
// so that it is loaded with the others and no test waits for a reload.
func writeCrossDevicePolicy(t testing.TB, cfg *config.Config) {
	t.Helper()
	dir := cfg.PolicyDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("policy directory: %v", err)
	}
	if err := certs.WriteFileAtomic(filepath.Join(dir, crossDevicePolicy+".json"), []byte(crossDevicePolicyDoc), 0o644); err != nil {
		t.Fatalf("write %s: %v", crossDevicePolicy, err)
	}
}

// createDevice provisions a device the way `ggbroker device create` does, with the policies named,
// or crossDevicePolicy when none is (not the default device policy: see crossDevicePolicy), and
// writes its files.
func (h *harness) createDevice(name string, policies ...string) *device {
	h.t.Helper()
	if len(policies) == 0 {
		policies = []string{crossDevicePolicy}
	}
	return h.provisionDevice(name, policies)
}

// createDefaultDevice provisions a device exactly as `ggbroker device create NAME` does: with the
// default device policy.
func (h *harness) createDefaultDevice(name string) *device {
	h.t.Helper()
	return h.provisionDevice(name, nil)
}

func (h *harness) provisionDevice(name string, policies []string) *device {
	h.t.Helper()
	st := h.broker.State()
	d, err := st.CreateDevice(auth.NewDevice{Thing: auth.Thing{Name: name}, KeyType: certs.ECDSAP256, Validity: 24 * time.Hour, Policies: policies})
	if err != nil {
		h.t.Fatal(err)
	}
	dir := filepath.Join(h.t.TempDir(), name)
	if err := d.WriteFiles(dir, st.CoreCA.CertPEM()); err != nil {
		h.t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(d.CertPEM, d.KeyPEM)
	if err != nil {
		h.t.Fatal(err)
	}
	return &device{name: name, certID: d.Certificate.ID, cert: kp, dir: dir}
}

// issueOdd signs a certificate with a template tweak (expired, other CA ...) and returns it as a device.
func issueOdd(t testing.TB, ca *certs.Authority, name string, tweak func(*x509.Certificate)) *device {
	t.Helper()
	key, err := certs.GenerateKey(certs.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	tmpl.Subject.CommonName = name
	if tweak != nil {
		tweak(tmpl)
	}
	cert, err := ca.Sign(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &device{name: name, certID: certs.Fingerprint(cert), cert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
}

// tlsConfig is what a device uses: its certificate, and the core CA to verify the broker with.
// seen, if not nil, receives the serial of the server certificate of each handshake.
func (h *harness) tlsConfig(d *device, seen chan<- string) *tls.Config {
	c := &tls.Config{
		RootCAs:      h.broker.State().CoreCA.Pool(),
		Certificates: []tls.Certificate{d.cert},
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS12,
	}
	if seen != nil {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			select {
			case seen <- cs.PeerCertificates[0].SerialNumber.Text(16):
			default:
			}
			return nil
		}
	}
	return c
}

// v3Options are paho.mqtt.golang options for MQTT 3.1.1 over mTLS, without automatic reconnects so
// that a test sees exactly what the broker does.
func (h *harness) v3Options(d *device, clientID string, seen chan<- string) *pahov3.ClientOptions {
	o := pahov3.NewClientOptions().
		AddBroker("ssl://" + h.addr()).
		SetClientID(clientID).
		SetTLSConfig(h.tlsConfig(d, seen)).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetKeepAlive(30 * time.Second).
		SetCleanSession(true)
	return o
}

// connectV3 connects over MQTT 3.1.1 and returns the client or the connect error.
func (h *harness) connectV3(d *device, clientID string, mutate ...func(*pahov3.ClientOptions)) (pahov3.Client, error) {
	o := h.v3Options(d, clientID, nil)
	for _, m := range mutate {
		m(o)
	}
	c := pahov3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	h.t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// mustConnectV3 connects or fails the test.
func (h *harness) mustConnectV3(d *device, mutate ...func(*pahov3.ClientOptions)) pahov3.Client {
	h.t.Helper()
	c, err := h.connectV3(d, d.name, mutate...)
	if err != nil {
		h.t.Fatalf("connect %s: %v", d.name, err)
	}
	return c
}

// connectV5 connects over MQTT 5 and returns the CONNACK (also on refusal) and the client.
func (h *harness) connectV5(d *device, clientID string, onMsg func(paho.PublishReceived)) (*paho.Connack, *paho.Client, error) {
	conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	cfg := paho.ClientConfig{ClientID: clientID, Conn: packets.NewThreadSafeConn(conn)}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) { onMsg(p); return true, nil }}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true})
	if err != nil {
		conn.Close()
		return ca, nil, err
	}
	h.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return ca, c, nil
}

// subscribeV3 subscribes and returns a channel of received payloads.
func subscribeV3(t testing.TB, c pahov3.Client, filter string, qos byte) <-chan string {
	t.Helper()
	got := make(chan string, 100)
	tok := c.Subscribe(filter, qos, func(_ pahov3.Client, m pahov3.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return got
}

// publishV3 publishes and waits for the publish to complete.
func publishV3(t testing.TB, c pahov3.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// expectMessage waits for one message.
func expectMessage(t testing.TB, got <-chan string, want string) {
	t.Helper()
	select {
	case m := <-got:
		if m != want {
			t.Fatalf("received %q, want %q", m, want)
		}
	case <-time.After(waitFor):
		t.Fatalf("did not receive %q", want)
	}
}

// expectNoMessage checks that nothing arrives until a marker message published after it does: the
// broker handles one publisher's messages in order, so once the marker arrives, a message published
// before it would have too. No sleeps.
func expectNoMessage(t testing.TB, got <-chan string, pub pahov3.Client, markerTopic string) {
	t.Helper()
	publishV3(t, pub, markerTopic, 1, false, "marker")
	select {
	case m := <-got:
		if m != markerTopic+" marker" {
			t.Fatalf("received %q, want nothing before the marker", m)
		}
	case <-time.After(waitFor):
		t.Fatal("marker not received")
	}
}

// record waits for a log record with the message and these string fields, and returns its fields.
func (h *harness) record(t testing.TB, msg string, want map[string]string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		for _, e := range h.logs.FilterMessage(msg).All() {
			fields := e.ContextMap()
			match := true
			for k, v := range want {
				if fmt.Sprint(fields[k]) != v {
					match = false
					break
				}
			}
			if match {
				return fields
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, e := range h.logs.All() {
				seen = append(seen, fmt.Sprintf("%s %v", e.Message, e.ContextMap()))
			}
			t.Fatalf("no %q record with %v; records:\n%s", msg, want, strings.Join(seen, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fileMode returns a file's permission bits.
func fileMode(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// subscribeV5 subscribes an MQTT 5 client at QoS 1 and returns the SUBACK reason codes.
func subscribeV5(t testing.TB, c *paho.Client, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	ack, err := c.Subscribe(ctx, s)
	if ack == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return ack.Reasons
}

// publishV5 publishes from an MQTT 5 client and returns the PUBACK reason code (0 for QoS 0).
func publishV5(t testing.TB, c *paho.Client, topic string, qos byte, payload string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if resp == nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return resp.ReasonCode
}
