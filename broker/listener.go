package broker

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// tlsListener is a mochi listener for MQTT over mutual TLS (or, with a nil tls.Config, plain TCP: the
// loopback local listener). mochi's own TCP listener does the TLS
// handshake lazily inside the client's first read, with no deadline, and stops serving for good on the
// first Accept error; this one finishes the handshake (bounded by a timeout) before handing the
// connection to mochi, logs handshake failures once each, bounds the wait for CONNECT, and keeps
// accepting after temporary errors such as EMFILE.
type tlsListener struct {
	id               string
	ln               net.Listener
	tlsConfig        *tls.Config
	handshakeTimeout time.Duration
	log              *zap.Logger
	events           Events
	// handshakeFailed counts a failed TLS handshake by kind (handshakeFailure); nil counts nothing.
	handshakeFailed func(kind string)
	// maxPending caps the connections between accept and CONNECT; pending holds them (the conn given
	// to mochi -> struct{}) until the hook's OnConnect or the end of the connection releases them.
	maxPending   int64
	pending      sync.Map
	pendingCount atomic.Int64
	refusedAt    sync.Map // reason -> *atomic.Int64: unix second of its last refusal record (one a second at most)

	closed atomic.Bool
	once   sync.Once
}

var _ listeners.Listener = (*tlsListener)(nil)

// listenerOptions are what every tlsListener shares.
type listenerOptions struct {
	handshakeTimeout time.Duration
	maxPending       int64
	log              *zap.Logger
	events           Events
	// handshakeFailed counts a failed TLS handshake by kind; nil counts nothing.
	handshakeFailed func(kind string)
}

func newTLSListener(id string, ln net.Listener, cfg *tls.Config, o listenerOptions) *tlsListener {
	return &tlsListener{id: id, ln: ln, tlsConfig: cfg, handshakeTimeout: o.handshakeTimeout, log: o.log,
		events: o.events, maxPending: o.maxPending, handshakeFailed: o.handshakeFailed}
}

func (l *tlsListener) ID() string      { return l.id }
func (l *tlsListener) Address() string { return l.ln.Addr().String() }
func (l *tlsListener) Protocol() string {
	if l.tlsConfig == nil {
		return "mqtt"
	}
	return "mqtts"
}
func (l *tlsListener) Init(*slog.Logger) error { return nil } // bound in New, so the address is known early

// Serve accepts connections until Close.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Accept errors such as EMFILE are temporary: wait and retry instead of giving up the port.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", zap.String("listener", l.id), zap.Error(err), zap.Duration("retryIn", backoff))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if l.pendingCount.Load() >= l.maxPending {
			l.refuse(conn, "TOO_MANY_PENDING", "limits.maxPendingConnections reached: too many connections have not finished TLS and CONNECT")
			continue
		}
		l.pendingCount.Add(1)
		go l.handle(conn, establish)
	}
}

// refuse closes a connection the broker cannot take, counts it, and logs at most one record a second.
func (l *tlsListener) refuse(conn net.Conn, reason, details string) {
	_ = conn.Close()
	l.refused(conn, reason, details)
}

// refused counts a refused connection and logs at most one record a second.
func (l *tlsListener) refused(conn net.Conn, reason, details string) {
	l.events.Refused(reason)
	at, _ := l.refusedAt.LoadOrStore(reason, new(atomic.Int64))
	if now := time.Now().Unix(); at.(*atomic.Int64).Swap(now) != now {
		ip, port := splitAddr(conn.RemoteAddr())
		l.log.Warn("connection refused", zap.String("eventType", "Connect"), zap.String("status", "Failure"),
			zap.String("listener", l.id), zap.String("sourceIp", ip), zap.Int("sourcePort", port),
			zap.String("reason", reason), zap.String("details", details))
	}
}

// connected releases a connection's pending place: its CONNECT has been read. It reports whether conn
// was this listener's.
func (l *tlsListener) connected(conn net.Conn) bool {
	if _, ok := l.pending.LoadAndDelete(conn); ok {
		l.pendingCount.Add(-1)
		return true
	}
	return false
}

func (l *tlsListener) handle(raw net.Conn, establish listeners.EstablishFn) {
	conn := raw
	if l.tlsConfig != nil {
		conn = newIdleTLSServer(raw, l.tlsConfig)
	}
	l.pending.Store(conn, struct{}{})
	defer l.connected(conn) // a connection that ends before its CONNECT releases its place too
	if l.tlsConfig == nil {
		// The local listener: plain TCP, with the same deadline for CONNECT.
		_ = raw.SetDeadline(time.Now().Add(l.handshakeTimeout))
		l.establish(establish, raw, raw)
		return
	}
	// One deadline covers the handshake and the CONNECT packet: mochi replaces it with the keep-alive
	// deadline once CONNECT is read, and without it a socket that sends nothing would stay open forever.
	_ = raw.SetDeadline(time.Now().Add(l.handshakeTimeout))
	if err := conn.(*idleTLSConn).Handshake(); err != nil {
		l.failedHandshake(raw, err)
		return
	}
	l.establish(establish, conn, raw)
}

// failedHandshake counts, logs and closes a connection whose TLS handshake failed. It is a function
// of its own so that handle's frame stays small: handle's goroutine serves the connection for its
// whole life, and an idle connection's stack shrinks only while its frames are small (idleconn.go).
//
//go:noinline
func (l *tlsListener) failedHandshake(raw net.Conn, err error) {
	kind, details := handshakeFailure(err)
	if l.handshakeFailed != nil {
		l.handshakeFailed(kind)
	}
	level := zap.WarnLevel
	if kind == failureProbe {
		level = zap.DebugLevel // health checks and port scanners: counted, not logged at warn
	}
	if ce := l.log.Check(level, "TLS handshake failed"); ce != nil {
		ip, port := splitAddr(raw.RemoteAddr())
		ce.Write(zap.String("eventType", "Connect"), zap.String("status", "Failure"),
			zap.String("sourceIp", ip), zap.Int("sourcePort", port),
			zap.String("reason", "TLS_HANDSHAKE_FAILED"), zap.String("details", details), zap.String("failure", kind))
	}
	_ = raw.Close()
}

// establish hands the connection to mochi for its life. A refusal at limits.maxConnections (mochi
// answers CONNACK "server busy" itself, with no hook) is logged and counted here.
func (l *tlsListener) establish(establish listeners.EstablishFn, conn, raw net.Conn) {
	if err := establish(l.id, conn); err != nil {
		l.ended(raw, err)
	}
}

// ended records how a connection ended, apart from establish for the same reason as failedHandshake.
//
//go:noinline
func (l *tlsListener) ended(raw net.Conn, err error) {
	switch {
	case errors.Is(err, packets.ErrServerBusy):
		l.refused(raw, "SERVER_BUSY", "limits.maxConnections reached")
	default:
		l.log.Debug("connection ended", zap.String("listener", l.id), zap.String("remote", raw.RemoteAddr().String()), zap.Error(err))
	}
}

// Kinds of failed TLS handshakes, the label of ggbroker_tls_handshake_failures_total.
const (
	// failureProbe: the peer closed (or reset) the connection without sending a TLS record: a TCP
	// health check or a port scan.
	failureProbe = "probe"
	// failureServerNotTrusted: the client refused the server's certificate, which it does when its CA
	// file is not the core device CA, or when it dialled a name the certificate does not carry.
	failureServerNotTrusted = "server-certificate-not-trusted"
	// failureNoClientCert: the client sent no certificate.
	failureNoClientCert = "no-client-certificate"
	// failureClientCert: the client's certificate was refused (untrusted, expired, not registered).
	failureClientCert = "client-certificate-refused"
	// failureTimeout: the handshake did not finish within mqtt.tlsHandshakeTimeout.
	failureTimeout = "timeout"
	// failureOther: anything else (not TLS, no common version or cipher suite ...).
	failureOther = "other"
)

// handshakeFailure sorts a handshake error into a kind and a sentence an operator can act on. A client
// that does not trust the server says so with an alert (bad_certificate, unknown_ca,
// certificate_unknown); OpenSSL-based clients (mosquitto_pub, paho-mqtt in Python) given the wrong CA
// file end TLS 1.3 handshakes in a way Go reports as "bad record MAC", which otherwise means a
// corrupted record, so that case is named for what it most likely is.
func handshakeFailure(err error) (kind, details string) {
	msg := err.Error()
	var netErr net.Error
	var verr *tls.CertificateVerificationError
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return failureProbe, "the connection closed before the TLS handshake began (" + msg + "): a TCP health check or port scan, or a client that gave up"
	case errors.As(err, &netErr) && netErr.Timeout():
		return failureTimeout, "the TLS handshake did not finish within mqtt.tlsHandshakeTimeout (" + msg + ")"
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate authority"),
		strings.Contains(msg, "certificate unknown"), strings.Contains(msg, "bad record MAC"):
		return failureServerNotTrusted, "the client does not trust this server's certificate: give it the core device CA (core-ca.pem, `ggbroker ca show`) as its CA file, and connect to a name the server certificate carries (connectivity.hostAddresses) (" + msg + ")"
	case strings.Contains(msg, "didn't provide a certificate"):
		return failureNoClientCert, "the client sent no certificate: MQTT devices connect with their device certificate and key (" + msg + ")"
	case errors.As(err, &verr), strings.Contains(msg, "x509:"):
		return failureClientCert, "the client's certificate was refused: " + msg
	}
	return failureOther, msg
}

// Close stops accepting and asks mochi to close this listener's clients.
func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		l.closed.Store(true)
		_ = l.ln.Close()
		closeClients(l.id)
	})
}

// splitAddr returns the IP and port of a TCP address, for log records.
func splitAddr(a net.Addr) (string, int) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String(), ta.Port
	}
	if a == nil {
		return "", 0
	}
	host, _, _ := net.SplitHostPort(a.String())
	return host, 0
}
