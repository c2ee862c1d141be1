package advisor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// endpoint is the test endpoint: a TCP listener whose connections go to the test case that is
// running, and are closed at once (the TLS connection is refused) when none is, as Device Advisor
// "denies the TLS connection before and after each test run" (DA-TS).
type endpoint struct {
	ln net.Listener

	mu      sync.Mutex
	current chan net.Conn // nil between test cases
	refused int
}

func newEndpoint(ln net.Listener) *endpoint {
	e := &endpoint{ln: ln}
	go e.serve()
	return e
}

func (e *endpoint) serve() {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		e.mu.Lock()
		ch := e.current
		if ch == nil {
			e.refused++
		}
		e.mu.Unlock()
		if ch == nil {
			c.Close()
			continue
		}
		select {
		case ch <- c:
		default:
			c.Close() // the case is not taking connections this fast
		}
	}
}

// open starts handing connections to a test case.
func (e *endpoint) open() <-chan net.Conn {
	ch := make(chan net.Conn, 16)
	e.mu.Lock()
	e.current = ch
	e.mu.Unlock()
	return ch
}

// shut stops handing out connections and closes those the case did not take.
func (e *endpoint) shut() {
	e.mu.Lock()
	ch := e.current
	e.current = nil
	e.mu.Unlock()
	if ch == nil {
		return
	}
	for {
		select {
		case c := <-ch:
			c.Close()
		default:
			return
		}
	}
}

func (e *endpoint) refusedCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refused
}

// errNotDevice is a handshake refused because the client certificate is not an ACTIVE certificate of
// the thing under test.
type errNotDevice struct{ reason string }

func (e *errNotDevice) Error() string { return e.reason }

// serverTLS is the TLS configuration one handshake of a test case uses: the given certificate, and
// a client certificate that must be one of the thing's ACTIVE certificates.
func (r *run) serverTLS(cert *tls.Certificate, onHello func(*tls.ClientHelloInfo)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Records at the full 2^14-byte plaintext size from the first byte, so
		// TLS_Receive_Maximum_Size_Fragments sends maximum-size fragments (RFC 8446 §5.1).
		DynamicRecordSizingDisabled: true,
		ClientAuth:                  tls.RequireAnyClientCert,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if onHello != nil {
				onHello(hello)
			}
			return nil, nil
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil },
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return &errNotDevice{"the device sent no client certificate"}
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return &errNotDevice{fmt.Sprintf("the device's client certificate does not parse: %v", err)}
			}
			id := certs.Fingerprint(leaf)
			if !slices.Contains(r.deviceCerts, id) {
				return &errNotDevice{fmt.Sprintf("client certificate %s is not an ACTIVE certificate of thing %q", id[:12], r.opts.Thing)}
			}
			return nil
		},
	}
}

// handshakeOutcome classifies a failed server-side handshake.
type handshakeOutcome int

const (
	handshakeDone        handshakeOutcome = iota
	handshakeAlert                        // the device sent a TLS alert (it refused us, and said so)
	handshakeClosed                       // the device closed the connection without an alert
	handshakeNotDevice                    // the client certificate is not the device's
	handshakeServerError                  // anything else (timeout, bad ClientHello)
)

func classifyHandshake(err error) handshakeOutcome {
	var nd *errNotDevice
	var op *net.OpError
	switch {
	case err == nil:
		return handshakeDone
	case errors.As(err, &nd):
		return handshakeNotDevice
	case errors.As(err, &op) && op.Op == "remote error":
		return handshakeAlert
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return handshakeClosed
	}
	return handshakeServerError
}

// handshake runs the server side of a TLS handshake on a raw connection within the case's deadline.
func (tc *testCtx) handshake(ctx context.Context, raw net.Conn, cert *tls.Certificate, onHello func(*tls.ClientHelloInfo)) (*tls.Conn, error) {
	tc.track(raw)
	conn := tls.Server(raw, tc.run.serverTLS(cert, onHello))
	hctx, cancel := context.WithTimeout(ctx, tc.run.opts.HandshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

// accept waits for the device's next TCP connection to the endpoint.
func (tc *testCtx) accept(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-tc.conns:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// track remembers a connection so that it is closed when the case ends.
func (tc *testCtx) track(c net.Conn) {
	tc.mu.Lock()
	tc.open = append(tc.open, c)
	tc.mu.Unlock()
}

func (tc *testCtx) closeAll() {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, c := range tc.open {
		c.Close()
	}
	tc.open = nil
}
