// AWS IoT Jobs with the AWS IoT Device SDK v2 for JavaScript (MQTT 5, IotJobsClientv2) against
// ggbroker: take the next pending job, "run" it, and report it SUCCEEDED. The job is created from the
// backend, as with AWS IoT (aws iot create-job --endpoint-url ..., or the AWS SDKs).
//
//   node jobs.js --endpoint localhost --port 8883 --thing sensor-1 \
//     --cert device.pem.crt --key private.pem.key --ca core-ca.pem
//
// ggbroker's default device policy allows a device its own jobs topics ($aws/things/<thing>/jobs/...).
const { iot, mqtt5, iotjobs } = require('aws-iot-device-sdk-v2');
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
  const jobs = iotjobs.IotJobsClientv2.newFromMqtt5(client,
    { maxRequestResponseSubscriptions: 2, maxStreamingSubscriptions: 1, operationTimeoutInSeconds: 10 });

  // StartNextPendingJobExecution moves the oldest QUEUED execution to IN_PROGRESS and returns it; no
  // execution in the answer means nothing is pending.
  const next = await jobs.startNextPendingJobExecution({ thingName: args.thing });
  if (!next.execution) {
    console.log('no pending job');
  } else {
    const { jobId, jobDocument, executionNumber } = next.execution;
    console.log(`job ${jobId} IN_PROGRESS ${JSON.stringify(jobDocument)}`);
    // ... here the firmware does what the job document says ...
    await jobs.updateJobExecution({
      thingName: args.thing, jobId, executionNumber, status: iotjobs.model.JobStatus.SUCCEEDED,
      statusDetails: { result: 'done' },
    });
    console.log(`job ${jobId} SUCCEEDED`);
  }

  jobs.close();
  const stopped = once(client, 'stopped');
  // stop() without a DISCONNECT packet: with one, aws-crt 1.33 at times never sends it nor emits
  // "stopped" (its log shows CLEAN_DISCONNECT and nothing after), and the script hangs.
  client.stop();
  await stopped;
  client.close();
}

// Exit once done: the CRT's native threads (its DNS resolver's among them) keep Node running for
// seconds after the last client is closed.
main().then(() => process.exit(0), (e) => { console.error(`jobs: ${e.stack || e}`); process.exit(1); });
