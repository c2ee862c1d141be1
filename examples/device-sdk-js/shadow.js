// Device Shadow with the AWS IoT Device SDK v2 for JavaScript (MQTT 5, IotShadowClientv2) against
// ggbroker: read the shadow, apply what the cloud desires, report the new state. The same code runs
// against AWS IoT Core; only the endpoint and the CA change.
//
//   node shadow.js --endpoint localhost --port 8883 --thing sensor-1 \
//     --cert device.pem.crt --key private.pem.key --ca core-ca.pem
//
// ggbroker's default device policy allows a device its own shadow ($aws/things/<thing>/shadow/...).
const { iot, mqtt5, iotshadow } = require('aws-iot-device-sdk-v2');
const { once } = require('events');

function parseArgs(names) {
  const args = {};
  for (let i = 2; i < process.argv.length; i += 2) {
    const k = process.argv[i].replace(/^--/, '');
    if (!names.includes(k)) throw new Error(`unknown argument --${k} (known: ${names.join(', ')})`);
    args[k] = process.argv[i + 1];
  }
  for (const k of names) if (args[k] === undefined) throw new Error(`--${k} is required`);
  return args;
}

// connect is the SDK's MQTT 5 client over mutual TLS, started and connected. The CA is ggbroker's core
// device CA (core-ca.pem), where AWS IoT Core would use Amazon Root CA 1.
async function connect({ endpoint, port, thing, cert, key, ca }) {
  const config = iot.AwsIotMqtt5ClientConfigBuilder.newDirectMqttBuilderWithMtlsFromPath(endpoint, cert, key)
    .withCertificateAuthorityFromPath(undefined, ca)
    .withPort(Number(port))
    .withConnectProperties({ clientId: thing, keepAliveIntervalSeconds: 60 })
    .build();
  const client = new mqtt5.Mqtt5Client(config);
  const connected = once(client, 'connectionSuccess');
  const failed = once(client, 'connectionFailure').then(([e]) => { throw new Error(`connect: ${e.error}`); });
  client.start();
  await Promise.race([connected, failed]);
  return client;
}

async function main() {
  const args = parseArgs(['endpoint', 'port', 'thing', 'cert', 'key', 'ca']);
  const client = await connect(args);
  const shadow = iotshadow.IotShadowClientv2.newFromMqtt5(client,
    { maxRequestResponseSubscriptions: 2, maxStreamingSubscriptions: 1, operationTimeoutInSeconds: 10 });

  // The current shadow. A thing that has none yet gets a 404 (ResourceNotFound), as from AWS IoT.
  let desired = {};
  try {
    const current = await shadow.getShadow({ thingName: args.thing });
    desired = (current.state && current.state.desired) || {};
    console.log(`desired ${JSON.stringify(desired)} version ${current.version}`);
  } catch (e) {
    if (!(e.modeledError && e.modeledError.code === 404)) throw e;
    console.log('no shadow yet');
  }

  // The device applies the desired state and reports it, with a reading of its own.
  const reported = { ...desired, temperature: 21.5 };
  const updated = await shadow.updateShadow({ thingName: args.thing, state: { reported } });
  console.log(`reported ${JSON.stringify(updated.state.reported)} version ${updated.version}`);

  shadow.close();
  const stopped = once(client, 'stopped');
  // stop() without a DISCONNECT packet: with one, aws-crt 1.33 at times never sends it nor emits
  // "stopped" (its log shows CLEAN_DISCONNECT and nothing after), and the script hangs.
  client.stop();
  await stopped;
  client.close();
}

// Exit once done: the CRT's native threads (its DNS resolver's among them) keep Node running for
// seconds after the last client is closed.
main().then(() => process.exit(0), (e) => { console.error(`shadow: ${e.stack || e}`); process.exit(1); });
