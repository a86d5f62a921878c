"""A member of an MQTT shared subscription in a process of its own (so a test can SIGKILL it), for
tests/test_workers.py: `python -m tests.mqtt_member PORT CA CERT KEY CLIENT_ID FILTER [--ack] [--clean]`.

QoS 1 with manual acknowledgement, a persistent session unless --clean; with --ack it acknowledges what
it gets, otherwise nothing (as a worker that dies before its write). An empty FILTER subscribes nothing
and unsubscribes the filter given in --leave. Prints `ready <session present>` once its subscription (or
unsubscription) is in place, then `got <seq> <dup>` per message."""

from __future__ import annotations

import argparse
import json
import ssl
from typing import Any

import paho.mqtt.client as paho


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("port", "ca", "cert", "key", "client_id", "filter"):
        parser.add_argument(name)
    parser.add_argument("--ack", action="store_true")
    parser.add_argument("--clean", action="store_true")
    parser.add_argument("--leave")
    args = parser.parse_args()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=args.clean)
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    client.tls_set_context(context)
    client.manual_ack_set(True)

    def on_connect(c: paho.Client, _u: Any, flags: Any, _reason: Any, _p: Any) -> None:
        ready = f"ready {int(flags.session_present)}"
        if args.filter:
            c.on_subscribe = lambda *_: print(ready, flush=True)
            c.subscribe(args.filter, qos=1)
        elif args.leave:
            c.on_unsubscribe = lambda *_: print(ready, flush=True)
            c.unsubscribe(args.leave)
        else:
            print(ready, flush=True)

    def on_message(c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        print(f"got {json.loads(message.payload)['seq']} {int(message.dup)}", flush=True)
        if args.ack:
            c.ack(message.mid, message.qos)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", int(args.port), keepalive=30)
    client.loop_forever()


if __name__ == "__main__":
    main()
