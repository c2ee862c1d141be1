// Fleet provisioning by claim with the AWS IoT Device SDK v2 for JavaScript (MQTT 5,
// IotIdentityClientv2) against ggbroker: connect with the claim certificate the factory installed,
// CreateKeysAndCertificate, RegisterThing with a provisioning template, write the new certificate
// and key, and connect with them as the new thing.
//
//   node provision.js --endpoint localhost --port 8883 --thing claim-1 \
//     --cert claim.pem.crt --key claim.private.key --ca core-ca.pem \
//     --template fleet --serial SN-0001 --out ./device
//
// The template and the claim certificate's policy are set up from the backend, as with AWS IoT
// (aws iot create-provisioning-template --endpoint-url ...); --thing is the claim certificate's thing,
// the client ID the claim policy allows.
const { iot, mqtt5, iotidentity } = require('aws-iot-device-sdk-v2');
const { once } = require('events');
const fs = require('fs');
const path = require('path');

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
  const args = parseArgs(['endpoint', 'port', 'thing', 'cert', 'key', 'ca', 'template', 'serial', 'out']);
  const claim = await connect(args);
  const identity = iotidentity.IotIdentityClientv2.newFromMqtt5(claim,
    { maxRequestResponseSubscriptions: 2, maxStreamingSubscriptions: 1, operationTimeoutInSeconds: 10 });

  // A new key pair and certificate (PENDING_ACTIVATION until RegisterThing accepts it).
  const keys = await identity.createKeysAndCertificate({});
  console.log(`certificate ${keys.certificateId}`);

  // RegisterThing runs the template with the device's parameters: it creates the thing, activates the
  // certificate and attaches it and the template's policy.
  const reg = await identity.registerThing({
    templateName: args.template,
    certificateOwnershipToken: keys.certificateOwnershipToken,
    parameters: { SerialNumber: args.serial },
  });
  console.log(`registered thing ${reg.thingName}`);
  identity.close();
  await stop(claim);

  fs.mkdirSync(args.out, { recursive: true });
  const cert = path.join(args.out, 'device.pem.crt');
  const key = path.join(args.out, 'private.pem.key');
  fs.writeFileSync(cert, keys.certificatePem);
  fs.writeFileSync(key, keys.privateKey, { mode: 0o600 });

  // From now on the device is itself: its own certificate, its thing name as client ID.
  const device = await connect({ ...args, thing: reg.thingName, cert, key });
  await device.publish({ topicName: `${reg.thingName}/hello`, qos: mqtt5.QoS.AtLeastOnce, payload: 'provisioned' });
  console.log(`connected as ${reg.thingName}`);
  await stop(device);
}

async function stop(client) {
  const stopped = once(client, 'stopped');
  // stop() without a DISCONNECT packet: with one, aws-crt 1.33 at times never sends it nor emits
  // "stopped" (its log shows CLEAN_DISCONNECT and nothing after), and the script hangs.
  client.stop();
  await stopped;
  client.close();
}

// Exit once done: the CRT's native threads (its DNS resolver's among them) keep Node running for
// seconds after the last client is closed.
main().then(() => process.exit(0), (e) => { console.error(`provision: ${e.stack || e}`); process.exit(1); });
