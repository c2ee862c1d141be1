package discovery

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// NewListener wraps ln so that every accepted connection is served over TLS with cfg, the handshake
// bounded by handshakeTimeout.
//
// The connections are deliberately not *tls.Conn: net/http closes a TLS connection whose negotiated ALPN
// protocol has no TLSNextProto handler without reading a byte, and the AWS IoT Device SDKs negotiate
// x-amzn-http-ca, which is plain HTTP/1.1 underneath. Serve them with an http.Server whose ConnContext is
// ConnContext, so handlers see the TLS state in Request.TLS.
func NewListener(ln net.Listener, cfg *tls.Config, handshakeTimeout time.Duration) net.Listener {
	return &tlsListener{Listener: ln, cfg: cfg, timeout: handshakeTimeout}
}

type tlsListener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &serverConn{Conn: tls.Server(c, l.cfg), timeout: l.timeout}, nil
}

// serverConn hides the *tls.Conn from net/http's type check (see NewListener).
type serverConn struct {
	*tls.Conn
	timeout time.Duration
}

// ConnectionState finishes the handshake first. net/http asks a connection that is not a *tls.Conn for
// its state before it reads the request (which is when the handshake would happen by itself); a failed
// handshake leaves an empty state, and the error ends the connection at the first read.
func (c *serverConn) ConnectionState() tls.ConnectionState {
	if c.timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(c.timeout))
	}
	err := c.Handshake()
	if c.timeout > 0 && err == nil {
		_ = c.SetDeadline(time.Time{})
	}
	return c.Conn.ConnectionState()
}

type tlsConnKey struct{}

// ConnContext is the http.Server.ConnContext that goes with NewListener.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if sc, ok := c.(*serverConn); ok {
		return context.WithValue(ctx, tlsConnKey{}, sc.Conn)
	}
	return ctx
}

// withTLSState fills Request.TLS for connections from NewListener if net/http did not (it does so for
// connections that have a ConnectionState method in Go 1.26, but does not document it).
func withTLSState(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if c, ok := r.Context().Value(tlsConnKey{}).(*tls.Conn); ok {
				st := c.ConnectionState()
				r.TLS = &st
			}
		}
		next.ServeHTTP(w, r)
	})
}
