#!/usr/bin/env python3
"""Publish and receive one message over mutual TLS with Eclipse Paho (paho-mqtt 1.x or 2.x).

    python3 examples/python/pubsub.py --port 8883 --dir ggbroker-data/devices/sensor-1 --client-id sensor-1

--dir is what `ggbroker device create sensor-1 --out DIR` wrote: device.pem.crt, private.pem.key and
core-ca.pem (the core device CA that signs the broker's certificate). Prints the received message and
exits 0, or exits 1 after --timeout seconds.
"""
import argparse
import os
import ssl
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--dir", required=True, help="the device's files")
    p.add_argument("--client-id", required=True, help="the thing name")
    p.add_argument("--topic", default=None, help="default: <client-id>/hello")
    p.add_argument("--timeout", type=float, default=10)
    a = p.parse_args()
    topic = a.topic or a.client_id + "/hello"

    try:  # paho-mqtt 2 wants the callback API version; 1.x has no such argument
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id=a.client_id)
    except AttributeError:
        c = mqtt.Client(client_id=a.client_id)
    c.tls_set(ca_certs=os.path.join(a.dir, "core-ca.pem"),
              certfile=os.path.join(a.dir, "device.pem.crt"),
              keyfile=os.path.join(a.dir, "private.pem.key"),
              tls_version=ssl.PROTOCOL_TLS_CLIENT)

    got = threading.Event()

    def on_connect(client, userdata, flags, rc):
        if rc != 0:
            print("connect refused:", mqtt.connack_string(rc), file=sys.stderr)
            sys.exit(1)
        client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, granted):
        client.publish(topic, "hello from python", qos=1)

    def on_message(client, userdata, msg):
        print(msg.topic, msg.payload.decode())
        got.set()

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()
    ok = got.wait(a.timeout)
    c.disconnect()
    c.loop_stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
