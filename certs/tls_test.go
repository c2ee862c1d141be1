package certs

import (
	"bufio"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// TestRotatorTLSHandshake shows what rotation is for: after Rotate the next
// handshake gets the new certificate while an established connection, made
// with the old one, keeps working.
func TestRotatorTLSHandshake(t *testing.T) {
	ca := newTestCA(t)
	r, err := NewRotator(RotatorConfig{
		Authority: func() *Authority { return ca },
		SANs:      func() ([]string, []net.IP) { return []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)} },
	})
	if err != nil {
		t.Fatal(err)
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo lines
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()

	dial := func() *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	echo := func(c *tls.Conn, msg string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			t.Fatalf("write: %v", err)
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != msg+"\n" {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
	}

	c1 := dial()
	echo(c1, "before")
	serial1 := c1.ConnectionState().PeerCertificates[0].SerialNumber
	if serial1.Cmp(r.Current().SerialNumber) != 0 {
		t.Fatalf("first handshake served serial %v, want %v", serial1, r.Current().SerialNumber)
	}

	if err := r.Rotate("forced"); err != nil {
		t.Fatal(err)
	}

	c2 := dial()
	serial2 := c2.ConnectionState().PeerCertificates[0].SerialNumber
	if serial2.Cmp(serial1) == 0 || serial2.Cmp(r.Current().SerialNumber) != 0 {
		t.Errorf("second handshake served serial %v, want the new %v (old %v)", serial2, r.Current().SerialNumber, serial1)
	}
	echo(c2, "new")
	echo(c1, "old connection still works")
}
