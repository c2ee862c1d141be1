package test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pythonWithPaho is a Python 3 that can import paho.mqtt (Debian's python3-paho-mqtt installs into the
// system Python, which may not be the python3 first on PATH), or "".
func pythonWithPaho() string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(py, "-c", "import paho.mqtt.client").Run(); err == nil {
			return py
		}
	}
	return ""
}

// runExample runs one of examples/ against the broker as device d and checks what it printed.
func runExample(t *testing.T, h *harness, d *device, want string, name string, args ...string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(h.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, append(args, "--host", "localhost", "--port", port, "--dir", d.dir, "--client-id", d.name)...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), want) {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestPythonPahoExample runs examples/python/pubsub.py as a README reader would: the files `ggbroker
// device create` writes, mutual TLS, publish and receive.
func TestPythonPahoExample(t *testing.T) {
	py := pythonWithPaho()
	if py == "" {
		t.Skip("no Python 3 with paho-mqtt (apt-get install python3-paho-mqtt; .ci/run installs it)")
	}
	h := startBroker(t, nil)
	d := h.createDefaultDevice("py-sensor") // as `ggbroker device create` makes it: its own topics only
	runExample(t, h, d, "py-sensor/hello hello from python", py, filepath.Join("..", "examples", "python", "pubsub.py"))
}

// TestNodeMQTTjsExample runs examples/node/pubsub.mjs with MQTT.js (npm install in examples/node).
func TestNodeMQTTjsExample(t *testing.T) {
	dir := filepath.Join("..", "examples", "node")
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("no node on PATH")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt")); err != nil {
		t.Skip("MQTT.js is not installed: (cd examples/node && npm ci); .ci/run does it")
	}
	h := startBroker(t, nil)
	d := h.createDefaultDevice("js-sensor")
	runExample(t, h, d, "js-sensor/hello hello from node", "node", filepath.Join(dir, "pubsub.mjs"))
}
