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
	"slices"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/config"
)

const mqttListenerID = "mqtts"

// Broker is one ggbroker server. Create it with New; Run serves.
type Broker struct {
	cfg    *config.Config
	log    *zap.Logger
	state  *State
	authz  Authorizer
	events Events

	rotator *certs.Rotator
	server  *mqtt.Server
	hook    *hook

	mqttLn  net.Listener
	adminLn net.Listener
	admin   *http.Server

	ready   chan struct{}
	rotated chan certs.RotationEvent // rotations for Run to act on (restart mode), never blocks the rotator
	once    sync.Once
}

// Option changes how New builds the broker.
type Option func(*Broker)

// WithAuthorizer sets the Authorizer (default AllowAll).
func WithAuthorizer(a Authorizer) Option { return func(b *Broker) { b.authz = a } }

// New opens the state directory, issues (or reloads) the server certificate and binds the listeners,
// so that configuration and address errors surface before Run, and Addr is known.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) (*Broker, error) {
	b := &Broker{cfg: cfg, log: log, events: noEvents{}, ready: make(chan struct{}), rotated: make(chan certs.RotationEvent, 4)}
	for _, o := range opts {
		o(b)
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	state, err := OpenState(cfg)
	if err != nil {
		return nil, err
	}
	b.state = state
	for _, n := range state.Notes {
		log.Info(n)
	}
	state.Registry.OnReloadError = func(err error) { log.Error("registry reload failed", zap.Error(err)) }
	if b.authz == nil {
		if b.authz, err = newAuthorizer(cfg, state, log); err != nil {
			return nil, err
		}
	}

	certPath, keyPath := state.ServerCertPaths()
	b.rotator, err = certs.NewRotator(certs.RotatorConfig{
		Authority:  func() *certs.Authority { return state.CoreCA },
		SANs:       b.serverSANs,
		CommonName: "ggbroker",
		Validity:   cfg.ServerCertificateValidity(),
		KeyType:    keyTypeOf(state.CoreCA.Cert),
		Disabled:   cfg.ClientDeviceAuth.Certificates.DisableCertificateRotation,
		CertPath:   certPath,
		KeyPath:    keyPath,
		OnRotate:   b.onRotate,
		OnError:    func(err error) { log.Error("server certificate rotation failed", zap.Error(err)) },
	})
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}

	b.mqttLn, err = net.Listen("tcp", cfg.MQTT.Listen)
	if err != nil {
		return nil, fmt.Errorf("mqtt.listen %s: %w", cfg.MQTT.Listen, err)
	}
	if cfg.Admin.Enabled {
		b.adminLn, err = net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			b.mqttLn.Close()
			return nil, fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
		}
	}
	return b, nil
}

// newAuthorizer builds the Authorizer authorization.mode asks for.
func newAuthorizer(cfg *config.Config, state *State, log *zap.Logger) (Authorizer, error) {
	if cfg.Authorization.Mode == config.AuthzAllowAll {
		log.Warn("authorization.mode is allow-all: every authenticated device may connect, publish, subscribe and receive anywhere; use it for benchmarks and debugging only")
		return AllowAll{}, nil
	}
	pa, err := NewPolicyAuthorizer(cfg, state.Registry, log)
	if err != nil {
		return nil, err
	}
	log.Info("authorization", zap.String("mode", pa.Mode()), zap.String("policyDir", pa.policyDir))
	return pa, nil
}

// Authorizer is the authorizer in force.
func (b *Broker) Authorizer() Authorizer { return b.authz }

// State is the opened state directory.
func (b *Broker) State() *State { return b.state }

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

// Rotate issues a new server certificate now, whatever its age.
func (b *Broker) Rotate(reason string) error { return b.rotator.Rotate(reason) }

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

// Run serves until ctx ends, then shuts down: stop accepting, disconnect clients, close listeners.
func (b *Broker) Run(ctx context.Context) error {
	b.server = mqtt.New(&mqtt.Options{
		Logger:                 slog.New(newSlogHandler(b.log.Named("mochi"))),
		SysTopicResendInterval: 10,
	})
	b.hook = &hook{server: b.server, authn: auth.NewAuthenticator(b.state.Registry, b.state.TrustedDeviceCAs, nil), authz: b.authz, events: b.events, log: b.log}
	if err := b.server.AddHook(b.hook, nil); err != nil {
		return fmt.Errorf("add auth hook: %w", err)
	}
	l := newTLSListener(mqttListenerID, b.mqttLn, b.tlsConfig(), b.cfg.MQTT.TLSHandshakeTimeout, b.log)
	if err := b.server.AddListener(l); err != nil {
		return fmt.Errorf("add MQTT listener: %w", err)
	}
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("start MQTT server: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { b.rotator.Run(ctx) })
	if pa, ok := b.authz.(*PolicyAuthorizer); ok {
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
	}
	if b.adminLn != nil {
		fields = append(fields, zap.String("admin", b.adminLn.Addr().String()))
	}
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
		if b.admin != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = b.admin.Shutdown(sctx)
			cancel()
		}
		_ = b.server.Close()
		b.log.Info("stopped")
	})
}

// onRotate is the rotator's callback: log, and hand the event to Run (restart mode acts on it there).
func (b *Broker) onRotate(ev certs.RotationEvent) {
	fields := []zap.Field{zap.String("reason", ev.Reason), zap.String("serial", ev.New.SerialNumber.Text(16)),
		zap.Time("notAfter", ev.New.NotAfter), zap.Strings("dns", ev.New.DNSNames), zap.Stringers("ips", ipStringers(ev.New.IPAddresses))}
	if ev.Old != nil {
		fields = append(fields, zap.String("oldSerial", ev.Old.SerialNumber.Text(16)))
	}
	b.log.Info("server certificate issued", fields...)
	if ev.Old == nil {
		return
	}
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

// serverSANs is the one source of the server certificate's names: localhost and 127.0.0.1, the
// configured host addresses, and (when enabled) this machine's non-loopback IPv4 addresses.
func (b *Broker) serverSANs() ([]string, []net.IP) {
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, h := range b.cfg.Connectivity.HostAddresses {
		if ip := net.ParseIP(h); ip != nil {
			ips = appendIP(ips, ip)
		} else if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	if b.cfg.Connectivity.DetectIPv4Addresses {
		for _, ip := range hostIPv4s() {
			ips = appendIP(ips, ip)
		}
	}
	return dns, ips
}

func appendIP(ips []net.IP, ip net.IP) []net.IP {
	for _, have := range ips {
		if have.Equal(ip) {
			return ips
		}
	}
	return append(ips, ip)
}

// hostIPv4s lists the machine's non-loopback, non-link-local IPv4 addresses.
func hostIPv4s() []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []net.IP
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := n.IP.To4()
		if ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, ip)
	}
	return out
}

func ipStringers(ips []net.IP) []fmt.Stringer {
	out := make([]fmt.Stringer, len(ips))
	for i, ip := range ips {
		out[i] = ip
	}
	return out
}
