#!/usr/bin/env python3
"""Provision a device with boto3 against ggbroker's AWS IoT API, as against AWS IoT Core, then connect
it with Eclipse Paho (paho-mqtt 1.x or 2.x): create_thing, create_keys_and_certificate, create_policy,
attach_policy, attach_thing_principal.

    AWS_SHARED_CREDENTIALS_FILE=/var/lib/ggbroker/credentials AWS_PROFILE=ggbroker \\
      python3 examples/provisioning/provision_boto3.py --state-dir /var/lib/ggbroker --thing sensor-1 --out ./sensor-1

What differs from AWS IoT Core is only where the client points: endpoint_url (ggbroker's API
listener, controlPlane.listen), verify (the core device CA that signs its certificate,
<stateDir>/ca/core-ca.pem), and the keys ggbroker wrote (<stateDir>/credentials, profile ggbroker,
which --state-dir picks when the AWS_ variables are not set). The device verifies the broker with the
same core-ca.pem instead of Amazon Root CA 1.
"""
import argparse
import json
import os
import shutil
import ssl
import sys

import boto3
import paho.mqtt.client as mqtt

# The device may connect as its thing and use the topics under its name, nothing else.
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
        {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": "arn:aws:iot:*:*:topic/${iot:Connection.Thing.ThingName}/*"},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "arn:aws:iot:*:*:topicfilter/${iot:Connection.Thing.ThingName}/*"},
    ],
}


def provision(iot, thing, out, ca):
    iot.create_thing(thingName=thing)
    keys = iot.create_keys_and_certificate(setAsActive=True)
    iot.create_policy(policyName=thing + "-policy", policyDocument=json.dumps(POLICY))
    iot.attach_policy(policyName=thing + "-policy", target=keys["certificateArn"])
    iot.attach_thing_principal(thingName=thing, principal=keys["certificateArn"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "device.pem.crt"), "w") as f:
        f.write(keys["certificatePem"])
    with open(os.open(os.path.join(out, "private.pem.key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(keys["keyPair"]["PrivateKey"])
    shutil.copyfile(ca, os.path.join(out, "core-ca.pem"))
    return keys["certificateArn"]


def publish(thing, out, host, port, timeout):
    """Connect as the device with its new files and publish one QoS 1 message on <thing>/hello."""
    try:  # paho-mqtt 2 wants the callback API version; 1.x has no such argument
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id=thing)
    except AttributeError:
        c = mqtt.Client(client_id=thing)
    c.tls_set(ca_certs=os.path.join(out, "core-ca.pem"), certfile=os.path.join(out, "device.pem.crt"),
              keyfile=os.path.join(out, "private.pem.key"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    info = c.publish(thing + "/hello", "provisioned with boto3", qos=1)
    info.wait_for_publish(timeout)
    ok = info.is_published()
    c.disconnect()
    c.loop_stop()
    if not ok:
        sys.exit("publish: no PUBACK within %ss" % timeout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", default="./ggbroker-data", help="ggbroker's state directory")
    p.add_argument("--api-url", default="https://127.0.0.1:9443", help="ggbroker's API listener")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--thing", required=True)
    p.add_argument("--out", required=True, help="where to write the device's files")
    p.add_argument("--mqtt-host", default="localhost")
    p.add_argument("--mqtt-port", type=int, default=8883)
    p.add_argument("--timeout", type=float, default=10)
    a = p.parse_args()
    os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.path.join(a.state_dir, "credentials"))
    os.environ.setdefault("AWS_PROFILE", "ggbroker")
    ca = os.path.join(a.state_dir, "ca", "core-ca.pem")

    iot = boto3.Session().client("iot", endpoint_url=a.api_url, verify=ca, region_name=a.region)
    arn = provision(iot, a.thing, a.out, ca)
    print("provisioned %s: %s" % (a.thing, arn))
    publish(a.thing, a.out, a.mqtt_host, a.mqtt_port, a.timeout)
    print("published %s/hello" % a.thing)


if __name__ == "__main__":
    main()
