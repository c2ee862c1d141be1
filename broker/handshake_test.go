package broker

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ggbroker/ggbroker/certs"
)

// TestHandshakeFailuresSayWhat: a failed TLS handshake on the MQTT listener is counted by kind; a TCP
// probe (health check, port scan) is logged at debug, not warn; a client that does not trust the
// server's certificate is told apart from a client whose certificate is refused (issue 18: every probe
// was a warning, and the wrong CA file showed as "bad record MAC").
func TestHandshakeFailuresSayWhat(t *testing.T) {
	ca, err := certs.NewAuthority(certs.AuthorityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewAuthority(certs.AuthorityOptions{CommonName: "another CA"})
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(certs.ServerCertRequest{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	clientPEM, keyPEM, _, err := other.IssueClient("sensor-1", certs.ECDSAP256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.X509KeyPair(clientPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}

	core, logs := observer.New(zapcore.DebugLevel)
	var mu sync.Mutex
	counted := map[string]int{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAnyClientCert, Certificates: []tls.Certificate{*serverCert}}
	l := newTLSListener("mqtts", ln, serverCfg, listenerOptions{handshakeTimeout: 2 * time.Second, maxPending: 100, log: zap.New(core),
		events: &metrics{}, handshakeFailed: func(kind string) { mu.Lock(); counted[kind]++; mu.Unlock() }})
	go l.Serve(func(string, net.Conn) error { return nil })
	defer l.Close(func(string) {})

	cases := []struct {
		name  string
		dial  func() error
		kind  string
		level zapcore.Level
		say   string
	}{
		{"TCP probe", func() error {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err == nil {
				c.Close()
			}
			return err
		}, failureProbe, zapcore.DebugLevel, "health check"},
		{"wrong CA file", func() error {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: other.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{clientCert}})
			if err == nil {
				c.Close()
			}
			return nil
		}, failureServerNotTrusted, zapcore.WarnLevel, "the client does not trust this server's certificate"},
		{"no client certificate", func() error {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
			if err == nil {
				_, _ = c.Read(make([]byte, 1)) // TLS 1.3: the server's refusal arrives after the client's Finished
				c.Close()
			}
			return nil
		}, failureNoClientCert, zapcore.WarnLevel, "sent no certificate"},
		{"not TLS", func() error {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err == nil {
				_, _ = c.Write([]byte("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")) // a plain MQTT CONNECT
				_, _ = c.Read(make([]byte, 1))
				c.Close()
			}
			return err
		}, failureOther, zapcore.WarnLevel, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := logs.Len()
			if err := tc.dial(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for logs.Len() == before && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			all := logs.All()
			if len(all) != before+1 {
				t.Fatalf("%d records, want one", len(all)-before)
			}
			rec := all[before]
			ctx := rec.ContextMap()
			if ctx["failure"] != tc.kind || rec.Level != tc.level || !strings.Contains(ctx["details"].(string), tc.say) {
				t.Fatalf("record %s %v, want kind %s at %s saying %q", rec.Level, ctx, tc.kind, tc.level, tc.say)
			}
			mu.Lock()
			n := counted[tc.kind]
			mu.Unlock()
			if n != 1 {
				t.Fatalf("%s counted %d times", tc.kind, n)
			}
		})
	}
}
