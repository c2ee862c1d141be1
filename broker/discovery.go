package broker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/discovery"
	"github.com/ggbroker/ggbroker/state"
)

// detectInterval is how often IP detection looks at the interfaces: the rotator's check interval, so
// an address change reaches the certificate as fast as it did when the rotator detected addresses itself.
const detectInterval = time.Minute

// discoveryParts is the discovery side of the broker: the connectivity information (which the MQTT server
// certificate's names come from too), the discovery server certificate and the HTTPS listeners.
type discoveryParts struct {
	conn       *discovery.Connectivity
	authz      discovery.Authorizer
	ifaceAddrs func() ([]discovery.InterfaceAddr, error)

	rotator    *certs.Rotator // nil when discovery is off
	ln, alpnLn net.Listener
	servers    []*http.Server
}

// WithDiscoveryAuthorizer sets who may call greengrass:Discover for which thing (default
// discovery.AllowAll).
func WithDiscoveryAuthorizer(a discovery.Authorizer) Option {
	return func(b *Broker) { b.disc.authz = a }
}

// WithInterfaceAddrs replaces the machine's interface addresses that IP detection reads (for tests).
func WithInterfaceAddrs(list func() ([]discovery.InterfaceAddr, error)) Option {
	return func(b *Broker) { b.disc.ifaceAddrs = list }
}

// newConnectivity builds the connectivity information from the config and runs a first detection.
func (b *Broker) newConnectivity() {
	c := b.cfg.Connectivity
	endpoints := make([]discovery.Endpoint, len(c.Endpoints))
	for i, e := range c.Endpoints {
		endpoints[i] = discovery.Endpoint{ID: e.ID, HostAddress: e.HostAddress, PortNumber: e.PortNumber, Metadata: e.Metadata}
	}
	d := c.IPDetector
	conn, err := discovery.NewConnectivity(discovery.ConnectivityConfig{
		HostAddresses: c.HostAddresses,
		Endpoints:     endpoints,
		Detect:        c.DetectIPv4Addresses,
		Detector: discovery.DetectorFlags{
			IncludeIPv4Addrs: d.IncludeIPv4Addrs, IncludeIPv6Addrs: d.IncludeIPv6Addrs,
			IncludeIPv4LoopbackAddrs: d.IncludeIPv4LoopbackAddrs, IncludeIPv6LoopbackAddrs: d.IncludeIPv6LoopbackAddrs,
			IncludeIPv4LinkLocalAddrs: d.IncludeIPv4LinkLocalAddrs, IncludeIPv6LinkLocalAddrs: d.IncludeIPv6LinkLocalAddrs,
			DefaultPort: d.DefaultPort,
		},
		MQTTPort:       b.mqttPort,
		InterfaceAddrs: b.disc.ifaceAddrs,
	})
	if err != nil {
		b.log.Warn("IP detection failed; going on without detected addresses", zap.Error(err))
	}
	b.disc.conn = conn
	b.useAPIConnectivity()
}

// useAPIConnectivity makes the core's connectivity information set through the Greengrass API
// (UpdateConnectivityInfo, kept in the state directory) the manual entries, in place of
// connectivity.endpoints, and reports whether that changed them.
func (b *Broker) useAPIConnectivity() bool {
	info, _, found, err := b.state.Greengrass.Connectivity(b.cfg.Core.ThingName)
	if err != nil {
		b.log.Error("connectivity information set through the API not read; connectivity.endpoints stay", zap.Error(err))
		return false
	}
	if !found {
		return false
	}
	endpoints := make([]discovery.Endpoint, len(info))
	for i, e := range info {
		endpoints[i] = discovery.Endpoint{ID: e.ID, HostAddress: e.HostAddress, PortNumber: e.PortNumber, Metadata: e.Metadata}
	}
	return b.disc.conn.SetManual(endpoints)
}

// watchAPIConnectivity applies UpdateConnectivityInfo for this core as soon as it is stored: the
// discovery answer and, through connectivityChanged, the server certificates' names (a device told to
// connect to a new host address must find it in the certificate), until ctx ends.
func (b *Broker) watchAPIConnectivity(ctx context.Context, wg *sync.WaitGroup) {
	stop := b.state.Greengrass.OnConnectivityChange(func(core string) {
		if core == b.cfg.Core.ThingName && b.useAPIConnectivity() {
			b.connectivityChanged()
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		stop()
	})
}

// serverSANs are the MQTT server certificate's names: see discovery.Connectivity.SANs.
func (b *Broker) serverSANs() ([]string, []net.IP) { return b.disc.conn.SANs() }

// mqttPort is the port the MQTT listener is bound to.
func (b *Broker) mqttPort() int {
	if b.mqttLn == nil {
		return 0
	}
	if a, ok := b.mqttLn.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// setupDiscovery issues (or reloads) the discovery server certificate and binds the discovery
// listeners. It runs after the MQTT listener is bound, whose port the connectivity entries may report.
func (b *Broker) setupDiscovery() error {
	if p := b.cfg.Connectivity.IPDetector.DefaultPort; b.cfg.Connectivity.DetectIPv4Addresses && p != 0 && p != b.mqttPort() {
		b.log.Warn("connectivity.ipDetector.defaultPort differs from the MQTT listener's port: discovery sends devices to defaultPort (set it to 0 to report the listener's port)",
			zap.Int("defaultPort", p), zap.Int("mqttPort", b.mqttPort()))
	}
	d := b.cfg.Discovery
	if !d.Enabled {
		return nil
	}
	st := b.state
	certPath, keyPath := st.ListenerCertPaths("discovery")
	var err error
	b.disc.rotator, err = certs.NewRotator(certs.RotatorConfig{
		Authority:  func() *certs.Authority { return st.CoreCA },
		SANs:       func() ([]string, []net.IP) { return b.disc.conn.SANs(b.cfg.DiscoveryHostNames()...) },
		CommonName: "ggbroker discovery",
		Validity:   b.cfg.ServerCertificateValidity(),
		KeyType:    state.KeyTypeOf(st.CoreCA.Cert),
		Disabled:   b.cfg.ClientDeviceAuth.Certificates.DisableCertificateRotation,
		CertPath:   certPath,
		KeyPath:    keyPath,
		OnRotate:   b.onDiscoveryRotate,
		OnError:    func(err error) { b.log.Error("discovery server certificate rotation failed", zap.Error(err)) },
	})
	if err != nil {
		return fmt.Errorf("discovery server certificate: %w", err)
	}
	if b.disc.ln, err = net.Listen("tcp", d.Listen); err != nil {
		return fmt.Errorf("discovery.listen %s: %w", d.Listen, err)
	}
	if d.ALPNListen != "" {
		if b.disc.alpnLn, err = net.Listen("tcp", d.ALPNListen); err != nil {
			b.disc.ln.Close()
			return fmt.Errorf("discovery.alpnListen %s: %w", d.ALPNListen, err)
		}
	}
	return nil
}

// startDiscovery runs IP detection (always: the MQTT certificate's names depend on it) and, when
// discovery is on, the discovery certificate's rotation and the HTTPS listeners.
func (b *Broker) startDiscovery(ctx context.Context, wg *sync.WaitGroup) {
	b.watchAPIConnectivity(ctx, wg)
	wg.Go(func() {
		b.disc.conn.Run(ctx, detectInterval, b.connectivityChanged, func(err error) {
			b.log.Warn("IP detection failed; keeping the last detected addresses", zap.Error(err))
		})
	})
	if b.disc.rotator == nil {
		return
	}
	wg.Go(func() { b.disc.rotator.Run(ctx) })
	st := b.state
	srv := &discovery.Server{
		Core:          discovery.CoreDevice{ThingName: b.cfg.Core.ThingName, Region: b.cfg.Core.Region, AccountID: b.cfg.Core.AccountID},
		Registry:      st.Registry,
		Authenticator: auth.NewAuthenticator(st.Registry, st.TrustedDeviceCAs, nil),
		CoreCA:        func() *certs.Authority { return st.CoreCA },
		Connectivity:  b.disc.conn,
		ClientDevices: b.cfg.Discovery.ClientDevices,
		Associated:    func(thing string) (bool, error) { return st.Greengrass.Associated(b.cfg.Core.ThingName, thing) },
		Authorizer:    b.disc.authz,
		Log:           b.log,
	}
	if b.svc.device != nil {
		srv.Device = b.serveDevice // the device services' HTTPS APIs, on the same mutual-TLS listener
	}
	// net/http's own complaints (handshake errors) are at debug level: refusals have their own record.
	errLog, _ := zap.NewStdLogAt(b.log.Named("discovery.http"), zapcore.DebugLevel)
	serve := func(ln net.Listener, protos []string) {
		hs := srv.HTTPServer(b.cfg.MQTT.TLSHandshakeTimeout, errLog)
		b.disc.servers = append(b.disc.servers, hs)
		wg.Go(func() {
			tl := discovery.NewListener(ln, srv.TLSConfig(b.disc.rotator.GetCertificate, protos), b.cfg.MQTT.TLSHandshakeTimeout)
			if err := hs.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.log.Error("discovery listener failed", zap.String("listen", ln.Addr().String()), zap.Error(err))
			}
		})
	}
	// The AWS IoT Device SDKs call 8443 without ALPN and 443 with x-amzn-http-ca
	// (greengrass-v2/greengrass-discover-api.md): the main listener takes both.
	serve(b.disc.ln, []string{discovery.ALPNProtocol, "http/1.1"})
	if b.disc.alpnLn != nil {
		serve(b.disc.alpnLn, []string{discovery.ALPNProtocol})
	}
}

// stopDiscovery closes the discovery listeners, letting requests in flight finish.
func (b *Broker) stopDiscovery() {
	for _, hs := range b.disc.servers {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
	}
}

// discoveryFields describe the discovery side in the "serving" record.
func (b *Broker) discoveryFields() []zap.Field {
	fields := []zap.Field{zap.Any("connectivity", b.disc.conn.Endpoints())}
	if a := b.DiscoveryAddr(); a != nil {
		fields = append(fields, zap.String("discovery", a.String()))
	}
	if a := b.DiscoveryALPNAddr(); a != nil {
		fields = append(fields, zap.String("discoveryAlpn", a.String()))
	}
	return fields
}

// connectivityChanged re-checks both server certificates after IP detection saw a change: the rotators
// ask the connectivity for their names, see new ones and re-issue (hot, or as rotationMode says).
func (b *Broker) connectivityChanged() {
	b.log.Info("connectivity changed", zap.Any("connectivity", b.disc.conn.Endpoints()))
	if _, err := b.rotator.Check(); err != nil {
		b.log.Error("server certificate rotation failed", zap.Error(err))
	}
	if b.disc.rotator != nil {
		if _, err := b.disc.rotator.Check(); err != nil {
			b.log.Error("discovery server certificate rotation failed", zap.Error(err))
		}
	}
}

// RefreshConnectivity runs IP detection now; on a change the server certificates are re-issued before
// it returns. Run does this every minute.
func (b *Broker) RefreshConnectivity() error {
	changed, err := b.disc.conn.Refresh()
	if changed {
		b.connectivityChanged()
	}
	return err
}

// Connectivity is the connectivity information discovery hands out now.
func (b *Broker) Connectivity() []discovery.Endpoint { return b.disc.conn.Endpoints() }

// DiscoveryAddr is the discovery listener's address, nil when discovery is off.
func (b *Broker) DiscoveryAddr() net.Addr {
	if b.disc.ln == nil {
		return nil
	}
	return b.disc.ln.Addr()
}

// DiscoveryALPNAddr is the address of the discovery listener that offers ALPN x-amzn-http-ca, nil
// when it is off.
func (b *Broker) DiscoveryALPNAddr() net.Addr {
	if b.disc.alpnLn == nil {
		return nil
	}
	return b.disc.alpnLn.Addr()
}

// DiscoveryCertificate is the discovery server certificate the next handshake gets, nil when
// discovery is off.
func (b *Broker) DiscoveryCertificate() *x509.Certificate {
	if b.disc.rotator == nil {
		return nil
	}
	return b.disc.rotator.Current()
}

// rotateDiscovery is Rotate's half for the discovery certificate.
func (b *Broker) rotateDiscovery(reason string) error {
	if b.disc.rotator == nil {
		return nil
	}
	return b.disc.rotator.Rotate(reason)
}

func (b *Broker) onDiscoveryRotate(ev certs.RotationEvent) {
	b.log.Info("discovery server certificate issued", rotationFields(ev)...)
}
