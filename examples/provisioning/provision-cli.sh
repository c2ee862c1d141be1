#!/usr/bin/env bash
# Provision a device with the AWS CLI against ggbroker's AWS IoT API, as against AWS IoT Core, then
# connect it with mosquitto_pub: create-thing, create-keys-and-certificate, create-policy,
# attach-policy, attach-thing-principal.
#
#   GGBROKER_STATE_DIR=/var/lib/ggbroker examples/provisioning/provision-cli.sh sensor-1 ./sensor-1
#
# What differs from AWS IoT Core is only where the CLI points (docs: `aws help config-vars`):
#   --endpoint-url  ggbroker's API listener (controlPlane.listen), GGBROKER_API_URL
#   --ca-bundle     the core device CA that signs the listener's certificate: <stateDir>/ca/core-ca.pem
#   credentials     the keys ggbroker wrote: AWS_SHARED_CREDENTIALS_FILE=<stateDir>/credentials, AWS_PROFILE=ggbroker
# and the device verifies the broker with the same core-ca.pem instead of Amazon Root CA 1.
set -euo pipefail

thing=${1:?usage: provision-cli.sh THING OUT_DIR}
out=${2:?usage: provision-cli.sh THING OUT_DIR}
state=${GGBROKER_STATE_DIR:-./ggbroker-data}
api=${GGBROKER_API_URL:-https://127.0.0.1:9443}
ca=${GGBROKER_CA_BUNDLE:-$state/ca/core-ca.pem}
export AWS_SHARED_CREDENTIALS_FILE=${AWS_SHARED_CREDENTIALS_FILE:-$state/credentials}
export AWS_PROFILE=${AWS_PROFILE:-ggbroker}
export AWS_DEFAULT_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}

iot() { aws --endpoint-url "$api" --ca-bundle "$ca" iot "$@"; }

mkdir -p "$out"
iot create-thing --thing-name "$thing" >/dev/null
cert_arn=$(iot create-keys-and-certificate --set-as-active \
  --certificate-pem-outfile "$out/device.pem.crt" --private-key-outfile "$out/private.pem.key" \
  --query certificateArn --output text)
chmod 600 "$out/private.pem.key"
# The device may connect as its thing and use the topics under its name, nothing else.
iot create-policy --policy-name "$thing-policy" --policy-document '{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": "arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"}
  ]
}' >/dev/null
iot attach-policy --policy-name "$thing-policy" --target "$cert_arn"
iot attach-thing-principal --thing-name "$thing" --principal "$cert_arn"
cp "$ca" "$out/core-ca.pem"
echo "provisioned $thing: $cert_arn"

# The device, with its new files. The broker's certificate names localhost and 127.0.0.1 (and
# connectivity.hostAddresses).
mosquitto_pub -h "${GGBROKER_MQTT_HOST:-localhost}" -p "${GGBROKER_MQTT_PORT:-8883}" -i "$thing" -q 1 \
  --cafile "$out/core-ca.pem" --cert "$out/device.pem.crt" --key "$out/private.pem.key" \
  -t "$thing/hello" -m "provisioned with the AWS CLI"
echo "published $thing/hello"
