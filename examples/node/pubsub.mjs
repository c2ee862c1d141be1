// Publish and receive one message over mutual TLS with MQTT.js.
//
//   cd examples/node && npm install && node pubsub.mjs --port 8883 --dir ../../ggbroker-data/devices/sensor-1 --client-id sensor-1
//
// --dir is what `ggbroker device create sensor-1 --out DIR` wrote: device.pem.crt, private.pem.key and
// core-ca.pem. Prints the received message and exits 0, or exits 1 after --timeout seconds.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import mqtt from "mqtt";

const { values: a } = parseArgs({
  options: {
    host: { type: "string", default: "localhost" },
    port: { type: "string", default: "8883" },
    dir: { type: "string" },
    "client-id": { type: "string" },
    topic: { type: "string" },
    timeout: { type: "string", default: "10" },
  },
});
const id = a["client-id"];
const topic = a.topic ?? `${id}/hello`;
const client = mqtt.connect({
  protocol: "mqtts",
  host: a.host,
  port: Number(a.port),
  clientId: id,
  ca: readFileSync(join(a.dir, "core-ca.pem")),
  cert: readFileSync(join(a.dir, "device.pem.crt")),
  key: readFileSync(join(a.dir, "private.pem.key")),
  protocolVersion: 5,
  reconnectPeriod: 0,
});
const timer = setTimeout(() => { console.error("no message"); process.exit(1); }, Number(a.timeout) * 1000);
client.on("error", (err) => { console.error(err.message); process.exit(1); });
client.on("connect", () => {
  client.subscribe(topic, { qos: 1 }, (err) => {
    if (err) { console.error(err.message); process.exit(1); }
    client.publish(topic, "hello from node", { qos: 1 });
  });
});
client.on("message", (t, payload) => {
  console.log(t, payload.toString());
  clearTimeout(timer);
  client.end(false, () => process.exit(0));
});
