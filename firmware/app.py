# The node application: sample sensors, batch, keep batches in the outbox until the broker has them.
# Everything that touches hardware comes from the board, so this runs unchanged on the unix port.
import asyncio
import json
import math
import ssl
import time

from firmware.batcher import Batcher
from firmware.hal import ConfigError
from firmware.mqtt import MQTTClient, MQTTError
from firmware.outbox import Outbox
from shared import protocol

_DEFAULTS = {
    "sample_interval_ms": 1000,
    "batch": {"max_readings": 60, "max_age_ms": 10000},
    "outbox": {"capacity": 64},
    "drain_timeout_ms": 15000,
}


def load_config(text):
    """Parse and check the device config; raise ConfigError with what is wrong."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ConfigError("config is not JSON: " + str(exc))
    if not isinstance(config, dict):
        raise ConfigError("config must be a JSON object")
    for key, value in _DEFAULTS.items():
        config.setdefault(key, value)
    if not protocol.valid_id(config.get("device_id")):
        raise ConfigError("device_id " + repr(config.get("device_id")) + " is not a valid id")
    broker = config.get("broker")
    if not isinstance(broker, dict) or not broker.get("host") or not isinstance(broker.get("port"), int):
        raise ConfigError("broker must give host and port")
    tls = config.get("tls")
    if not isinstance(tls, dict) or not all(tls.get(k) for k in ("ca", "cert", "key")):
        raise ConfigError("tls must name the ca, cert and key files")
    interval = config["sample_interval_ms"]
    if not isinstance(interval, int) or interval < 10:
        raise ConfigError("sample_interval_ms must be an integer >= 10")
    return config


class Node:
    def __init__(self, board, config, base_dir=""):
        self.board = board
        self.config = config
        self.base_dir = base_dir
        self.device_id = config["device_id"]
        sensors = board.sensors(config)
        if not sensors:
            raise ConfigError("no sensors configured")
        self.sensor_names = [name for name, _ in sensors]
        for name in self.sensor_names:
            if not protocol.valid_id(name):
                raise ConfigError("sensor name " + repr(name) + " is not a valid id")
        self.sensors = [sensor for _, sensor in sensors]
        batch = config["batch"]
        self.batcher = Batcher(self.sensor_names, batch["max_readings"], batch["max_age_ms"])
        self.outbox = Outbox(config["outbox"]["capacity"])
        self.read_errors = 0
        self.reconnects = 0
        self.sampling = True
        self._ready = asyncio.Event()
        broker = config["broker"]
        self.client = MQTTClient(
            self.device_id, broker["host"], broker["port"],
            ssl_context=self._ssl_context(config["tls"]),
            server_hostname=broker.get("server_hostname", broker["host"]),
            keepalive_s=broker.get("keepalive_s", 30),
        )
        self.client.set_will(protocol.status_topic(self.device_id), protocol.encode_status(False))

    def _path(self, name):
        if name.startswith("/") or not self.base_dir:
            return name
        return self.base_dir + "/" + name

    def _ssl_context(self, tls):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.verify_mode = ssl.CERT_REQUIRED  # the fleet CA is pinned: nothing else is trusted
        try:
            context.load_verify_locations(cadata=self.board.read_file(self._path(tls["ca"])))
            context.load_cert_chain(self.board.read_file(self._path(tls["cert"])),
                                    self.board.read_file(self._path(tls["key"])))
        except (OSError, ValueError) as exc:
            raise ConfigError("cannot load TLS files: " + repr(exc))
        return context

    def counters(self):
        return {"dropped": self.outbox.dropped, "read_errors": self.read_errors,
                "reconnects": self.reconnects, "queued": len(self.outbox)}

    def _enqueue(self, payload):
        if payload is not None:
            self.board.trace(payload)
            self.outbox.push(payload)
            self._ready.set()

    async def sample_loop(self):
        board = self.board
        interval = self.config["sample_interval_ms"]
        next_tick = board.ticks_ms()
        batcher = self.batcher
        while board.before_sample():
            now_ms = board.now_ms()
            now_ticks = board.ticks_ms()
            full = False
            for index in range(len(self.sensors)):
                try:
                    value = self.sensors[index].read(now_ms)
                except Exception as exc:  # a broken sensor costs a reading, never the loop
                    print("sensor", self.sensor_names[index], "failed:", repr(exc))
                    value = math.nan
                if value != value:
                    self.read_errors += 1
                full = batcher.add(index, value, now_ms, now_ticks, time.ticks_diff) or full
                if full:
                    self._enqueue(batcher.flush())
                    full = False
            if batcher.due(now_ticks, time.ticks_diff):
                self._enqueue(batcher.flush())
            board.feed_watchdog()
            next_tick = time.ticks_add(next_tick, interval)
            wait = time.ticks_diff(next_tick, board.ticks_ms())
            if wait < 0:  # fell behind (a slow sensor, a long GC): don't try to catch up in a burst
                next_tick = board.ticks_ms()
                wait = 0
            await asyncio.sleep_ms(wait)
        self._enqueue(batcher.flush())
        self.sampling = False
        self._ready.set()

    async def _connect(self):
        backoff = 500
        while True:
            try:
                if not await self.board.connect_network(self.config):
                    raise MQTTError("no network")
                await self.client.connect(clean_session=True)
                await self.client.publish(protocol.status_topic(self.device_id),
                                          protocol.encode_status(True, self.counters()), retain=True)
                print("connected to", self.client.host, self.client.port)
                return
            except Exception as exc:  # MQTTError, a Wi-Fi or config problem: retry, never stop
                print("mqtt:", exc, "; retrying in", backoff, "ms")
                self.reconnects += 1
                await asyncio.sleep_ms(backoff)
                backoff = min(backoff * 2, 30000)

    async def publish_loop(self):
        topic = protocol.data_topic(self.device_id)
        outbox = self.outbox
        while self.sampling or len(outbox):
            if not len(outbox):
                self._ready.clear()
                await self._ready.wait()
                continue
            if not self.client.connected:
                await self._connect()
                continue  # the ring may have moved on while we waited: look at its head again
            payload = outbox.peek()
            try:
                await self.client.publish(topic, payload, qos=1)
                # Pop only the batch the broker has: if the ring dropped it meanwhile, the head is
                # another batch that still waits its turn.
                if outbox.peek() is payload:
                    outbox.pop()
            except Exception as exc:  # MQTTError or anything unforeseen: never end the loop
                # The batch stays in the outbox and goes again after the reconnect.
                print("mqtt: publish failed:", repr(exc))
                await self.client.close()
                await asyncio.sleep_ms(200)

    async def run(self):
        sampler = asyncio.create_task(self.sample_loop())
        try:
            await self._publish_until_drained()
        finally:
            sampler.cancel()
        if self.client.connected:
            try:
                await self.client.publish(protocol.status_topic(self.device_id),
                                          protocol.encode_status(False, self.counters()), retain=True)
            except MQTTError:
                pass
            await self.client.disconnect()
        print("stopped:", json.dumps(self.counters()))

    async def _publish_until_drained(self):
        publisher = asyncio.create_task(self.publish_loop())
        while self.sampling:
            await asyncio.sleep_ms(100)
        # Sampling is over: give the outbox a bounded time to drain.
        deadline = time.ticks_add(time.ticks_ms(), self.config["drain_timeout_ms"])
        while len(self.outbox) and time.ticks_diff(deadline, time.ticks_ms()) > 0:
            await asyncio.sleep_ms(50)
        publisher.cancel()
        await asyncio.sleep_ms(0)
