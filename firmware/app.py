# The node application: sample sensors, filter, batch, keep batches in the outbox until the broker
# has them. Everything that touches hardware or time comes from the board, so this runs unchanged on
# the unix port. Config checking and building the sensors live in firmware/config.py and
# firmware/sensors.py, which run before this module is imported and are unloaded then.
import asyncio
import gc
import json
import ssl
import time

from firmware.batcher import Batcher
from firmware.hal import ConfigError
from firmware.mqtt import MQTTClient, MQTTError
from firmware.outbox import Outbox
from shared import protocol

_HOUSEKEEPING_MS = 100


class Node:
    def __init__(self, board, config, sensor_names, groups, base_dir="", config_error=None):
        self.board = board
        self.base_dir = base_dir
        # First, while the heap is freshly collected: mbedTLS wants a few kilobytes in one piece.
        tls = self._ssl_context(config["tls"])
        broker = config["broker"]
        self.client = MQTTClient(
            config["device_id"], broker["host"], broker["port"], ssl_context=tls,
            server_hostname=broker.get("server_hostname", broker["host"]), keepalive_s=broker.get("keepalive_s", 30),
        )
        # Only what the node needs later is kept: the parsed config dict would hold RAM for nothing.
        self.wifi = config.get("wifi")
        self.drain_timeout_ms = config["drain_timeout_ms"]
        self.config_error = config_error  # why the node runs on its last good config, if it does
        self.device_id = config["device_id"]
        self.sensor_names = sensor_names
        self.groups = groups
        batch = config["batch"]
        try:
            self.batcher = Batcher(self.sensor_names, batch["max_readings"], batch["max_age_ms"])
            self.outbox = Outbox(config["outbox"]["capacity"], config["outbox"]["max_bytes"])
        except ValueError as exc:
            raise ConfigError(str(exc))
        self.read_errors = 0
        self.reconnects = 0
        self.sampling = True
        self._ready = asyncio.Event()
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
        driver_errors = 0
        for group in self.groups:
            driver_errors += group.driver.errors
        return {"dropped": self.outbox.dropped, "read_errors": self.read_errors,
                "driver_errors": driver_errors, "reconnects": self.reconnects,
                "queued": len(self.outbox), "queued_bytes": self.outbox.bytes}

    def status(self, online):
        return protocol.encode_status(online, self.counters(), self.config_error)

    # --- sampling ------------------------------------------------------------------------------------
    def _enqueue(self, payload):
        if payload is not None:
            self.board.trace(payload)
            self.outbox.push(payload)
            self._ready.set()

    def _add(self, sensor_index, value):
        board = self.board
        if self.batcher.add(sensor_index, value, board.now_ms(), board.ticks_ms(), time.ticks_diff):
            self._enqueue(self.batcher.flush())

    async def _sample_group(self, group):
        board = self.board
        driver = group.driver
        channels = group.channels
        next_tick = board.ticks_ms()
        while board.running() and not driver.exhausted:
            board.before_measure(board.now_ms())
            started = driver.start(board.ticks_ms())
            if driver.exhausted:
                break
            if started and driver.conversion_ms:
                await board.sleep_ms(driver.conversion_ms)
            if started:
                driver.measure(board.ticks_ms())
            now = board.ticks_ms()
            values = driver.values
            for sensor_index, channel_index, chain in channels:
                raw = values[channel_index]
                if raw != raw:
                    self.read_errors += 1
                value = chain.process(raw, now)
                if value is not None:
                    self._add(sensor_index, value)
            next_tick = time.ticks_add(next_tick, group.interval_ms)
            wait = time.ticks_diff(next_tick, board.ticks_ms())
            if wait < 0:  # fell behind (a slow bus, a long GC): don't try to catch up in a burst
                next_tick = board.ticks_ms()
                wait = 0
            await board.sleep_ms(wait)

    async def _housekeeping(self):
        """Timed filters' outputs, the batch age limit, the watchdog: every 100 ms of device time."""
        board = self.board
        timed = [g for g in self.groups if g.timed]
        while self.sampling:
            now = board.ticks_ms()
            for group in timed:
                for sensor_index, _, chain in group.channels:
                    value = chain.poll(now)
                    if value is not None:
                        self._add(sensor_index, value)
            if self.batcher.due(now, time.ticks_diff):
                self._enqueue(self.batcher.flush())
            board.feed_watchdog()
            await board.sleep_ms(_HOUSEKEEPING_MS)

    async def sample(self):
        housekeeping = asyncio.create_task(self._housekeeping())
        await asyncio.gather(*[self._sample_group(g) for g in self.groups])
        self._enqueue(self.batcher.flush())
        self.sampling = False
        self._ready.set()
        await housekeeping

    # --- publishing ----------------------------------------------------------------------------------
    async def _connect(self):
        backoff = 500
        while True:
            try:
                if not await self.board.connect_network(self.wifi):
                    raise MQTTError("no network")
                await self.client.connect(clean_session=True)
                await self.client.publish(protocol.status_topic(self.device_id), self.status(True), retain=True)
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

    async def stats_loop(self, every_s):
        """Print the heap after a collection: the steady-state RAM of the node (benchmarks read it)."""
        while self.sampling:
            await self.board.sleep_ms(int(every_s * 1000))
            gc.collect()
            print("heap:", json.dumps({"alloc": gc.mem_alloc(), "free": gc.mem_free(),
                                       "device_s": (self.board.now_ms() - self._started_ms) // 1000,
                                       "queued": len(self.outbox), "dropped": self.outbox.dropped}))

    async def run(self, stats_every_s=None):
        self._started_ms = self.board.now_ms()
        sampler = asyncio.create_task(self.sample())
        stats = asyncio.create_task(self.stats_loop(stats_every_s)) if stats_every_s else None
        publisher = asyncio.create_task(self.publish_loop())
        try:
            await sampler
            # Sampling is over (unix port: duration or replay ended): a bounded time to drain.
            deadline = time.ticks_add(time.ticks_ms(), self.drain_timeout_ms)
            while len(self.outbox) and time.ticks_diff(deadline, time.ticks_ms()) > 0:
                await asyncio.sleep_ms(50)
        finally:
            publisher.cancel()
            if stats:
                stats.cancel()
        if self.client.connected:
            try:
                await self.client.publish(protocol.status_topic(self.device_id), self.status(False), retain=True)
            except MQTTError:
                pass
            await self.client.disconnect()
        print("stopped:", json.dumps(self.counters()))
