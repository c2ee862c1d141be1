// ggbroker as a Testcontainers container for Node tests (node:test). Needs a Docker engine.
//
//   cd examples/testcontainers-node && npm install testcontainers mqtt && node --test
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { GenericContainer, Wait } from "testcontainers";

// Ready means ggbroker's own health check passes: listeners serving, core device CA and server
// certificate valid (`ggbroker health` asks the loopback admin listener's /readyz; the image has no curl).
const container = await new GenericContainer("ggbroker")
  .withExposedPorts(8883, 8443, 9443)
  .withEnvironment({
    GGBROKER_CONNECTIVITY_HOSTADDRESSES: "localhost,127.0.0.1", // the names in the server certificate
    GGBROKER_CONTROLPLANE_LISTEN: ":9443",
  })
  .withHealthCheck({ test: ["CMD", "/usr/local/bin/ggbroker", "health"], interval: 1000, retries: 30 })
  .withWaitStrategy(Wait.forHealthCheck())
  .start();
after(() => container.stop());

test("a device provisioned in the container gets PEM files", async () => {
  const r = await container.exec(["/usr/local/bin/ggbroker", "device", "create", "sensor-1", "--out", "/data/devices/sensor-1"]);
  assert.equal(r.exitCode, 0, r.output);
  const ca = await container.exec(["/usr/local/bin/ggbroker", "ca", "show"]);
  assert.equal(ca.exitCode, 0, ca.output);
  console.log(`MQTT over mTLS at ${container.getHost()}:${container.getMappedPort(8883)}`);
});
