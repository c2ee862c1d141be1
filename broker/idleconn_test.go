package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ggbroker/ggbroker/certs"
)

// tlsRecords is a stream of TLS records with bodies of the given lengths, and where each one ends.
func tlsRecords(lengths ...int) (stream []byte, ends []int) {
	for i, n := range lengths {
		stream = append(stream, 23, 3, 3, byte(n>>8), byte(n))
		for j := range n {
			stream = append(stream, byte(i+j))
		}
		ends = append(ends, len(stream))
	}
	return stream, ends
}

// TestRecordConnStopsAtRecordEnds: whatever the chunks the socket delivers and the sizes the reader
// asks for, recordConn hands up every byte once, in order, and no Read crosses the end of a record,
// so crypto/tls above it never holds more than the record it is reading.
func TestRecordConnStopsAtRecordEnds(t *testing.T) {
	stream, ends := tlsRecords(0, 1, 300, 16384+256, 4, 0, 2000)
	for _, chunk := range []int{1, 3, 5, 7, 512, len(stream)} {
		for _, ask := range []int{1, 2, 5, 512, 20000} {
			a, b := net.Pipe()
			go func() {
				for rest := stream; len(rest) > 0; {
					n := min(chunk, len(rest))
					if _, err := a.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
				}
				a.Close()
			}()
			rc := &recordConn{Conn: b}
			var got []byte
			p := make([]byte, ask)
			for {
				n, err := rc.Read(p)
				start, end := len(got), len(got)+n
				for _, e := range ends {
					if start < e && end > e {
						t.Fatalf("chunks of %d, reads of %d: a read of [%d, %d) crosses the record end at %d", chunk, ask, start, end, e)
					}
				}
				got = append(got, p[:n]...)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, stream) {
				t.Fatalf("chunks of %d, reads of %d: got %d bytes, not the %d sent", chunk, ask, len(got), len(stream))
			}
			if !rc.atBoundary() {
				t.Errorf("chunks of %d, reads of %d: not at a record boundary after the last record", chunk, ask)
			}
			b.Close()
		}
	}
}

// TestRecordConnCloseGivesTheBufferBack: a connection closed with bytes still buffered (a device's
// close_notify after its DISCONNECT) gives its socket buffer back at Close, and one closed during a
// Read gives it back when that Read returns; a Read after Close fails.
func TestRecordConnCloseGivesTheBufferBack(t *testing.T) {
	stream, _ := tlsRecords(2, 2) // DISCONNECT's record, then close_notify's, in one write
	a, b := net.Pipe()
	go func() { _, _ = a.Write(stream) }()
	rc := &recordConn{Conn: b}
	p := make([]byte, 1024)
	if n, err := rc.Read(p); err != nil || n != recordHeaderLen+2 {
		t.Fatalf("first record: %d bytes, %v", n, err)
	}
	if rc.buf == nil {
		t.Fatal("the second record is not buffered: the test does not test what it says")
	}
	rc.Close()
	if rc.buf != nil {
		t.Fatal("Close kept the buffer of the unread record")
	}
	if _, err := rc.Read(p); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	a.Close()

	a, b = net.Pipe()
	defer a.Close()
	rc = &recordConn{Conn: b}
	done := make(chan error, 1)
	go func() { _, err := rc.Read(p); done <- err }()
	for rc.state.Load() != rcReading {
		time.Sleep(time.Millisecond)
	}
	rc.Close()
	if err := <-done; err == nil {
		t.Fatal("a Read blocked when the connection closed returned no error")
	}
	if rc.buf != nil {
		t.Fatal("the Read that Close interrupted kept the buffer")
	}
}

// TestIdleTLSConnWaitIdle: over a real TLS connection, WaitIdle returns at once whenever input is
// buffered anywhere below mochi (a second record already read from the socket, the rest of a record
// larger than the last Read), waits while there is none (until input, end of file or the read
// deadline), and never waits while input is there: that would stall the connection until its
// deadline, which is what each case would then see.
func TestIdleTLSConnWaitIdle(t *testing.T) {
	ca, err := certs.NewAuthority(certs.AuthorityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(certs.ServerCertRequest{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *idleTLSConn, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		c := newIdleTLSServer(raw, &tls.Config{Certificates: []tls.Certificate{*serverCert}})
		if err := c.Handshake(); err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.Fatal("accept or server handshake failed")
	}
	defer server.Close()

	wait := func(deadline time.Duration) error {
		t.Helper()
		_ = server.SetReadDeadline(time.Now().Add(deadline))
		return server.WaitIdle()
	}
	read := func(want []byte) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(server, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	buf := make([]byte, 2048)

	// Nothing sent: the wait ends at the read deadline with the error Read would give.
	if err := wait(100 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("WaitIdle with nothing to read: %v, want a deadline error", err)
	}

	// Two records in the socket at once: after the first is read, the second is buffered in
	// recordConn and the wait returns at once (without recordConn, crypto/tls would hold it and the
	// wait would sit on an empty socket until the deadline).
	for _, m := range []string{"first", "second"} {
		if _, err := client.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // both records in the server's socket before it reads
	if err := wait(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	n, err := server.Read(buf)
	if err != nil || string(buf[:n]) != "first" {
		t.Fatalf("read %q, %v; want the first record", buf[:n], err)
	}
	if err := wait(2 * time.Second); err != nil {
		t.Fatalf("WaitIdle with a record buffered: %v", err)
	}
	read([]byte("second"))

	// A record larger than the reader's buffer: the rest of its plaintext is in crypto/tls.
	big := bytes.Repeat([]byte("0123456789"), 1000)
	if _, err := client.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := wait(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n, err := server.Read(buf); err != nil || n != len(buf) {
		t.Fatalf("read %d, %v; want a full buffer", n, err)
	}
	if err := wait(2 * time.Second); err != nil {
		t.Fatalf("WaitIdle with plaintext left in crypto/tls: %v", err)
	}
	read(big[len(buf):])

	// Input that comes while it waits ends the wait.
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = client.Write([]byte("later"))
	}()
	if err := wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	read([]byte("later"))

	// The peer closing ends the wait; the read then sees the end.
	client.Close()
	if err := wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Read(buf); err == nil {
		t.Fatal("read after the peer closed: no error")
	}
}
