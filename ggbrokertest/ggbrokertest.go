// Package ggbrokertest starts a real ggbroker in-process for the tests of the people who test against
// it, as net/http/httptest starts a real HTTP server: the broker (with every device service) on
// 127.0.0.1 port 0, a temporary state directory, real mutual TLS, stopped by t.Cleanup.
//
//	srv := ggbrokertest.Start(t, ggbrokertest.WithProfile("iot-core"))
//	dev := srv.CreateDevice(t, "sensor-1")
//	opts := mqtt.NewClientOptions().AddBroker("ssl://" + srv.MQTTAddr()).SetClientID("sensor-1").SetTLSConfig(dev.TLSConfig())
//
// It keeps no package-level state: any number of servers run in one test binary, in parallel.
package ggbrokertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/ggbroker/ggbroker/app"
	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/bridge"
	"github.com/ggbroker/ggbroker/broker"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/policy"
	"github.com/ggbroker/ggbroker/state"
)

// Timeout bounds every wait of this package (start, stop, a policy reload): a failure deadline, not a
// timing assumption.
const Timeout = 15 * time.Second

// Option changes how Start configures the broker.
type Option func(*options)

type options struct {
	mutate   []func(*config.Config)
	policies map[string]string
	upstream *upstream
}

// WithProfile chooses the AWS behaviour profile: "greengrass" (the default) or "iot-core".
func WithProfile(name string) Option {
	return WithConfig(func(c *config.Config) { c.Behaviour.Profile = name })
}

// WithPersistence turns MQTT persistence on (the default) or off.
func WithPersistence(on bool) Option {
	return WithConfig(func(c *config.Config) { c.Persistence.Enabled = on })
}

// WithPolicies writes AWS IoT policy documents (name -> JSON) into the state directory before the
// broker starts; attach them with CreateDevice's WithPolicyName.
func WithPolicies(docs map[string]string) Option {
	return func(o *options) {
		if o.policies == nil {
			o.policies = map[string]string{}
		}
		for k, v := range docs {
			o.policies[k] = v
		}
	}
}

// WithDeviceGroups authorizes by Greengrass device groups (the client device auth component's
// deviceGroups object, verbatim) instead of the certificates' policies.
func WithDeviceGroups(groups map[string]any) Option {
	return WithConfig(func(c *config.Config) {
		c.ClientDeviceAuth.DeviceGroups = groups
		c.Authorization.Mode = config.AuthzDeviceGroups
	})
}

// WithLocalListener turns on the loopback plain-TCP listener: every client on it is the anonymous
// identity, authorized by policyDoc (an AWS IoT policy document).
func WithLocalListener(anonymous, policyDoc string) Option {
	return func(o *options) {
		WithPolicies(map[string]string{anonymous + "-local": policyDoc})(o)
		o.mutate = append(o.mutate, func(c *config.Config) {
			c.LocalListener = config.LocalListener{Enabled: true, Listen: "127.0.0.1:0", Anonymous: anonymous, Policy: anonymous + "-local"}
		})
	}
}

// Mapping is one entry of the bridge's bridge.mqttTopicMapping (Greengrass' MQTT bridge component):
// messages on Topic (a filter) go from Source to Target, their topic prefixed with TargetTopicPrefix.
// Name is the mapping's name in the configuration (generated when empty).
type Mapping struct {
	Name              string
	Topic             string
	Source            string
	Target            string
	TargetTopicPrefix string
}

// LocalToIotCore bridges topic from this server's devices up to the upstream.
func LocalToIotCore(topic string) Mapping {
	return Mapping{Topic: topic, Source: bridge.LocalMqtt, Target: bridge.IotCore}
}

// IotCoreToLocal bridges topic from the upstream down to this server's devices.
func IotCoreToLocal(topic string) Mapping {
	return Mapping{Topic: topic, Source: bridge.IotCore, Target: bridge.LocalMqtt}
}

type upstream struct {
	srv      *Server
	mappings []Mapping
}

// CorePolicy is the policy WithUpstream attaches to the core's certificate on the upstream: connect
// with the core's thing name as client ID, and publish, subscribe and receive on any topic, as the
// Greengrass core policies of the AWS setup guides do. A test that wants the upstream to refuse
// something replaces it: up.SetPolicy(t, "<core thing>-policy", doc).
const CorePolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/*"},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/*"}]}`

// WithUpstream points this server's MQTT bridge at up, another Server (started with
// WithProfile("iot-core") to stand in for AWS IoT Core), as a Greengrass core is pointed at AWS IoT
// Core: it registers the core's thing (core.thingName, MyGreengrassCore unless WithConfig changes it)
// on up with a new certificate and CorePolicy, writes its files, sets core.iotDataEndpoint,
// core.certificateFilePath, core.privateKeyPath, core.rootCaPath and bridge.mqttTopicMapping, and
// shortens the bridge's reconnect delays to 20ms..200ms (unless WithConfig sets
// bridge.minReconnectDelay or maxReconnectDelay) so that a test of an outage does not wait a second.
// Start and Restart return once the bridge is connected and subscribed upstream: a message the
// upstream sends after that comes down. Servers bridged to one upstream need core.thingName each
// their own, as Greengrass cores in one AWS account do: the thing name is the bridge's client ID, and
// two connections with one client ID take the session from each other.
func WithUpstream(up *Server, mappings ...Mapping) Option {
	return func(o *options) { o.upstream = &upstream{srv: up, mappings: mappings} }
}

// configure registers the core on the upstream and writes the core.* and bridge keys. It runs after
// the other options, so that it sees the thing name and bridge keys they set.
func (u *upstream) configure(t testing.TB, cfg *config.Config) {
	t.Helper()
	thing := cfg.Core.ThingName
	core := u.srv.CreateDevice(t, thing, WithPolicy(CorePolicy), WithFiles(filepath.Join(t.TempDir(), "core")))
	_, port, err := net.SplitHostPort(u.srv.MQTTAddr())
	if err != nil {
		t.Fatalf("ggbrokertest: upstream address: %v", err)
	}
	// localhost: the name the upstream's server certificate carries.
	cfg.Core.IoTDataEndpoint = "localhost:" + port
	cfg.Core.CertificateFilePath = filepath.Join(core.Dir, auth.DeviceCertFile)
	cfg.Core.PrivateKeyPath = filepath.Join(core.Dir, auth.DeviceKeyFile)
	cfg.Core.RootCAPath = filepath.Join(core.Dir, auth.CoreCAFile)

	// The bridge block as viper would hold it from a file: lower-cased keys.
	sec := map[string]any{}
	if old, ok := cfg.Sections["bridge"].(map[string]any); ok {
		for k, v := range old {
			sec[strings.ToLower(k)] = v
		}
	}
	for k, v := range map[string]string{"minreconnectdelay": "20ms", "maxreconnectdelay": "200ms"} {
		if _, set := sec[k]; !set {
			sec[k] = v
		}
	}
	maps := map[string]any{}
	if old, ok := sec["mqtttopicmapping"].(map[string]any); ok {
		for k, v := range old {
			maps[k] = v
		}
	}
	for i, m := range u.mappings {
		name := m.Name
		if name == "" {
			name = fmt.Sprintf("ggbrokertest%d", i+1)
		}
		maps[strings.ToLower(name)] = map[string]any{"topic": m.Topic, "source": m.Source, "target": m.Target, "targettopicprefix": m.TargetTopicPrefix}
	}
	sec["mqtttopicmapping"] = maps
	if cfg.Sections == nil {
		cfg.Sections = map[string]any{}
	}
	cfg.Sections["bridge"] = sec
}

// WithConfig changes the configuration directly, after the defaults and the other options.
func WithConfig(f func(*config.Config)) Option {
	return func(o *options) { o.mutate = append(o.mutate, f) }
}

// Server is one running broker. Its methods may be called from the test's goroutine and others.
type Server struct {
	cfg     *config.Config
	logs    *observer.ObservedLogs
	core    zapcore.Core
	bridged bool // WithUpstream: start waits for the bridge

	mu   sync.Mutex
	b    *broker.Broker
	stop func()
}

// Start starts a broker and stops it when the test ends. It fails the test if the broker does not
// start.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := app.DefaultConfig()
	if err != nil {
		t.Fatalf("ggbrokertest: default config: %v", err)
	}
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.MQTT.Listen, cfg.Admin.Listen, cfg.Discovery.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.ControlPlane.Listen = "127.0.0.1:0"
	cfg.Connectivity.DetectIPv4Addresses = false
	for _, f := range o.mutate {
		f(cfg)
	}
	if o.upstream != nil {
		o.upstream.configure(t, cfg)
	}
	if len(o.policies) > 0 {
		dir := cfg.PolicyDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatalf("ggbrokertest: %v", err)
		}
		for name, doc := range o.policies {
			if err := certs.WriteFileAtomic(state.PolicyPath(dir, name), []byte(doc), 0o600); err != nil {
				t.Fatalf("ggbrokertest: policy %s: %v", name, err)
			}
		}
	}
	core, logs := observer.New(zapcore.DebugLevel)
	s := &Server{cfg: cfg, logs: logs, core: core, bridged: o.upstream != nil}
	t.Cleanup(s.Close) // first: a start that fails half-way still stops what it started
	s.start(t)
	return s
}

// start runs the broker on s.cfg and remembers the addresses it bound, so that Restart binds the same.
func (s *Server) start(t testing.TB) {
	t.Helper()
	log := zap.New(zapcore.NewTee(s.core, zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(testWriter{t}), zapcore.WarnLevel)))
	b, err := app.New(s.cfg, log)
	if err != nil {
		t.Fatalf("ggbrokertest: start: %v", err)
	}
	seen := s.logs.Len()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("ggbrokertest: the broker stopped before it was ready: %v", err)
	case <-time.After(Timeout):
		cancel()
		t.Fatal("ggbrokertest: the broker did not get ready")
	}
	// Restart binds what this start bound: clients reconnect to the address they know.
	s.cfg.MQTT.Listen = b.Addr().String()
	if a := b.AdminAddr(); a != nil {
		s.cfg.Admin.Listen = a.String()
	}
	if a := b.DiscoveryAddr(); a != nil {
		s.cfg.Discovery.Listen = a.String()
	}
	if a := b.DiscoveryALPNAddr(); a != nil {
		s.cfg.Discovery.ALPNListen = a.String()
	}
	if a := b.LocalAddr(); a != nil {
		s.cfg.LocalListener.Listen = a.String()
	}
	if a := b.APIAddr(); a != nil {
		s.cfg.ControlPlane.Listen = a.String()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(Timeout):
				t.Errorf("ggbrokertest: the broker did not stop within %s", Timeout)
			}
		})
	}
	s.mu.Lock()
	s.b, s.stop = b, stop
	s.mu.Unlock()
	if s.bridged {
		s.waitBridge(t, seen)
	}
}

// waitBridge waits for the bridge's "upstream connected" record after the first seen records: the
// bridge logs it once its subscriptions upstream are in place.
func (s *Server) waitBridge(t testing.TB, seen int) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		all := s.logs.All()
		for _, e := range all[min(seen, len(all)):] {
			if e.Message == "upstream connected" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ggbrokertest: the bridge did not connect to its upstream %s within %s", s.cfg.Core.IoTDataEndpoint, Timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close stops the broker (t.Cleanup calls it; calling it again is fine).
func (s *Server) Close() {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Restart stops the broker and starts it again on the same state directory and addresses, as a
// process restart would: persistent sessions, retained messages and devices survive.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Close()
	s.start(t)
}

// Broker is the running broker, for what this package does not wrap.
func (s *Server) Broker() *broker.Broker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

// Config is the broker's configuration (with the addresses it bound).
func (s *Server) Config() *config.Config { return s.cfg }

// MQTTAddr is the MQTT over mutual TLS listener's host:port.
func (s *Server) MQTTAddr() string { return s.Broker().Addr().String() }

// LocalAddr is the plain-TCP local listener's host:port ("" unless WithLocalListener).
func (s *Server) LocalAddr() string {
	if a := s.Broker().LocalAddr(); a != nil {
		return a.String()
	}
	return ""
}

// DiscoveryAddr is the Greengrass discovery (and device HTTPS) listener's host:port.
func (s *Server) DiscoveryAddr() string {
	if a := s.Broker().DiscoveryAddr(); a != nil {
		return a.String()
	}
	return ""
}

// DiscoveryALPNAddr is the discovery listener that negotiates the ALPN protocol x-amzn-http-ca, as
// the AWS IoT Device SDKs' discovery clients require on port 443 ("" unless discovery.alpnListen is
// set, e.g. WithConfig(func(c *config.Config) { c.Discovery.ALPNListen = "127.0.0.1:0" })).
func (s *Server) DiscoveryALPNAddr() string {
	if a := s.Broker().DiscoveryALPNAddr(); a != nil {
		return a.String()
	}
	return ""
}

// APIURL is the AWS API listener's endpoint URL (https://127.0.0.1:PORT), for the AWS SDKs' and the
// AWS CLI's --endpoint-url; "" when controlPlane.enabled is false. Its certificate verifies with CoreCA.
func (s *Server) APIURL() string {
	if a := s.Broker().APIAddr(); a != nil {
		return "https://" + a.String()
	}
	return ""
}

// APICredentialsFile is the shared-credentials file (profile ggbroker) whose keys the API listener
// accepts: AWS_SHARED_CREDENTIALS_FILE=<it> AWS_PROFILE=ggbroker.
func (s *Server) APICredentialsFile() string {
	return filepath.Join(s.Broker().State().Dir, broker.CredentialsFile)
}

// CA is the core device CA devices verify the broker's server certificates with.
type CA struct {
	PEM  []byte
	Pool *x509.CertPool
}

// CoreCA is the core device CA.
func (s *Server) CoreCA() CA {
	ca := s.Broker().State().CoreCA
	return CA{PEM: ca.CertPEM(), Pool: ca.Pool()}
}

// DeviceOption changes how CreateDevice provisions a device.
type DeviceOption func(*deviceOptions)

type deviceOptions struct {
	policies []string
	doc      string
	dir      string
	keyType  certs.KeyType
}

// WithPolicy attaches a policy document made for this device (named "<thing>-policy") instead of the
// default device policy.
func WithPolicy(doc string) DeviceOption { return func(o *deviceOptions) { o.doc = doc } }

// WithPolicyName attaches an existing policy (from WithPolicies or SetPolicy) by name.
func WithPolicyName(names ...string) DeviceOption {
	return func(o *deviceOptions) { o.policies = append(o.policies, names...) }
}

// WithFiles writes the device's PEM files (device.pem.crt, private.pem.key, core-ca.pem) into dir,
// as `ggbroker device create --out` does, for clients that read files.
func WithFiles(dir string) DeviceOption { return func(o *deviceOptions) { o.dir = dir } }

// WithRSAKey gives the device an RSA 2048 key instead of ECDSA P-256.
func WithRSAKey() DeviceOption { return func(o *deviceOptions) { o.keyType = certs.RSA2048 } }

// Device is a provisioned client device: its thing, certificate and key.
type Device struct {
	Thing         string
	CertificateID string
	CertPEM       []byte
	KeyPEM        []byte
	// Dir holds the device's files when WithFiles was given.
	Dir  string
	ca   *x509.CertPool
	cert tls.Certificate
}

// CreateDevice registers a thing with a new certificate (and the default device policy unless a
// policy option says otherwise), as `ggbroker device create` does. The default device policy allows
// the device its own topics THING/..., its own shadow and jobs, and nothing of another device's: a
// test whose devices talk across each other's topics gives them a policy with WithPolicy.
func (s *Server) CreateDevice(t testing.TB, thing string, opts ...DeviceOption) *Device {
	t.Helper()
	o := deviceOptions{keyType: certs.ECDSAP256}
	for _, opt := range opts {
		opt(&o)
	}
	if o.doc != "" {
		name := thing + "-policy"
		s.SetPolicy(t, name, o.doc)
		o.policies = append(o.policies, name)
	}
	st := s.Broker().State()
	d, err := st.CreateDevice(auth.NewDevice{Thing: auth.Thing{Name: thing}, KeyType: o.keyType, Validity: 24 * time.Hour, Policies: o.policies})
	if err != nil {
		t.Fatalf("ggbrokertest: create device %s: %v", thing, err)
	}
	if o.dir != "" {
		if err := d.WriteFiles(o.dir, st.CoreCA.CertPEM()); err != nil {
			t.Fatalf("ggbrokertest: device %s files: %v", thing, err)
		}
	}
	cert, err := tls.X509KeyPair(d.CertPEM, d.KeyPEM)
	if err != nil {
		t.Fatalf("ggbrokertest: device %s key pair: %v", thing, err)
	}
	return &Device{Thing: thing, CertificateID: d.Certificate.ID, CertPEM: d.CertPEM, KeyPEM: d.KeyPEM, Dir: o.dir,
		ca: st.CoreCA.Pool(), cert: cert}
}

// TLSConfig is what an MQTT client needs to connect as the device: its certificate, and the core
// device CA to verify the broker (whose certificate names localhost and 127.0.0.1).
func (d *Device) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: d.ca, Certificates: []tls.Certificate{d.cert}, ServerName: "localhost"}
}

// SetPolicy creates or replaces a policy document and waits until the broker decides with it.
func (s *Server) SetPolicy(t testing.TB, name, doc string) {
	t.Helper()
	b := s.Broker()
	if _, err := policy.ParseDocument(name, []byte(doc)); err != nil {
		t.Fatalf("ggbrokertest: policy %s: %v", name, err)
	}
	pa, _ := b.Authorizer().(*authz.PolicyAuthorizer)
	var before uint64
	if pa != nil {
		before, _ = pa.Reloads()
	}
	if err := os.MkdirAll(b.State().PolicyDir, 0o700); err != nil {
		t.Fatalf("ggbrokertest: %v", err)
	}
	if err := certs.WriteFileAtomic(state.PolicyPath(b.State().PolicyDir, name), []byte(doc), 0o600); err != nil {
		t.Fatalf("ggbrokertest: policy %s: %v", name, err)
	}
	if pa == nil {
		return
	}
	deadline := time.Now().Add(Timeout)
	for {
		if v, _ := pa.Reloads(); v > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ggbrokertest: policy %s was not reloaded within %s", name, Timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Revoke revokes every certificate of a thing (as `ggbroker device revoke` does); its live
// connections are closed within a quarter second.
func (s *Server) Revoke(t testing.TB, thing string) {
	t.Helper()
	if _, err := s.Broker().State().Registry.SetStatus(thing, auth.StatusRevoked); err != nil {
		t.Fatalf("ggbrokertest: revoke %s: %v", thing, err)
	}
}

// Rotate issues new server certificates now, as SIGUSR1 does.
func (s *Server) Rotate(t testing.TB) {
	t.Helper()
	if err := s.Broker().Rotate("forced by ggbrokertest"); err != nil {
		t.Fatalf("ggbrokertest: rotate: %v", err)
	}
}

// Record is one AWS-style log record the broker wrote (field names as AWS IoT's: eventType, status,
// clientId, reason ...).
type Record struct {
	Level   string
	Message string
	Fields  map[string]any
}

// Get is a field as a string ("" when absent).
func (r Record) Get(field string) string {
	if v, ok := r.Fields[field]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// Records are the records the broker wrote so far, oldest first, restarts included.
func (s *Server) Records() []Record {
	var out []Record
	for _, e := range s.logs.All() {
		out = append(out, Record{Level: e.Level.String(), Message: e.Message, Fields: e.ContextMap()})
	}
	return out
}

// WaitRecord waits for a record whose message and fields match (a field's value is compared as its
// string form) and returns it; it fails the test after Timeout.
func (s *Server) WaitRecord(t testing.TB, message string, fields map[string]string) Record {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		for _, r := range s.Records() {
			if r.Message == message && matches(r, fields) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ggbrokertest: no %q record with %v", message, fields)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func matches(r Record, fields map[string]string) bool {
	for k, v := range fields {
		if r.Get(k) != v {
			return false
		}
	}
	return true
}

// testWriter sends the broker's warnings and errors to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Dial is a raw TLS connection to the broker as the device, for tests that speak MQTT bytes themselves.
func (s *Server) Dial(d *Device) (net.Conn, error) {
	return tls.Dial("tcp", s.MQTTAddr(), d.TLSConfig())
}

// AWSConfig is an AWS SDK for Go v2 configuration for the broker's AWS APIs (iot, iot-data,
// iot-jobs-data, greengrass): its endpoint, the keys of its credentials file, its region and the core
// device CA as the only root. iot.NewFromConfig(srv.AWSConfig(t)) is a control-plane client.
func (s *Server) AWSConfig(t testing.TB) aws.Config {
	t.Helper()
	if s.APIURL() == "" {
		t.Fatal("ggbrokertest: the API listener is off (controlPlane.enabled)")
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(),
		awsconfig.WithSharedCredentialsFiles([]string{s.APICredentialsFile()}),
		awsconfig.WithSharedConfigFiles([]string{}),
		awsconfig.WithSharedConfigProfile("ggbroker"),
		awsconfig.WithRegion(s.cfg.Core.Region),
		awsconfig.WithCustomCABundle(bytes.NewReader(s.CoreCA().PEM)),
		awsconfig.WithRetryMaxAttempts(1),
	)
	if err != nil {
		t.Fatalf("ggbrokertest: AWS SDK config: %v", err)
	}
	cfg.BaseEndpoint = aws.String(s.APIURL())
	return cfg
}
