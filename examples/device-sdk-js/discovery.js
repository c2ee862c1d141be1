// Greengrass discovery with the AWS IoT Device SDK v2 for JavaScript (greengrass.DiscoveryClient)
// against ggbroker, as a client device finds its Greengrass core: discover the core's addresses and
// CA, connect to the first address that answers (MQTT 5, mutual TLS), publish and receive a message.
//
//   node discovery.js --thing sensor-1 --cert device.pem.crt --key private.pem.key --ca core-ca.pem \
//     --region us-east-1 --discovery-endpoint localhost [--discovery-port 8443]
//
// The SDK calls discovery on greengrass-ats.iot.<region>.amazonaws.com, port 443 with the ALPN
// protocol x-amzn-http-ca (8443 when its TLS stack has no ALPN); the port is not an argument of its
// DiscoveryClient. ggbroker serves both: discovery.alpnListen (":443", which needs root or
// CAP_NET_BIND_SERVICE) and discovery.listen (":8443"). --discovery-endpoint is the SDK's
// gg_server_name: a name in ggbroker's discovery certificate (localhost, discovery.hostNames, or the
// AWS name, which discovery.awsEndpointName adds, with an /etc/hosts entry). --discovery-port, for a
// broker on another port (a test's), replaces the SDK's connection manager with one on that port.
// --ca verifies the discovery endpoint: ggbroker's core-ca.pem, where AWS would use Amazon Root CA 1.
const { greengrass, http, io, iot, mqtt5 } = require('aws-iot-device-sdk-v2');
const { once } = require('events');

function parseArgs(names, optional) {
  const args = {};
  for (let i = 2; i < process.argv.length; i += 2) {
    const k = process.argv[i].replace(/^--/, '');
    if (!names.includes(k) && !optional.includes(k)) throw new Error(`unknown argument --${k} (known: ${names.concat(optional).join(', ')})`);
    args[k] = process.argv[i + 1];
  }
  for (const k of names) if (args[k] === undefined) throw new Error(`--${k} is required`);
  return args;
}

async function discover(args) {
  const bootstrap = new io.ClientBootstrap();
  const socketOptions = new io.SocketOptions(io.SocketType.STREAM, io.SocketDomain.IPV4, 3000);
  const tlsOptions = io.TlsContextOptions.create_client_with_mtls_from_path(args.cert, args.key);
  tlsOptions.override_default_trust_store_from_path(undefined, args.ca);
  const tlsCtx = new io.ClientTlsContext(tlsOptions);
  const client = new greengrass.DiscoveryClient(bootstrap, socketOptions, tlsCtx, args.region, args['discovery-endpoint'] || '');
  if (args['discovery-port']) {
    const host = client.endpoint;
    client.connection_manager.close();
    client.connection_manager = new http.HttpClientConnectionManager(bootstrap, host, Number(args['discovery-port']), 4, 16 * 1024,
      socketOptions, new io.TlsConnectionOptions(tlsCtx, host, io.is_alpn_available() ? ['x-amzn-http-ca'] : undefined));
  }
  return client.discover(args.thing);
}

// connect tries each address discovery gave for a core, with the group's CA, until one connects.
async function connect(args, group) {
  for (const core of group.cores) {
    for (const c of core.connectivity) {
      const config = iot.AwsIotMqtt5ClientConfigBuilder.newDirectMqttBuilderWithMtlsFromPath(c.host_address, args.cert, args.key)
        .withCertificateAuthority(group.certificate_authorities[0])
        .withPort(c.port)
        .withConnectProperties({ clientId: args.thing, keepAliveIntervalSeconds: 60 })
        .build();
      const client = new mqtt5.Mqtt5Client(config);
      const result = Promise.race([
        once(client, 'connectionSuccess').then(() => null),
        once(client, 'connectionFailure').then(([e]) => e.error),
      ]);
      client.start();
      const err = await result;
      if (!err) {
        console.log(`connected to ${core.thing_arn} at ${c.host_address}:${c.port}`);
        return client;
      }
      console.log(`${c.host_address}:${c.port}: ${err}`);
      await stop(client);
    }
  }
  throw new Error('no address of any core connected');
}

async function stop(client) {
  const stopped = once(client, 'stopped');
  // stop() without a DISCONNECT packet: with one, aws-crt 1.33 at times never sends it nor emits
  // "stopped" (its log shows CLEAN_DISCONNECT and nothing after), and the script hangs.
  client.stop();
  await stopped;
  client.close();
}

async function main() {
  const args = parseArgs(['thing', 'cert', 'key', 'ca', 'region'], ['discovery-endpoint', 'discovery-port']);
  const found = await discover(args);
  if (found.gg_groups.length === 0) throw new Error(`no Greengrass group for ${args.thing}`);
  const client = await connect(args, found.gg_groups[0]);

  const topic = `${args.thing}/hello`;
  const received = once(client, 'messageReceived');
  await client.subscribe({ subscriptions: [{ topicFilter: topic, qos: mqtt5.QoS.AtLeastOnce }] });
  await client.publish({ topicName: topic, qos: mqtt5.QoS.AtLeastOnce, payload: 'hello through discovery' });
  const [{ message }] = await received;
  console.log(`received ${message.topicName} ${Buffer.from(message.payload).toString()}`);
  await stop(client);
}

// Exit once done: the CRT's native threads (its DNS resolver's among them) keep Node running for
// seconds after the last client is closed.
main().then(() => process.exit(0), (e) => { console.error(`discovery: ${e.stack || e}`); process.exit(1); });
