package test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ggbroker/ggbroker/config"
)

// TestUnsubscribeRecordsAreReal: only a real UNSUBSCRIBE makes an Unsubscribe record, with the
// client's address (issue 18: every clean disconnect logged one, with sourceIp "invalid IP" and
// sourcePort 0, even for clients that never subscribed). $SYS topics do not count as retained
// messages in ggbroker_retained_messages (issue 18: 21 for one retained message).
func TestUnsubscribeRecordsAreReal(t *testing.T) {
	h := startBroker(t, func(c *config.Config) { c.Persistence.Enabled = false })
	quiet, sub := h.createDevice("quiet-1"), h.createDevice("sub-1")

	q := h.mustConnectV3(quiet)
	q.Disconnect(100)
	h.record(t, "client disconnected", map[string]string{"clientId": "quiet-1"})

	s := h.mustConnectV3(sub)
	subscribeV3(t, s, "sub-1/#", 1)
	if tok := s.Unsubscribe("sub-1/#"); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
	h.record(t, "unsubscribed", map[string]string{"clientId": "sub-1", "sourceIp": "127.0.0.1"})
	subscribeV3(t, s, "sub-1/again", 1) // subscribed when it disconnects: mochi unsubscribes it then
	publishV3(t, s, "sub-1/retained", 1, true, "21.5")
	s.Disconnect(100)
	h.record(t, "client disconnected", map[string]string{"clientId": "sub-1"})

	recs := h.logs.FilterMessage("unsubscribed").All()
	if len(recs) != 1 {
		for _, r := range recs {
			t.Logf("unsubscribed %v", r.ContextMap())
		}
		t.Fatalf("%d Unsubscribe records, want 1 (the real UNSUBSCRIBE)", len(recs))
	}
	f := recs[0].ContextMap()
	if f["eventType"] != "Unsubscribe" || f["sourceIp"] != "127.0.0.1" || f["sourcePort"] == int64(0) {
		t.Fatalf("Unsubscribe record %v", f)
	}
	h.waitMetric("ggbroker_retained_messages", func(v float64) bool { return v == 1 })
}

// TestUnwritableSessionsFile: a persistence file the broker may not write is reported as a permission
// problem, not as damage, and --recover leaves it alone (issue 18: a read-only sessions.db was
// "unreadable" and --recover then refused). The broker runs as an unprivileged user when the test runs
// as root, for whom no file is read-only. The fatal error is printed once.
func TestUnwritableSessionsFile(t *testing.T) {
	base, err := os.MkdirTemp("", "ggbroker-ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "work")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := serve(t, dir)
	s.terminate(t)
	db := filepath.Join(dir, "ggbroker-data", "sessions.db")
	if _, err := os.Stat(db); err != nil {
		t.Fatal(err)
	}
	bin := ggbrokerBinary(t)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		const nobody = 65534
		// The binary, and a state directory owned by that user with only sessions.db read-only.
		copied := filepath.Join(base, "ggbroker")
		if err := copyFile(bin, copied); err != nil {
			t.Fatal(err)
		}
		bin = copied
		for _, p := range []string{base, dir} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, nobody, nobody)
		}); err != nil {
			t.Fatal(err)
		}
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	if err := os.Chmod(db, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"serve"}, {"serve", "--recover"}} {
		args = append(args, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--discovery-listen", "127.0.0.1:0", "--log-format", "console")
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GGBROKER_CONNECTIVITY_DETECTIPV4ADDRESSES=false")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%v: started with an unwritable sessions.db (%v):\n%s", args, err, out)
		}
		text := string(out)
		for _, want := range []string{"permission denied", "not damaged", "sessions.db"} {
			if !strings.Contains(text, want) {
				t.Errorf("%v: output does not say %q:\n%s", args, want, text)
			}
		}
		for _, wrong := range []string{"unreadable", "corrupt", "moved it aside"} {
			if strings.Contains(text, wrong) {
				t.Errorf("%v: output says %q:\n%s", args, wrong, text)
			}
		}
		if n := strings.Count(text, "permission denied for uid"); n != 1 {
			t.Errorf("%v: the fatal error is printed %d times, want once:\n%s", args, n, text)
		}
	}
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("sessions.db was moved: %v", err)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestTLSProbeIsCounted: a TCP connection closed before any TLS record (a health check, a port scan)
// is counted in ggbroker_tls_handshake_failures_total{kind="probe"} and logged at debug, not warn.
func TestTLSProbeIsCounted(t *testing.T) {
	h := startBroker(t, func(c *config.Config) { c.Persistence.Enabled = false })
	c, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	h.waitMetric(`ggbroker_tls_handshake_failures_total{kind="probe"}`, func(v float64) bool { return v == 1 })
	rec := h.record(t, "TLS handshake failed", map[string]string{"failure": "probe"})
	for _, e := range h.logs.FilterMessage("TLS handshake failed").All() {
		if e.Level != zapcore.DebugLevel {
			t.Fatalf("a probe logged at %s: %v", e.Level, rec)
		}
	}
}

// TestRefusedPacketLogsNoPayload: an MQTT 5 PUBLISH the broker refuses with a protocol error (QoS 2
// where the iot-core profile advertised Maximum QoS 1: DISCONNECT 0x9B) makes no log record that
// carries its payload or grows with it (issue 18: one 177,553-character line, mochi's "error processing
// packet" record with the whole packet in it).
func TestRefusedPacketLogsNoPayload(t *testing.T) {
	h := startBroker(t, func(c *config.Config) { c.Persistence.Enabled = false; c.Behaviour.Profile = "iot-core" })
	d := h.createDevice("big-1")
	conn, err := tls.Dial("tcp", h.addr(), h.tlsConfig(d, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	connect := packets.NewControlPacket(packets.CONNECT)
	cc := connect.Content.(*packets.Connect)
	cc.ClientID, cc.KeepAlive, cc.CleanStart = "big-1", 30, true
	if _, err := connect.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	if ack, err := packets.ReadPacket(conn); err != nil || ack.Content.(*packets.Connack).ReasonCode != 0 {
		t.Fatalf("CONNACK %v, %v", ack, err)
	}
	payload := strings.Repeat("PAYLOAD-", 12000) // 96,000 bytes, under the profile's 128 KiB
	pub := packets.NewControlPacket(packets.PUBLISH)
	pc := pub.Content.(*packets.Publish)
	pc.Topic, pc.QoS, pc.PacketID, pc.Payload = "big-1/t", 2, 1, []byte(payload)
	_, _ = pub.WriteTo(conn) // the broker may close before all of it is written
	for {                    // the broker refuses it (DISCONNECT 0x9B) and closes
		if _, err := packets.ReadPacket(conn); err != nil {
			break
		}
	}
	h.record(t, "client disconnected", map[string]string{"clientId": "big-1"})
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, e := range h.logs.All() {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		line := buf.String()
		buf.Free()
		if strings.Contains(line, "PAYLOAD-PAYLOAD-") || len(line) > 4096 {
			t.Fatalf("a %d-byte record carries the payload: %.400s", len(line), line)
		}
	}
}
