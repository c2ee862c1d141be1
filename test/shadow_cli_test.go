package test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ggbroker/ggbroker/auth"
)

// TestBinaryShadowCommands: `ggbroker shadow` as a person runs it: on services.db while no broker runs,
// through the running broker's iot-data API while one does (an update there reaches MQTT subscribers);
// an update a device made over MQTT survives kill -9 of the broker (it was on disk before
// update/accepted).
func TestBinaryShadowCommands(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "doc.json")
	if err := os.WriteFile(doc, []byte(`{"state":{"desired":{"fan":"on"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, dir, "shadow", "update", "dev1", "--name", "cfg", "--document", doc)
	if !strings.Contains(out, `"version": 1`) {
		t.Fatalf("update printed %s", out)
	}
	if out := run(t, dir, "shadow", "get", "dev1", "--name", "cfg"); !strings.Contains(out, `"delta": {`) {
		t.Fatalf("get printed %s", out)
	}
	if out := run(t, dir, "shadow", "list", "dev1"); out != "cfg\n" {
		t.Fatalf("list printed %q", out)
	}
	missing := exec.Command(ggbrokerBinary(t), "shadow", "get", "dev1")
	missing.Dir = dir
	if out, err := missing.CombinedOutput(); err == nil || !strings.Contains(string(out), "404 No shadow exists with name: 'dev1'") {
		t.Fatalf("get of a missing shadow: %v %s", err, out)
	}

	run(t, dir, "device", "create", "dev1", "--out", "devices/dev1")
	s := serve(t, dir)
	// serve listens on port 0; the commands find the API where controlPlane.listen says, as a person's
	// would with the configured port.
	api, _ := s.serving["api"].(string)
	t.Setenv("GGBROKER_CONTROLPLANE_LISTEN", api)
	if out := run(t, dir, "shadow", "get", "dev1", "--name", "cfg"); !strings.Contains(out, `"version": 1`) {
		t.Fatalf("get through the running broker printed %s", out)
	}
	busy := exec.Command(ggbrokerBinary(t), "shadow", "get", "dev1")
	busy.Dir = dir
	if out, err := busy.CombinedOutput(); err == nil || !strings.Contains(string(out), "404 No shadow exists with name: 'dev1'") {
		t.Fatalf("get of a missing shadow through the broker: %v %s", err, out)
	}

	c := shadowConnectFiles(t, s.mqtt, filepath.Join(dir, "devices/dev1"), "dev1")
	accepted := make(chan []byte, 2)
	tok := c.Subscribe("$aws/things/dev1/shadow/name/cfg/update/accepted", 1, func(_ pahov3.Client, m pahov3.Message) { accepted <- m.Payload() })
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	expectVersion := func(v int) {
		t.Helper()
		select {
		case m := <-accepted:
			var a struct{ Version int }
			if err := json.Unmarshal(m, &a); err != nil || a.Version != v {
				t.Fatalf("accepted %s, want version %d", m, v)
			}
		case <-time.After(waitFor):
			t.Fatal("no update/accepted")
		}
	}
	// An update from the command line, through the broker, reaches the device over MQTT.
	if err := os.WriteFile(doc, []byte(`{"state":{"desired":{"fan":"on","speed":2}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(t, dir, "shadow", "update", "dev1", "--name", "cfg", "--document", doc); !strings.Contains(out, `"version": 2`) {
		t.Fatalf("update through the running broker printed %s", out)
	}
	expectVersion(2)
	publishV3(t, c, "$aws/things/dev1/shadow/name/cfg/update", 1, false, `{"state":{"reported":{"fan":"on","speed":2}}}`)
	expectVersion(3)
	_ = s.cmd.Process.Kill() // kill -9: no shutdown
	<-s.stopped
	s.stopped <- nil
	out = run(t, dir, "shadow", "get", "dev1", "--name", "cfg")
	if !strings.Contains(out, `"version": 3`) || !strings.Contains(out, `"reported": {`) || strings.Contains(out, `"delta"`) {
		t.Fatalf("after kill -9, get printed %s", out)
	}
	if out := run(t, dir, "shadow", "delete", "dev1", "--name", "cfg"); !strings.Contains(out, `"version": 3`) {
		t.Fatalf("delete printed %s", out)
	}
}

// shadowConnectFiles connects over MQTT 3.1.1 with the files `device create --out` wrote.
func shadowConnectFiles(t *testing.T, addr, dir, clientID string) pahov3.Client {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, auth.DeviceCertFile), filepath.Join(dir, auth.DeviceKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, auth.CoreCAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	o := pahov3.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(clientID).
		SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}, ServerName: "localhost", MinVersion: tls.VersionTLS12}).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(waitFor)
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}
