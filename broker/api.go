package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/awsapi"
	"github.com/ggbroker/ggbroker/certs"
	"github.com/ggbroker/ggbroker/state"
)

// CredentialsFile is the AWS shared-credentials file in the state directory that holds the keys the
// API listener accepts (profile [ggbroker]).
const CredentialsFile = "credentials"

// apiParts is the AWS API listener (controlPlane): one HTTPS listener, its server certificate from the
// core device CA (rotated like the MQTT and discovery ones, so `--ca-bundle <stateDir>/ca/core-ca.pem`
// verifies it), and awsapi's router, which verifies SigV4 and routes by signing name to the services'
// routes (Host.HandleAPI).
type apiParts struct {
	router  *awsapi.Router // always made, so services register routes whether or not it is served
	rotator *certs.Rotator // nil when the listener is off
	ln      net.Listener
	server  *http.Server
}

// setupAPI reads (or writes, on first start) the credentials, issues or reloads the server certificate
// and binds controlPlane.listen.
func (b *Broker) setupAPI() error {
	cp := b.cfg.ControlPlane
	if !cp.Enabled {
		b.api.router = awsapi.NewRouter(nil, []string{b.cfg.Core.Region}, b.log.Named("api"))
		return nil
	}
	st := b.state
	credPath := filepath.Join(st.Dir, CredentialsFile)
	creds, created, err := awsapi.LoadOrCreateCredentials(credPath, awsapi.Credentials{AccessKeyID: cp.AccessKeyID, SecretAccessKey: cp.SecretAccessKey})
	if err != nil {
		return fmt.Errorf("controlPlane: %w", err)
	}
	if created {
		b.log.Info("API credentials written", zap.String("file", credPath), zap.String("accessKeyId", creds.AccessKeyID))
	}
	b.api.router = awsapi.NewRouter([]awsapi.Credentials{creds}, []string{b.cfg.Core.Region}, b.log.Named("api"))

	host, _, _ := net.SplitHostPort(cp.Listen)
	certPath, keyPath := st.ListenerCertPaths("api")
	b.api.rotator, err = certs.NewRotator(certs.RotatorConfig{
		Authority: func() *certs.Authority { return st.CoreCA },
		SANs: func() ([]string, []net.IP) {
			var extra []string
			if host != "" && host != "0.0.0.0" && host != "::" {
				extra = append(extra, host)
			}
			return b.disc.conn.SANs(extra...)
		},
		CommonName: "ggbroker api",
		Validity:   b.cfg.ServerCertificateValidity(),
		KeyType:    state.KeyTypeOf(st.CoreCA.Cert),
		Disabled:   b.cfg.ClientDeviceAuth.Certificates.DisableCertificateRotation,
		CertPath:   certPath,
		KeyPath:    keyPath,
		OnRotate:   func(ev certs.RotationEvent) { b.log.Info("API server certificate issued", rotationFields(ev)...) },
		OnError:    func(err error) { b.log.Error("API server certificate rotation failed", zap.Error(err)) },
	})
	if err != nil {
		return fmt.Errorf("API server certificate: %w", err)
	}
	if b.api.ln, err = net.Listen("tcp", cp.Listen); err != nil {
		return fmt.Errorf("controlPlane.listen %s: %w", cp.Listen, err)
	}
	return nil
}

// startAPI serves the API listener and runs its certificate's rotation until ctx ends.
func (b *Broker) startAPI(ctx context.Context, wg *sync.WaitGroup) {
	if b.api.ln == nil {
		return
	}
	wg.Go(func() { b.api.rotator.Run(ctx) })
	errLog, _ := zap.NewStdLogAt(b.log.Named("api.http"), zapcore.DebugLevel)
	b.api.server = &http.Server{
		Handler:           b.api.router,
		ReadHeaderTimeout: b.cfg.MQTT.TLSHandshakeTimeout,
		ReadTimeout:       30 * time.Second, // a body is at most awsapi.MaxBodyBytes: no slow drip holds a connection
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: b.api.rotator.GetCertificate,
		},
		// HTTP/1.1 only, as AWS' control-plane endpoints answer the SDKs: a graceful shutdown then
		// closes idle keep-alive connections at once instead of waiting out HTTP/2's GOAWAY.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	srv, ln := b.api.server, b.api.ln
	wg.Go(func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("API listener failed", zap.String("listen", ln.Addr().String()), zap.Error(err))
		}
	})
}

// stopAPI closes the API listener, letting requests in flight finish.
func (b *Broker) stopAPI() {
	if b.api.server == nil {
		return
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.api.server.Shutdown(sctx)
}

// handleAPI registers a service's route on the API router (Host.HandleAPI).
func (b *Broker) handleAPI(signingName, pattern string, h http.Handler) error {
	return b.api.router.Handle(signingName, pattern, h)
}

// rotateAPI is Rotate's part for the API certificate.
func (b *Broker) rotateAPI(reason string) error {
	if b.api.rotator == nil {
		return nil
	}
	return b.api.rotator.Rotate(reason)
}

// apiFields describe the API listener in the "serving" record.
func (b *Broker) apiFields() []zap.Field {
	if a := b.APIAddr(); a != nil {
		cred := filepath.Join(b.state.Dir, CredentialsFile)
		if abs, err := filepath.Abs(cred); err == nil {
			cred = abs // what AWS_SHARED_CREDENTIALS_FILE must say, from any directory
		}
		return []zap.Field{zap.String("api", a.String()), zap.String("apiCredentials", cred)}
	}
	return nil
}

// APIAddr is the AWS API listener's address, nil when controlPlane.enabled is false.
func (b *Broker) APIAddr() net.Addr {
	if b.api.ln == nil {
		return nil
	}
	return b.api.ln.Addr()
}

// APICertificate is the API server certificate the next handshake gets, nil when the listener is off.
func (b *Broker) APICertificate() *x509.Certificate {
	if b.api.rotator == nil {
		return nil
	}
	return b.api.rotator.Current()
}
