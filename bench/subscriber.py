"""The two reference consumers the service is measured against, on the service's own identity and
persistent session (aiomqtt 2.5.1, as the service uses):

- `bare`: receive and count the data messages, nothing else (aiomqtt acknowledges on receipt): the
  ceiling of a Python MQTT consumer on this machine;
- `diy`: what a do-it-yourself script does: for each message, parse the JSON, make line protocol and
  POST it to InfluxDB's /write (httpx, connection kept alive), awaited before the next message.

Run as `python -m bench.subscriber` with a JSON spec on standard input; stops once `expect` data
messages have arrived (or `timeout` seconds passed without one) and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiomqtt
import httpx

from bench.mqtt import tls_context
from shared.identities import INGEST_IDENTITY


async def consume(spec: dict[str, Any]) -> dict[str, Any]:
    diy = spec["mode"] == "diy"
    context = tls_context(spec["ca"], spec["cert"], spec["key"])
    http = None
    if diy:
        http = httpx.AsyncClient(base_url=spec["influx_url"], auth=tuple(spec["influx_auth"]), timeout=30)
    expect = int(spec["expect"])
    count = points = errors = 0
    first = last = 0.0
    client = aiomqtt.Client(
        "127.0.0.1",
        int(spec["port"]),
        identifier=INGEST_IDENTITY,
        clean_session=False,
        keepalive=30,
        tls_context=context,
    )
    async with client:
        connected = time.time()
        messages = aiomqtt_messages(client)
        while count < expect:
            try:
                message = await asyncio.wait_for(anext(messages), spec.get("timeout", 60))
            except TimeoutError:
                break
            topic = message.topic.value
            if not topic.endswith("/data"):
                continue
            if diy:
                assert http is not None
                payload = message.payload
                assert isinstance(payload, bytes)
                batch = json.loads(payload)
                device = topic.split("/")[2]
                sensors = batch["s"]
                t0 = batch["t0"]
                lines = [
                    f"readings,device={device},sensor={sensors[i]} value={float(v)!r} {t0 + off}"
                    for off, i, v in batch["r"]
                    if v is not None
                ]
                response = await http.post(
                    "/write", params={"db": spec["database"], "precision": "ms"}, content="\n".join(lines)
                )
                if response.status_code != 204:
                    errors += 1
                points += len(lines)
            count += 1
            now = time.time()
            if count == 1:
                first = now
            last = now
    if http is not None:
        await http.aclose()
    return {
        "messages": count,
        "points": points,
        "errors": errors,
        "connected": connected,
        "first": first,
        "last": last,
        "cpu_s": time.process_time(),
    }


def aiomqtt_messages(client: aiomqtt.Client) -> Any:
    return aiter(client.messages)


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    result = asyncio.run(consume(spec))
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()
