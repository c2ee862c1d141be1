package test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/config"
)

// adminGet GETs an admin endpoint and returns the status code and body.
func (h *harness) adminGet(path string) (int, string) {
	h.t.Helper()
	resp, err := http.Get("http://" + h.broker.AdminAddr().String() + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metric returns the value of one sample of /metrics (name with its labels as Prometheus prints
// them), or -1 when there is none.
func (h *harness) metric(sample string) float64 {
	h.t.Helper()
	_, body := h.adminGet("/metrics")
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				h.t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return -1
}

// waitMetric polls /metrics until the sample satisfies ok.
func (h *harness) waitMetric(sample string, ok func(float64) bool) float64 {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		v := h.metric(sample)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("metric %s = %v", sample, v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdminReadyAndMetrics: /healthz, /readyz and /metrics answer, and the metrics count what
// happened: connects, refusals, policy decisions, messages, rotations, the certificate's expiry.
func TestAdminReadyAndMetrics(t *testing.T) {
	h := startBroker(t, nil)
	if code, body := h.adminGet("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	code, body := h.adminGet("/readyz")
	if code != http.StatusOK || !strings.Contains(body, `"ready": true`) || !strings.Contains(body, `"serverCertificate": "valid until`) {
		t.Fatalf("/readyz: %d %s", code, body)
	}

	d, other := h.createDevice("metrics-1"), h.createDevice("metrics-2")
	c := h.mustConnectV3(d)
	got := subscribeV3(t, c, "metrics-1/#", 1)
	publishV3(t, c, "metrics-1/t", 1, false, "x")
	expectMessage(t, got, "metrics-1/t x")
	if _, err := h.connectV3(other, "not-my-thing"); err == nil {
		t.Fatal("a client ID that is not the thing name connected")
	}

	h.waitMetric("ggbroker_connected_clients", func(v float64) bool { return v == 1 })
	h.waitMetric("ggbroker_connects_total", func(v float64) bool { return v >= 1 })
	h.waitMetric(`ggbroker_connect_refusals_total{reason="CLIENT_ID_NOT_ATTACHED_THING"}`, func(v float64) bool { return v == 1 })
	h.waitMetric(`ggbroker_policy_decisions_total{action="iot:Publish",result="allowed"}`, func(v float64) bool { return v >= 1 })
	h.waitMetric(`ggbroker_policy_decisions_total{action="iot:Receive",result="allowed"}`, func(v float64) bool { return v >= 1 })
	h.waitMetric("ggbroker_messages_received_total", func(v float64) bool { return v >= 1 })
	h.waitMetric("ggbroker_messages_sent_total", func(v float64) bool { return v >= 1 })
	h.waitMetric("ggbroker_received_bytes_total", func(v float64) bool { return v > 0 })
	want := float64(h.broker.ServerCertificate().NotAfter.Unix())
	if v := h.metric("ggbroker_server_certificate_expiry_timestamp_seconds"); v != want {
		t.Fatalf("certificate expiry metric %v, want %v", v, want)
	}
	if v := h.metric("ggbroker_server_certificate_rotations_total"); v != 0 {
		t.Fatalf("rotations before any: %v", v)
	}
	if resp := h.adminPost(t, "/rotate", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /rotate: %s", resp.Status)
	}
	h.waitMetric("ggbroker_server_certificate_rotations_total", func(v float64) bool { return v == 1 })
	if v := h.metric("ggbroker_server_certificate_expiry_timestamp_seconds"); v != float64(h.broker.ServerCertificate().NotAfter.Unix()) {
		t.Fatalf("certificate expiry metric %v after rotation", v)
	}
}

// TestReadyzFailsOnShortCertificate: a server certificate with an hour or less left makes /readyz
// answer 503 and say why (the validity is clamped to 60 s minimum, as Greengrass does).
func TestReadyzFailsOnShortCertificate(t *testing.T) {
	h := startBroker(t, func(c *config.Config) {
		c.ClientDeviceAuth.Certificates.ServerCertificateValiditySeconds = config.MinServerCertValiditySeconds
		c.ClientDeviceAuth.Certificates.DisableCertificateRotation = true
	})
	code, body := h.adminGet("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "serverCertificate") || !strings.Contains(body, "less than 1h0m0s") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
}

// TestBinaryHealthCommand: `ggbroker health` (the Dockerfile's HEALTHCHECK) exits 0 against a
// running broker and non-zero when nothing answers.
func TestBinaryHealthCommand(t *testing.T) {
	dir := t.TempDir()
	s := serve(t, dir)
	if out := run(t, dir, "health", "--admin-listen", s.admin); !strings.Contains(out, `"ready": true`) {
		t.Fatalf("health: %s", out)
	}
	s.terminate(t)
	if code, _ := exitCode(t, dir, "health", "--admin-listen", s.admin, "--timeout", "2s"); code == 0 {
		t.Fatal("health exited 0 with no broker running")
	}
}

// TestTLSWithoutConnectIsClosed: a client that finishes the TLS handshake and then sends no CONNECT
// is closed by the same deadline (mochi itself sets none before CONNECT).
func TestTLSWithoutConnectIsClosed(t *testing.T) {
	h := startBroker(t, func(c *config.Config) { c.MQTT.TLSHandshakeTimeout = 300 * time.Millisecond })
	d := h.createDevice("silent-tls")
	conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read on a TLS connection that sent no CONNECT: %v (want it closed by the broker)", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestBadInputClosesOnlyThatConnection: garbage instead of TLS, and malformed MQTT packets over a good
// TLS connection, close that connection only; a connected client keeps publishing and receiving.
func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	h := startBroker(t, nil)
	good, bad := h.createDevice("good-1"), h.createDevice("bad-1")
	c := h.mustConnectV3(good)
	got := subscribeV3(t, c, "good-1/#", 1)

	expectClosed := func(name string, conn net.Conn) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		if _, err := io.Copy(io.Discard, conn); err != nil && isTimeout(err) {
			t.Fatalf("%s: the broker did not close the connection", name)
		}
		publishV3(t, c, "good-1/after", 1, false, name)
		expectMessage(t, got, "good-1/after "+name)
	}

	// Garbage where a TLS ClientHello should be, and a TLS record header announcing a huge record.
	for name, junk := range map[string][]byte{
		"garbage": []byte(strings.Repeat("\x00\xff GET / HTTP/1.1\r\n", 100)),
		"record":  {0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x02},
	} {
		raw, err := net.Dial("tcp", h.addr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = raw.Write(junk)
		expectClosed("tls-"+name, raw)
		raw.Close()
	}

	// Malformed MQTT after a good handshake: a reserved packet type, a CONNECT with a wrong protocol
	// name, a remaining length that never ends, a CONNECT announcing more than it sends.
	for name, pkt := range map[string][]byte{
		"reserved-type":    {0xf0, 0x00},
		"bad-protocol":     append([]byte{0x10, 0x0e, 0x00, 0x04, 'X', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x1e, 0x00, 0x02}, "ab"...),
		"endless-length":   {0x10, 0xff, 0xff, 0xff, 0xff, 0xff},
		"connect-then-bad": nil,
	} {
		conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(bad, nil))
		if err != nil {
			t.Fatal(err)
		}
		if pkt == nil {
			// A valid CONNECT, then a PUBLISH whose topic length points past the packet.
			connect := append([]byte{0x10, byte(12 + len(bad.name)), 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x1e, 0x00, byte(len(bad.name))}, bad.name...)
			pkt = append(connect, 0x30, 0x04, 0x00, 0xff, 'a', 'b')
		}
		_, _ = conn.Write(pkt)
		expectClosed("mqtt-"+name, conn)
		conn.Close()
	}
}

// TestSlowSubscriberIsBounded: a subscriber that stops reading does not make the broker queue without
// bound: beyond limits.maxPendingWrites its QoS 0 messages are dropped and counted, and everyone else
// keeps working. With limits.slowSubscriber block, the publisher waits once (slowSubscriberWait) and
// the stalled subscriber's messages are then dropped without waiting.
func TestSlowSubscriberIsBounded(t *testing.T) {
	for _, mode := range []string{config.SlowSubscriberDrop, config.SlowSubscriberBlock} {
		t.Run(mode, func(t *testing.T) {
			testSlowSubscriberIsBounded(t, func(c *config.Config) {
				c.Limits.MaxPendingWrites = 16
				c.Limits.SlowSubscriber = mode
				c.Limits.SlowSubscriberWait = 200 * time.Millisecond
			})
		})
	}
}

func testSlowSubscriberIsBounded(t *testing.T, opt func(*config.Config)) {
	h := startBroker(t, opt)
	slow, pubDev, watcher := h.createDevice("slow-1"), h.createDevice("slow-pub"), h.createDevice("slow-watch")

	// The slow subscriber's handler blocks, so paho stops reading its socket.
	block := make(chan struct{})
	defer close(block)
	sc := h.mustConnectV3(slow)
	entered := make(chan struct{}, 1)
	if tok := sc.Subscribe("slow/#", 0, func(pahov3.Client, pahov3.Message) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-block
	}); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	wc := h.mustConnectV3(watcher)
	watched := subscribeV3(t, wc, "slow-watch/#", 1)

	pub := h.mustConnectV3(pubDev, func(o *pahov3.ClientOptions) { o.SetWriteTimeout(waitFor) })
	payload := strings.Repeat("x", 4096)
	const n = 20000 // 80 MB: far beyond the socket buffers and the 16 pending writes
	for i := range n {
		tok := pub.Publish("slow/data", 0, false, payload)
		if i%1000 == 999 {
			tok.WaitTimeout(waitFor)
		}
	}
	publishV3(t, pub, "slow/data", 1, false, "flush") // the publisher's messages before it were all handled
	dropped := h.waitMetric(`ggbroker_messages_dropped_total{reason="slow-subscriber"}`, func(v float64) bool { return v > 0 })
	t.Logf("slow subscriber: %v of %d QoS 0 messages dropped", dropped, n)
	if dropped < n/2 {
		t.Fatalf("only %v of %d messages dropped for a subscriber that reads nothing", dropped, n)
	}
	publishV3(t, pub, "slow-watch/ping", 1, false, "still working")
	expectMessage(t, watched, "slow-watch/ping still working")
}

// TestSlowSubscriberBackPressure (limits.slowSubscriber): a subscriber slower than its publisher
// gets every QoS 0 message of a burst far larger than its queue and the sockets' buffers when the
// broker blocks the publisher, and loses most of them when it drops.
//
// At QoS 1 the same holds for the subscriber's session store (limits.maxInflight): with block the
// publisher waits for the subscriber's PUBACKs to make room, with drop the excess is dropped.
func TestSlowSubscriberBackPressure(t *testing.T) {
	const n = 1500
	for _, tc := range []struct {
		mode    string
		qos     byte
		wantAll bool
	}{
		{config.SlowSubscriberBlock, 0, true},
		{config.SlowSubscriberDrop, 0, false},
		{config.SlowSubscriberBlock, 1, true},
		{config.SlowSubscriberDrop, 1, false},
	} {
		t.Run(fmt.Sprintf("%s/qos%d", tc.mode, tc.qos), func(t *testing.T) {
			h := startBroker(t, func(c *config.Config) {
				c.Limits.MaxPendingWrites = 16
				c.Limits.MaxInflight = 16
				c.Limits.SlowSubscriber = tc.mode
				c.Limits.SlowSubscriberWait = time.Second
			})
			sub, pubDev := h.createDevice("bp-sub"), h.createDevice("bp-pub")
			var got atomic.Int64
			sc := h.mustConnectV3(sub)
			if tok := sc.Subscribe("bp/#", tc.qos, func(pahov3.Client, pahov3.Message) {
				time.Sleep(time.Millisecond) // slower than the publisher
				got.Add(1)
			}); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			pub := h.mustConnectV3(pubDev, func(o *pahov3.ClientOptions) { o.SetWriteTimeout(waitFor) })
			payload := strings.Repeat("x", 8192) // 12 MB in all: far beyond the socket buffers
			for range n {
				pub.Publish("bp/data", tc.qos, false, payload)
			}
			publishV3(t, pub, "bp/data", 1, false, "flush") // every message before it was handled by the broker
			// Wait until everything arrived, or nothing more arrives for half a second.
			received, deadline := int64(-1), time.Now().Add(waitFor)
			for now := got.Load(); now != received && now < n+1 && time.Now().Before(deadline); now = got.Load() {
				received = now
				time.Sleep(500 * time.Millisecond)
			}
			received = got.Load()
			t.Logf("%s: %d of %d QoS %d messages received", tc.mode, received, n+1, tc.qos)
			if tc.wantAll && received != n+1 {
				t.Fatalf("block: %d of %d messages received, want all", received, n+1)
			}
			if !tc.wantAll && received >= n+1 {
				t.Fatalf("drop: all %d messages received; the burst did not overflow the queue, so this test shows nothing", received)
			}
		})
	}
}

// TestLocalListener: the loopback plain-TCP listener gives every client the configured anonymous
// identity, authorized by its policy through the same engine.
func TestLocalListener(t *testing.T) {
	h := startBroker(t, func(c *config.Config) {
		c.LocalListener = config.LocalListener{Enabled: true, Listen: "127.0.0.1:0", Anonymous: "local-tools", Policy: "local-tools"}
		dir := c.PolicyDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		doc := `{"Version":"2012-10-17","Statement":[
			{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/*"},
			{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"},
			{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"}]}`
		if err := os.WriteFile(filepath.Join(dir, "local-tools.json"), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	dev := h.createDevice("dev-l")
	dc := h.mustConnectV3(dev)
	devGot := subscribeV3(t, dc, "#", 1)

	o := pahov3.NewClientOptions().AddBroker("tcp://" + h.broker.LocalAddr().String()).SetClientID("dashboard").
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(waitFor)
	lc := pahov3.NewClient(o)
	if tok := lc.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("local connect: %v", tok.Error())
	}
	defer lc.Disconnect(0)
	localGot := subscribeV3(t, lc, "local-tools/#", 1)

	publishV3(t, lc, "local-tools/status", 1, false, "up")
	expectMessage(t, devGot, "local-tools/status up")
	expectMessage(t, localGot, "local-tools/status up")
	publishV3(t, dc, "local-tools/cmd", 1, false, "go")
	expectMessage(t, devGot, "local-tools/cmd go")
	expectMessage(t, localGot, "local-tools/cmd go")

	// Outside its policy: the publish is acknowledged (MQTT 3.1.1) and dropped.
	publishV3(t, lc, "dev-l/cmd", 1, false, "nope")
	expectNoMessage(t, devGot, dc, "dev-l/marker")
	h.record(t, "not authorized", map[string]string{"clientId": "dashboard", "thingName": "local-tools", "action": "iot:Publish"})

	// A TLS device cannot come in through the local listener's identity by other means: the MQTT
	// listener still refuses a client without a certificate.
	raw, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, _ = fmt.Fprint(raw, "\x10\x10\x00\x04MQTT\x04\x02\x00\x1e\x00\x04abcd")
	_ = raw.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.Copy(io.Discard, raw); err != nil && isTimeout(err) {
		t.Fatal("plain MQTT on the TLS listener was not closed")
	}
}

// TestLocalListenerRefusesNonLoopback: the config refuses to put the unauthenticated listener on the
// network, and says why.
func TestLocalListenerRefusesNonLoopback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ggbroker.yaml")
	if err := os.WriteFile(path, []byte("localListener:\n  enabled: true\n  listen: \"0.0.0.0:1883\"\n  policy: p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path, nil)
	if err == nil || !regexp.MustCompile(`localListener\.listen: .*not a loopback address.*no TLS`).MatchString(err.Error()) {
		t.Fatalf("config.Load: %v", err)
	}
}
