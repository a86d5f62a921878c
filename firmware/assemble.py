# Making the node (firmware/app.py: Node) from the board, the checked config and the sensors, with its
# MQTT client, batcher and publisher: start-up phase two, run once by firmware/main.py once phase one
# (firmware/start.py) is gone, and dropped again, so that constructors are not in RAM while the node
# runs (the classes have no __init__; tests make them with these functions too).
import select
import sys

from firmware.errors import ConfigError
from shared import protocol


def start(prepared):
    """(the node, seconds between heap reports or None) from firmware/start.py: prepare(), with this
    module dropped; exits with status 2 on a config error. Loaded before the runtime modules it
    loads: its room is then one piece when it goes."""
    options, board, config, tls, names, groups, error = prepared
    try:
        made = node(board, config, tls, names, groups, error)
    except (ConfigError, OSError) as exc:
        print("fieldlink node: " + str(exc))
        sys.exit(2)
    sys.modules.pop("firmware.assemble", None)
    delattr(sys.modules["firmware"], "assemble")
    print("node", made.device_id, "starting on", board.name, "with sensors", names)
    return made, options.get("stats-every")


def node(board, config, tls, sensor_names, groups, config_error=None):
    """The node (firmware/app.py: Node) from the board, the checked config and the sensors."""
    from firmware.app import Node

    self = Node()
    self.board = board
    broker = config["broker"]
    device_id = config["device_id"]
    status_topic = protocol.status_topic(device_id)
    client = make_client(
        device_id,
        broker["host"],
        broker["port"],
        ssl_context=tls,
        server_hostname=broker.get("server_hostname", broker["host"]),
        keepalive_s=broker["keepalive_s"],
        timeout_ms=broker["timeout_ms"],
        will=(status_topic, protocol.encode_status(False), True, 1),
    )
    # Only what the node needs later is kept: the parsed config dict would hold RAM for nothing.
    self.drain_timeout_ms = config["drain_timeout_ms"]
    self.config_error = config_error  # why the node runs on its last good config, if it does
    self.device_id = device_id
    self.cert_id = config.get("cert_id")  # the certificate in use, named in the status
    self.sensor_names = sensor_names
    self.groups = groups
    batch = config["batch"]
    try:
        self.batcher = batcher(sensor_names, batch["max_readings"], batch["max_age_ms"])
    except ValueError as exc:
        raise ConfigError(str(exc))
    # The spool, booted at start-up (firmware/config.py): batches a previous boot left are sent
    # first, and this boot's sequences lie above all of theirs.
    self.spool = config["spool"]
    self.batcher.seq = self.spool.seq
    self.publisher = publisher(
        client,
        self.spool,
        board,
        config.get("wifi"),
        protocol.data_topic(device_id),
        status_topic,
        protocol.ack_topic(device_id),
        self.status,
    )
    self.read_errors = 0
    self.oom = 0  # allocations the heap could not give (MemoryError), each survived (app.Node.run)
    self.loop_errors = 0  # other exceptions the loop survived (a failed flash write), likewise
    self._poller = select.poll()
    self._polled = None  # the socket registered with the poller
    # Health (the status every minute): the firmware version, this boot's number and where the
    # count of boots that ended early is kept (firmware/config.py: _boot), the uptime so far.
    self.fw = config.get("fw")
    self.boot_count, self._boot_file = config.get("boot") or (0, None)
    self._up_ms = self._up_ticks = 0
    # The watchdog's patience: three times the longest interval between two samples, at least 10 s.
    self._stall_ms = 10000
    for group in groups:
        self._stall_ms = max(self._stall_ms, 3 * group.interval_ms)
    return self


def make_client(client_id, host, port, keepalive_s, timeout_ms, ssl_context=None, server_hostname=None, will=None):
    """The node's MQTT client (firmware/mqtt.py: MQTTClient)."""
    from firmware.mqtt import DOWN, MQTTClient

    self = MQTTClient()
    # will: (topic, payload, retain, qos), published by the broker if the connection is lost
    self.client_id = client_id
    self.host = host
    self.port = port
    self.ssl_context = ssl_context
    self.server_hostname = server_hostname
    self.keepalive_ms = keepalive_s * 1000
    self.timeout_ms = timeout_ms
    self.sock = None
    self.state = DOWN
    # Packet id of the QoS 1 publish awaiting its PUBACK, or of the subscription awaiting its
    # SUBACK; 0 when none. `granted` is the last SUBACK's return code (0x80: refused).
    self.inflight = 0
    self.granted = None
    self._awaiting = "PUBACK"
    self.skipped = 0  # incoming PUBLISH packets larger than max_incoming, read past
    self.will = will
    self.out = []  # what is still to be written, oldest first (the node polls for writing while any)
    self._rx = bytearray(5)  # a fixed header: the packet type and up to four length bytes
    view = memoryview(self._rx)
    # Where the next header bytes go, by how many have come: made once, so that polling an idle
    # socket allocates nothing.
    self._rx_into = (view[0:2], view[1:2], view[2:3], view[3:4], view[4:5])
    self._rx_len = 0
    self._body = None  # the body being read (a bytearray of its length), or None
    self._body_len = -1  # its length once the header is complete; -1 while reading the header
    self._got = 0  # body bytes read (or skipped) so far
    self._pid = 0
    self._since = 0  # ticks of the CONNECT, or of the publish in flight
    self._last_rx = 0
    self._last_tx = 0
    return self


def publisher(client, spool, board, wifi, data_topic, status_topic, ack_topic, status):
    """The node's publish state machine (firmware/app.py: Publisher)."""
    from firmware.app import Publisher

    self = Publisher()
    # board: connect_network(wifi), True once the network is up, and online(); status(online): the
    # status payload.
    self.client = client
    self.spool = spool
    self.board = board
    self.wifi = wifi
    self.data_topic = data_topic
    self.status_topic = status_topic
    self.ack_topic = ack_topic
    self._ack_topic = ack_topic.encode()
    self.status = status
    self.reconnects = 0
    self.bad_acks = 0  # ack payloads that are not version-1 acks
    self.unsynced = 0  # batches of an earlier boot that never knew the time: refused (not sent)
    self.status_due = False  # the node asks for a status (health) to go when the link is free
    self._held = None  # a batch waiting for this boot's clock
    self.sending = None  # what the packet in flight carries: _SUBSCRIBE, _ONLINE, a batch, or None
    self._subscribed = False  # the ack subscription went out on this connection
    self._announced = False  # the retained "online" status went out on this connection
    self._retry_at = 0
    self.backoff_ms = 500  # the wait before the next reconnect if this one fails (app._FIRST_BACKOFF_MS)
    client.on_message = self.on_message
    return self


def batcher(sensor_names, max_readings, max_age_ms):
    """The node's batcher (firmware/batcher.py: Batcher); ValueError for sizes the protocol refuses."""
    from array import array

    from firmware.batcher import Batcher

    self = Batcher()
    if not 0 < max_readings <= protocol.MAX_READINGS:
        raise ValueError("batch max_readings must be 1.." + str(protocol.MAX_READINGS))
    self.sensor_names = list(sensor_names)
    self.max_readings = max_readings
    self.max_age_ms = max_age_ms
    self._offsets = array("l", [0] * max_readings)
    self._indexes = bytearray(max_readings)
    self._values = array("d", [0.0] * max_readings)
    self._last = array("l", [0] * len(sensor_names))  # each sensor's last offset in this batch
    self._count = 0
    self._t0_ms = 0
    self._t0_ticks = 0
    self._next = self._next_seq = 0  # what done() sets, worked out by encode()
    self._end = -1  # time of the last reading of the last batch with a clock (epoch ms)
    self._rel_end = -1  # ms since boot of the last reading of the last batch without one
    self.boot_ticks = 0
    self.boot_ms = 0  # epoch ms at boot_ticks, once a reading has had a clock
    self.seq = 0
    return self
