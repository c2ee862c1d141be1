// Package broker wires ggbroker together: mochi's MQTT server, the mutual TLS listener whose server
// certificate the core device CA issues and rotates, the hooks that authenticate devices and ask the
// Authorizer, and the loopback admin listener. It owns the lifecycle: New prepares, Run serves until
// its context ends and then shuts down gracefully.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/authz"
	"github.com/ggbroker/ggbroker/broker/store"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
	"github.com/ggbroker/ggbroker/profile"
	"github.com/ggbroker/ggbroker/state"
)

const mqttListenerID = "mqtts"

// Broker is one ggbroker server. Create it with New; Run serves.
type Broker struct {
	cfg     *config.Config
	log     *zap.Logger
	state   *state.State
	authz   authz.Authorizer
	events  Events
	profile profile.Profile

	rotator *certs.Rotator
	server  *mqtt.Server
	hook    *hook

	mqttLn  net.Listener
	adminLn net.Listener
	admin   *http.Server
	// adminToken is what POST /rotate must carry (state.AdminTokenFile).
	adminToken string
	disc       discoveryParts // discovery.go: connectivity, discovery certificate and listeners
	api        apiParts       // api.go: the AWS API listener (controlPlane)

	// Durability and operations (storage.go, metrics.go, local_listener.go).
	persist  *persistence  // what openPersistence found, nil when persistence is off
	store    *store.Hook   // the storage hook, nil when persistence is off
	metrics  *metrics      // always collected; served on /metrics when the admin listener is on
	localLn  net.Listener  // the loopback plain-TCP listener, nil when off
	local    *localClients // its identity
	recover  bool          // move an unreadable persistence file aside instead of refusing to start
	stopping atomic.Bool   // set when shutdown starts: /readyz answers 503 from then on

	svc       services       // the device services and their seam (host.go)
	listeners []*tlsListener // the MQTT listeners, for their pending-connection count

	lock      *state.ServeLock // this broker's hold on the state directory
	ready     chan struct{}
	rotated   chan certs.RotationEvent // rotations for Run to act on (restart mode), never blocks the rotator
	once      sync.Once                // shutdown
	closeOnce sync.Once                // Close
}

// Option changes how New builds the broker.
type Option func(*Broker)

// WithRecover makes New move an unreadable persistence file aside (renamed with a timestamp, never
// deleted) and start with no stored sessions, instead of refusing to start (`serve --recover`).
func WithRecover() Option { return func(b *Broker) { b.recover = true } }

// New takes the state directory (refusing one another broker serves), opens it, issues (or reloads)
// the server certificate and binds the listeners, so that configuration and address errors surface
// before Run, and Addr is known. Whatever it took is released when it fails, and by Close.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) (*Broker, error) {
	b := &Broker{cfg: cfg, log: log, ready: make(chan struct{}), rotated: make(chan certs.RotationEvent, 4)}
	for _, o := range opts {
		o(b)
	}
	if err := b.open(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// open is New's work; New releases what it took when it fails.
func (b *Broker) open() error {
	cfg, log := b.cfg, b.log
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	prof, err := profile.FromConfig(cfg.Behaviour)
	if err != nil {
		return fmt.Errorf("config %s: %w", cfg.Source, err)
	}
	b.profile = prof
	if b.lock, err = state.LockServe(cfg.StateDir); err != nil {
		return err
	}
	st, err := state.OpenState(cfg)
	if err != nil {
		return err
	}
	if err := b.openPersistence(); err != nil {
		return err
	}
	b.metrics = newMetrics(b)
	b.events = b.metrics
	b.state = st
	for _, n := range st.Notes {
		log.Info(n)
	}
	for _, w := range st.Warnings {
		log.Warn(w, zap.String("stateDir", st.Dir))
	}
	st.Registry.OnReloadError = func(err error) { log.Error("registry reload failed", zap.Error(err)) }
	if b.authz, err = newAuthorizer(cfg, st, log); err != nil {
		return err
	}
	if pa, ok := b.authz.(*authz.PolicyAuthorizer); ok && b.disc.authz == nil {
		b.disc.authz = pa // greengrass:Discover by the certificate's policies
	}
	if err := b.openServices(); err != nil {
		return err
	}

	b.newConnectivity() // the server certificate's names come from it

	certPath, keyPath := st.ServerCertPaths()
	b.rotator, err = certs.NewRotator(certs.RotatorConfig{
		Authority:  func() *certs.Authority { return st.CoreCA },
		SANs:       b.serverSANs,
		CommonName: "ggbroker",
		Validity:   cfg.ServerCertificateValidity(),
		KeyType:    state.KeyTypeOf(st.CoreCA.Cert),
		Disabled:   cfg.ClientDeviceAuth.Certificates.DisableCertificateRotation,
		CertPath:   certPath,
		KeyPath:    keyPath,
		OnRotate:   b.onRotate,
		OnError:    func(err error) { log.Error("server certificate rotation failed", zap.Error(err)) },
	})
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}

	if b.mqttLn, err = net.Listen("tcp", cfg.MQTT.Listen); err != nil {
		return fmt.Errorf("mqtt.listen %s: %w", cfg.MQTT.Listen, err)
	}
	if cfg.Admin.Enabled {
		if b.adminToken, err = st.AdminToken(); err != nil {
			return err
		}
		if b.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			return fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
		}
	}
	if err := b.setupLocalListener(); err != nil {
		return err
	}
	if err := b.setupDiscovery(); err != nil {
		return err
	}
	return b.setupAPI()
}

// Close releases what New took: the listeners and the state directory. Run calls it when it returns;
// call it yourself for a Broker that New made but Run never served. It is safe to call more than once.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		for _, ln := range []net.Listener{b.mqttLn, b.adminLn, b.localLn, b.disc.ln, b.disc.alpnLn, b.api.ln} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		b.closeServiceDB()
		b.lock.Release()
	})
}

// newAuthorizer builds the Authorizer authorization.mode asks for.
func newAuthorizer(cfg *config.Config, st *state.State, log *zap.Logger) (authz.Authorizer, error) {
	if cfg.Authorization.Mode == config.AuthzAllowAll {
		log.Warn("authorization.mode is allow-all: every authenticated device may connect, publish, subscribe and receive anywhere; use it for benchmarks and debugging only")
		return authz.AllowAll{}, nil
	}
	pa, err := authz.NewPolicyAuthorizer(cfg, st.Registry, log)
	if err != nil {
		return nil, err
	}
	log.Info("authorization", zap.String("mode", pa.Mode()), zap.String("policyDir", pa.PolicyDir()))
	return pa, nil
}

// Authorizer is the authorizer in force.
func (b *Broker) Authorizer() authz.Authorizer { return b.authz }

// State is the opened state directory.
func (b *Broker) State() *state.State { return b.state }

// Addr is the MQTT listener's address (useful with port 0).
func (b *Broker) Addr() net.Addr { return b.mqttLn.Addr() }

// AdminAddr is the admin listener's address, nil when it is off.
func (b *Broker) AdminAddr() net.Addr {
	if b.adminLn == nil {
		return nil
	}
	return b.adminLn.Addr()
}

// Ready is closed once Run serves.
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// ServerCertificate is the server certificate the next handshake gets.
func (b *Broker) ServerCertificate() *x509.Certificate { return b.rotator.Current() }

// Rotate issues new server certificates now, whatever their age: the MQTT, discovery and API ones.
func (b *Broker) Rotate(reason string) error {
	return errors.Join(b.rotator.Rotate(reason), b.rotateDiscovery(reason), b.rotateAPI(reason))
}

// listenerOptions are what the MQTT listeners share.
func (b *Broker) listenerOptions() listenerOptions {
	return listenerOptions{handshakeTimeout: b.cfg.MQTT.TLSHandshakeTimeout, maxPending: b.cfg.Limits.MaxPendingConnections,
		log: b.log, events: b.events, handshakeFailed: b.metrics.handshakeFailed}
}

// connectRead releases a connection's pending place once its CONNECT is read (the hook calls it).
func (b *Broker) connectRead(conn net.Conn) {
	for _, l := range b.listeners {
		if l.connected(conn) {
			return
		}
	}
}

// tlsConfig asks every client for a certificate but leaves judging it to the CONNECT hook, which
// checks it against the registry and answers with a CONNACK reason and a log record a person can act
// on, instead of a bare TLS alert.
func (b *Broker) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequireAnyClientCert,
		GetCertificate: b.rotator.GetCertificate,
	}
}

// authenticator checks devices' certificates and client IDs by the profile's rule: in greengrass the
// client ID is a thing the certificate is attached to, in iot-core iot:Connect decides
// (behaviour.clientIdMustBeThing).
func (b *Broker) authenticator() *auth.Authenticator {
	var opts []auth.Option
	if !b.profile.ClientIDMustBeThing {
		opts = append(opts, auth.ThingOptional())
	}
	return auth.NewAuthenticator(b.state.Registry, b.state.TrustedDeviceCAs, nil, opts...)
}

// Run serves until ctx ends, then shuts down: stop accepting, disconnect clients, close listeners.
func (b *Broker) Run(ctx context.Context) (err error) {
	defer b.Close()
	defer func() {
		if err != nil && b.server != nil {
			_ = b.server.Close() // a start that failed half-way: hooks (the persistence file) are released
		}
	}()
	b.server = mqtt.New(&mqtt.Options{
		Logger:                 slog.New(newSlogHandler(b.log.Named("mochi"))),
		SysTopicResendInterval: sysTopicInterval(b.profile),
		InlineClient:           true, // lifecycle events and the services publish through it
		// Packets queued while a client's writer is busy go out in one write of up to this many bytes:
		// one TLS record (16 KiB at most) and one syscall for a batch, not one per packet.
		ClientNetWriteBufferSize: 16 << 10,
		SlowSubscriberWait:       slowSubscriberWait(b.cfg.Limits),
	})
	applyProfile(b.profile, b.server.Options.Capabilities)
	applyLimits(b.cfg.Limits, b.server.Options.Capabilities)
	b.hook = &hook{server: b.server, authn: b.authenticator(), authz: b.authz, events: b.events, log: b.log, connectRead: b.connectRead,
		profile: b.profile, accountID: b.cfg.Core.AccountID, unknownCertificate: b.unknownCertificate}
	if b.profile.LifecycleEvents {
		b.hook.lifecycle = &lifecycle{server: b.server, log: b.log, accountID: b.cfg.Core.AccountID}
	}
	if err := b.server.AddHook(b.hook, nil); err != nil {
		return fmt.Errorf("add auth hook: %w", err)
	}
	if err := b.server.AddHook(&serviceHook{b: b}, nil); err != nil { // after authorization, before storage
		return fmt.Errorf("add services hook: %w", err)
	}
	if err := b.addLocalListener(); err != nil {
		return err
	}
	if err := b.addStoreHook(); err != nil { // after authorization and the services: only accepted messages are logged
		return err
	}
	if err := b.addFlowControl(); err != nil {
		return err
	}
	l := newTLSListener(mqttListenerID, b.mqttLn, b.tlsConfig(), b.listenerOptions())
	b.listeners = append(b.listeners, l)
	if err := b.server.AddListener(l); err != nil {
		return fmt.Errorf("add MQTT listener: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The services register their topics before the first device can publish to them.
	if err := b.startServices(ctx); err != nil {
		return err
	}
	restoreStart := time.Now()
	if err := b.server.Serve(); err != nil {
		b.stopServices()
		return fmt.Errorf("start MQTT server: %w", err)
	}
	if b.store != nil {
		b.store.LogRestored(time.Since(restoreStart))
	}
	var wg sync.WaitGroup
	wg.Go(func() { b.rotator.Run(ctx) })
	wg.Go(func() { b.expireSessions(ctx) })
	wg.Go(func() { b.watchRevocations(ctx) })
	wg.Go(func() { b.trimMemory(ctx) })
	b.startDiscovery(ctx, &wg)
	b.startAPI(ctx, &wg)
	if pa, ok := b.authz.(*authz.PolicyAuthorizer); ok {
		wg.Go(func() { pa.Watch(ctx) })
	}
	if b.adminLn != nil {
		b.admin = &http.Server{Handler: b.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := b.admin.Serve(b.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.log.Error("admin listener failed", zap.Error(err))
			}
		})
	}
	leaf := b.rotator.Current()
	fields := []zap.Field{
		zap.String("mqtt", b.mqttLn.Addr().String()), zap.String("stateDir", b.state.Dir),
		zap.String("config", b.cfg.Source), zap.String("coreCA", b.state.CoreCAPath),
		zap.String("serverCertSerial", leaf.SerialNumber.Text(16)), zap.Time("serverCertNotAfter", leaf.NotAfter),
		zap.Strings("serverCertDNS", leaf.DNSNames), zap.Stringers("serverCertIPs", ipStringers(leaf.IPAddresses)),
		zap.String("rotationMode", b.cfg.ClientDeviceAuth.Certificates.RotationMode),
		zap.String("behaviourProfile", b.profile.Name),
	}
	if b.adminLn != nil {
		fields = append(fields, zap.String("admin", b.adminLn.Addr().String()))
	}
	if b.localLn != nil {
		fields = append(fields, zap.String("local", b.localLn.Addr().String()))
	}
	if b.store != nil {
		fields = append(fields, zap.String("persistence", b.store.Path()))
	}
	fields = append(fields, b.discoveryFields()...)
	fields = append(fields, b.apiFields()...)
	b.log.Info("ggbroker serving", fields...)
	close(b.ready)

	for {
		select {
		case ev := <-b.rotated:
			b.applyRotation(ev)
		case <-ctx.Done():
			b.shutdown()
			cancel()
			wg.Wait()
			return nil
		}
	}
}

// shutdown closes listeners and disconnects every client (MQTT 5 clients get DISCONNECT 0x8B).
func (b *Broker) shutdown() {
	b.once.Do(func() {
		b.log.Info("shutting down")
		b.stopping.Store(true)
		if b.admin != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = b.admin.Shutdown(sctx)
			cancel()
		}
		b.stopDiscovery()
		b.stopAPI()
		b.closeServer()
		b.stopServices() // after the last device is gone; the service database closes with Close
		b.log.Info("stopped")
	})
}

// rotationFields describe a newly issued certificate in a log record.
func rotationFields(ev certs.RotationEvent) []zap.Field {
	fields := []zap.Field{zap.String("reason", ev.Reason), zap.String("serial", ev.New.SerialNumber.Text(16)),
		zap.Time("notAfter", ev.New.NotAfter), zap.Strings("dns", ev.New.DNSNames), zap.Stringers("ips", ipStringers(ev.New.IPAddresses))}
	if ev.Old != nil {
		fields = append(fields, zap.String("oldSerial", ev.Old.SerialNumber.Text(16)))
	}
	return fields
}

// onRotate is the rotator's callback: log, and hand the event to Run (restart mode acts on it there).
func (b *Broker) onRotate(ev certs.RotationEvent) {
	b.log.Info("server certificate issued", rotationFields(ev)...)
	if ev.Old == nil {
		return
	}
	b.metrics.rotated()
	select {
	case b.rotated <- ev:
	default: // a restart is already queued; one restart serves both rotations
	}
}

// applyRotation does what the rotation mode says. In hot mode the next handshake already gets the new
// certificate. In restart mode every connected client is disconnected, as Greengrass' broker restart
// does (greengrass-v2/client-device-auth-component.md, serverCertificateValiditySeconds); sessions
// stay, so persistent sessions resume when the devices reconnect.
func (b *Broker) applyRotation(ev certs.RotationEvent) {
	if b.cfg.ClientDeviceAuth.Certificates.RotationMode != config.RotationRestart {
		return
	}
	n := 0
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		_ = b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		n++
	}
	b.log.Info("restart-mode rotation: disconnected every client", zap.Int("clients", n), zap.String("reason", ev.Reason))
}

func ipStringers(ips []net.IP) []fmt.Stringer {
	out := make([]fmt.Stringer, len(ips))
	for i, ip := range ips {
		out[i] = ip
	}
	return out
}

// applyProfile sets the mochi capabilities the profile decides: the QoS and packet size mochi enforces
// and advertises, and the MQTT 5 session expiry clamp (returned in CONNACK).
func applyProfile(p profile.Profile, caps *mqtt.Capabilities) {
	caps.MaximumQos = byte(p.MaxQoS)
	caps.MaximumPacketSize = uint32(p.MaxPacketBytes)
	if p.MaxSessionExpirySeconds > 0 {
		caps.MaximumSessionExpiryInterval = uint32(p.MaxSessionExpirySeconds)
	}
	caps.TopicAliasMaximum = uint16(p.TopicAliasMaximum) // advertised in CONNACK; 0: no aliases
}

// applyLimits applies the limits block to mochi's capabilities. It runs after applyProfile, so
// limits.maxPacketSize is a ceiling over the behaviour profile's packet size.
func applyLimits(l config.Limits, caps *mqtt.Capabilities) {
	caps.MaximumClients = l.MaxConnections
	caps.MaximumClientWritesPending = l.MaxPendingWrites // a slow reader's excess is not queued (see slowSubscriberWait)
	caps.MaximumInflight = l.MaxInflight
	caps.MaximumInflightBytes = l.MaxQueuedBytes
	if caps.MaximumPacketSize == 0 || caps.MaximumPacketSize > l.MaxPacketSize {
		caps.MaximumPacketSize = l.MaxPacketSize
	}
}

// slowSubscriberWait is mochi's SlowSubscriberWait for limits.slowSubscriber: 0 (drop at once) or
// limits.slowSubscriberWait.
func slowSubscriberWait(l config.Limits) time.Duration {
	if l.SlowSubscriber == config.SlowSubscriberBlock {
		return l.SlowSubscriberWait
	}
	return 0
}

// sysTopicInterval is how often mochi refreshes its $SYS topics: every 10 s when clients may read them
// (behaviour.sysTopics), and as good as never when they may not.
func sysTopicInterval(p profile.Profile) int64 {
	if p.SysTopics {
		return 10
	}
	return 365 * 24 * 3600
}

// shutdownTimeout bounds the last step of a graceful shutdown: closing the listeners, disconnecting
// every client (persistent sessions are written as they go) and closing the persistence file.
const shutdownTimeout = 10 * time.Second

// closeServer closes mochi's server within shutdownTimeout. Every acknowledged message is already on
// disk, so giving up on a client that does not let go loses nothing.
func (b *Broker) closeServer() {
	done := make(chan struct{})
	go func() {
		_ = b.server.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownTimeout):
		b.log.Error("shutdown did not finish in time; stopping anyway", zap.Duration("timeout", shutdownTimeout))
	}
}

// Sessions is how many MQTT sessions the broker holds, connected or not.
func (b *Broker) Sessions() int {
	n := 0
	for _, cl := range b.server.Clients.GetAll() {
		if !cl.Net.Inline {
			n++
		}
	}
	return n
}
