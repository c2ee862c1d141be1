package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
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

	closed atomic.Bool
	once   sync.Once
}

var _ listeners.Listener = (*tlsListener)(nil)

func newTLSListener(id string, ln net.Listener, cfg *tls.Config, handshakeTimeout time.Duration, log *zap.Logger) *tlsListener {
	return &tlsListener{id: id, ln: ln, tlsConfig: cfg, handshakeTimeout: handshakeTimeout, log: log}
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
		go l.handle(conn, establish)
	}
}

func (l *tlsListener) handle(raw net.Conn, establish listeners.EstablishFn) {
	if l.tlsConfig == nil {
		// The local listener: plain TCP, with the same deadline for CONNECT.
		_ = raw.SetDeadline(time.Now().Add(l.handshakeTimeout))
		if err := establish(l.id, raw); err != nil {
			l.log.Debug("connection ended", zap.String("listener", l.id), zap.String("remote", raw.RemoteAddr().String()), zap.Error(err))
		}
		return
	}
	conn := tls.Server(raw, l.tlsConfig)
	// One deadline covers the handshake and the CONNECT packet: mochi replaces it with the keep-alive
	// deadline once CONNECT is read, and without it a socket that sends nothing would stay open forever.
	_ = raw.SetDeadline(time.Now().Add(l.handshakeTimeout))
	if err := conn.Handshake(); err != nil {
		ip, port := splitAddr(raw.RemoteAddr())
		l.log.Warn("TLS handshake failed",
			zap.String("eventType", "Connect"), zap.String("status", "Failure"),
			zap.String("sourceIp", ip), zap.Int("sourcePort", port),
			zap.String("reason", "TLS_HANDSHAKE_FAILED"), zap.String("details", err.Error()))
		_ = raw.Close()
		return
	}
	if err := establish(l.id, conn); err != nil {
		l.log.Debug("connection ended", zap.String("listener", l.id), zap.String("remote", raw.RemoteAddr().String()), zap.Error(err))
	}
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
