// Package ggbroker_test shows ggbroker as a Testcontainers container for Go tests. It needs a Docker
// engine; it is its own module so that ggbroker's build does not depend on testcontainers-go.
//
//	cd examples/testcontainers-go && go test ./...
package ggbroker_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// startGGBroker runs the ggbroker image (docker build -t ggbroker . in the repository) and returns the
// container and the host:port of its MQTT listener. Ready means ggbroker's own health check passes: the
// listeners serve, the core device CA and the server certificate are valid (`ggbroker health`, which asks
// the loopback admin listener's /readyz; the image is distroless, with no curl).
func startGGBroker(ctx context.Context, t *testing.T) (testcontainers.Container, string) {
	t.Helper()
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        "ggbroker",
			ExposedPorts: []string{"8883/tcp", "8443/tcp", "9443/tcp"},
			Env: map[string]string{
				// The names clients use: they go into the server certificate.
				"GGBROKER_CONNECTIVITY_HOSTADDRESSES": "localhost,127.0.0.1",
				"GGBROKER_CONTROLPLANE_LISTEN":        ":9443",
			},
			WaitingFor: wait.ForExec([]string{"/usr/local/bin/ggbroker", "health"}).
				WithExitCodeMatcher(func(code int) bool { return code == 0 }).
				WithStartupTimeout(30 * time.Second),
		},
		Started: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Terminate(context.Background()) })
	host, err := c.Host(ctx)
	if err != nil {
		t.Fatal(err)
	}
	port, err := c.MappedPort(ctx, "8883/tcp")
	if err != nil {
		t.Fatal(err)
	}
	return c, host + ":" + port.Port()
}

func TestDeviceCredentialsFromTheContainer(t *testing.T) {
	ctx := context.Background()
	c, mqttAddr := startGGBroker(ctx, t)
	// Provision a device inside the container; its files are then read out of it.
	if code, out, err := c.Exec(ctx, []string{"/usr/local/bin/ggbroker", "device", "create", "sensor-1", "--out", "/data/devices/sensor-1"}); err != nil || code != 0 {
		b, _ := io.ReadAll(out)
		t.Fatalf("device create: %d %v %s", code, err, b)
	}
	for _, f := range []string{"device.pem.crt", "private.pem.key", "core-ca.pem"} {
		r, err := c.CopyFileFromContainer(ctx, "/data/devices/sensor-1/"+f)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		if !strings.Contains(string(b), "-----BEGIN") {
			t.Fatalf("%s is not PEM", f)
		}
	}
	t.Logf("connect MQTT clients to %s with those files", mqttAddr)
}
