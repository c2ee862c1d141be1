package test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/auth"
	"github.com/ggbroker/ggbroker/config"
)

// coreIdentity is the core device's files for the core.* keys: its certificate and key as registered
// in the upstream, and the CA that verifies the upstream's server certificate.
type coreIdentity struct {
	thing, cert, key, ca string
}

// coreIdentity registers a thing and certificate for the core device in the upstream's registry
// (as `aws iot create-keys-and-certificate` would in AWS IoT Core), with the policies named (the
// default device policy if none), and returns its files.
func (h *harness) coreIdentity(thing string, policies ...string) coreIdentity {
	h.t.Helper()
	d := h.createDevice(thing, policies...)
	return coreIdentity{thing: thing, cert: filepath.Join(d.dir, auth.DeviceCertFile), key: filepath.Join(d.dir, auth.DeviceKeyFile),
		ca: filepath.Join(d.dir, auth.CoreCAFile)}
}

// setCore points the core.* keys at an upstream endpoint with the identity.
func setCore(cfg *config.Config, endpoint string, id coreIdentity) {
	cfg.Core.ThingName = id.thing
	cfg.Core.IoTDataEndpoint = endpoint
	cfg.Core.CertificateFilePath, cfg.Core.PrivateKeyPath, cfg.Core.RootCAPath = id.cert, id.key, id.ca
}

// setBridge sets keys of the bridge block (as the file would, lower-cased by viper), with short
// reconnect delays so tests do not wait for the defaults.
func setBridge(cfg *config.Config, kv map[string]any) {
	sec := map[string]any{}
	if old, ok := cfg.Sections["bridge"].(map[string]any); ok {
		for k, v := range old {
			sec[k] = v
		}
	}
	sec["minreconnectdelay"], sec["maxreconnectdelay"] = "20ms", "200ms"
	for k, v := range kv {
		sec[strings.ToLower(k)] = v
	}
	if cfg.Sections == nil {
		cfg.Sections = map[string]any{}
	}
	cfg.Sections["bridge"] = sec
}

// mapping is one bridge.mqttTopicMapping entry.
func mapping(topic, source, target, prefix string) map[string]any {
	return map[string]any{"topic": topic, "source": source, "target": target, "targetTopicPrefix": prefix}
}

// endpoint is the upstream address as the bridge is given it: localhost (the name in the broker's
// server certificate) and the port.
func upstreamEndpoint(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return "localhost:" + port
}

// received is a message with its flags.
type received struct {
	topic, payload string
	qos            byte
	retained       bool
}

func (r received) String() string { return r.topic + " " + r.payload }

// collectV3 subscribes at QoS 1 and returns every message with its flags.
func collectV3(t testing.TB, c pahov3.Client, filter string) <-chan received {
	t.Helper()
	got := make(chan received, 4096)
	tok := c.Subscribe(filter, 1, func(_ pahov3.Client, m pahov3.Message) {
		got <- received{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos(), retained: m.Retained()}
	})
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return got
}

// next waits for one message.
func next(t testing.TB, got <-chan received, what string) received {
	t.Helper()
	select {
	case m := <-got:
		return m
	case <-time.After(waitFor):
		t.Fatalf("did not receive %s", what)
	}
	return received{}
}

// expectNone checks that nothing arrives on got before the marker does, which pub publishes to
// markerTopic (collected on marker) after everything else.
func expectNone(t testing.TB, got <-chan received, marker <-chan received, pub pahov3.Client, markerTopic string) {
	t.Helper()
	publishV3(t, pub, markerTopic, 1, false, "marker")
	m := next(t, marker, "the marker")
	if m.payload != "marker" {
		t.Fatalf("marker channel got %v", m)
	}
	select {
	case m := <-got:
		t.Fatalf("received %v, want nothing", m)
	default:
	}
}

// publishMany publishes n QoS 1 messages "0".."n-1" on topic, pipelined, and waits for every PUBACK.
func publishMany(t testing.TB, c pahov3.Client, topic string, n int) {
	t.Helper()
	toks := make([]pahov3.Token, n)
	for i := range n {
		toks[i] = c.Publish(topic, 1, false, fmt.Sprint(i))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(waitFor*3) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
}

// expectInOrder reads n messages "0".."n-1" from got. Duplicates of messages already seen are allowed
// (QoS 1 is at least once: what was in flight when a connection broke is sent again), going back is not.
func expectInOrder(t testing.TB, got <-chan received, topic string, from, n int) {
	t.Helper()
	want := from
	deadline := time.After(4 * waitFor)
	for want < from+n {
		select {
		case m := <-got:
			if m.topic != topic {
				t.Fatalf("message on %s, want %s", m.topic, topic)
			}
			var v int
			fmt.Sscan(m.payload, &v)
			switch {
			case v == want:
				want++
			case v < want:
				// a redelivery
			default:
				t.Fatalf("received %d, want %d: lost or out of order", v, want)
			}
		case <-deadline:
			t.Fatalf("received %d of %d messages", want-from, n)
		}
	}
}

// outage is a TCP relay between the bridge and its upstream that the test can cut and restore: a
// network outage as the bridge sees it, while the upstream and its subscribers stay up.
type outage struct {
	t      testing.TB
	addr   string // the relay's address, the bridge's endpoint
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

// newOutage starts a relay to target, up.
func newOutage(t testing.TB, target string) *outage {
	t.Helper()
	o := &outage{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.addr = ln.Addr().String()
	o.serve(ln)
	t.Cleanup(o.cut)
	return o
}

func (o *outage) serve(ln net.Listener) {
	o.mu.Lock()
	o.ln = ln
	o.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", o.target)
			if err != nil {
				c.Close()
				continue
			}
			o.mu.Lock()
			o.conns = append(o.conns, c, u)
			o.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// cut closes the relay and every connection through it: connects are refused until restore.
func (o *outage) cut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln != nil {
		o.ln.Close()
		o.ln = nil
	}
	for _, c := range o.conns {
		c.Close()
	}
	o.conns = nil
}

// restore listens again on the same address.
func (o *outage) restore() {
	o.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", o.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		o.t.Fatalf("relay: listen again on %s: %v", o.addr, err)
	}
	o.serve(ln)
}

// bridgeDeviceTLS is a client device's TLS configuration from the files `ggbroker device create` wrote.
func bridgeDeviceTLS(t testing.TB, dir string) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, auth.DeviceCertFile), filepath.Join(dir, auth.DeviceKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, auth.CoreCAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal(errors.New("no CA in core-ca.pem"))
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// connectFiles connects over MQTT 3.1.1 to addr with a device's files.
func connectFiles(t testing.TB, addr, clientID string, tc *tls.Config, clean bool) pahov3.Client {
	t.Helper()
	o := pahov3.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(clientID).SetTLSConfig(tc).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(waitFor).
		SetKeepAlive(30 * time.Second).SetCleanSession(clean).SetOrderMatters(true)
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", clientID, addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// waitALittle paces a poll of something the broker writes about once a second.
func waitALittle() { time.Sleep(50 * time.Millisecond) }
