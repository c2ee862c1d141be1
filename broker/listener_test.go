package broker

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"go.uber.org/zap"
)

// flakyListener fails Accept with EMFILE a number of times, as a listener does under a connection
// flood that exhausts file descriptors, then hands out conns.
type flakyListener struct {
	failures atomic.Int32
	conns    chan net.Conn
	closed   chan struct{}
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *flakyListener) Close() error   { close(l.closed); return nil }
func (l *flakyListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestListenerSurvivesAcceptErrors: mochi's own TCP listener stops serving for good on the first
// Accept error; ours retries with back-off and serves the next connection.
func TestListenerSurvivesAcceptErrors(t *testing.T) {
	fl := &flakyListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	fl.failures.Store(5)
	l := newTLSListener("t", fl, nil, listenerOptions{handshakeTimeout: time.Second, maxPending: 10, log: zap.NewNop(), events: &metrics{}})
	established := make(chan string, 1)
	go l.Serve(func(id string, c net.Conn) error { established <- id; return c.Close() })
	defer l.Close(func(string) {})

	server, client := net.Pipe()
	defer client.Close()
	fl.conns <- server
	select {
	case id := <-established:
		if id != "t" {
			t.Fatalf("established on %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listener stopped serving after Accept errors")
	}
	if n := fl.failures.Load(); n >= 0 {
		t.Fatalf("%d Accept errors were not consumed", n+1)
	}
}

var _ listeners.Listener = (*tlsListener)(nil)

// TestListenerStopsOnClose: Close ends Serve (a closed listener is not retried).
func TestListenerStopsOnClose(t *testing.T) {
	fl := &flakyListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	l := newTLSListener("t", fl, nil, listenerOptions{handshakeTimeout: time.Second, maxPending: 10, log: zap.NewNop(), events: &metrics{}})
	done := make(chan struct{})
	go func() { l.Serve(func(string, net.Conn) error { return errors.New("unused") }); close(done) }()
	l.Close(func(string) {})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}
