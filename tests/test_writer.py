"""The InfluxDB writer (http.client in a thread) against a scripted HTTP server: the request it makes on
each path, what each answer means, and a kept-alive connection the server closed while idle."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from ingest import RejectedMessage, Settings, SettingsError, StorageError
from ingest._writer import InfluxWriter
from tools._process import free_port


class Script(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as InfluxDB
    # Set per test on a subclass of its own (the `server` fixture): what to answer, what came.
    answers: ClassVar[list[tuple[int, bytes]]] = []
    seen: ClassVar[list[dict[str, Any]]] = []
    close_after: ClassVar[bool] = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        status, text = self.answers.pop(0) if self.answers else (204, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
        if self.close_after:  # a server that drops idle connections, without saying so
            self.close_connection = True

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Script]]]:
    handler = type("Handler", (Script,), {"answers": [], "seen": [], "close_after": False})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _write(settings: Settings, *bodies: bytes) -> None:
    async def main() -> None:
        writer = InfluxWriter(settings)
        try:
            for body in bodies:
                await writer.write(body)
        finally:
            await writer.close()

    asyncio.run(main())


def test_v1_posts_to_write_with_basic_auth(server: tuple[str, type[Script]]) -> None:
    url, script = server
    settings = Settings(
        mqtt_tls=False,
        influx_api="v1",
        influx_url=url + "/prefix/",
        influx_database="farm db",
        influx_username="writer",
        influx_password="s3cret",  # type: ignore[arg-type]
    )
    _write(settings, b"readings,device=a,sensor=t value=1.0 5", b"second")
    assert script.seen == [
        {
            "path": "/prefix/write?db=farm+db&precision=ms",
            "auth": "Basic d3JpdGVyOnMzY3JldA==",  # writer:s3cret
            "body": b"readings,device=a,sensor=t value=1.0 5",
        },
        {"path": "/prefix/write?db=farm+db&precision=ms", "auth": "Basic d3JpdGVyOnMzY3JldA==", "body": b"second"},
    ]


def test_v2_posts_to_the_v2_api_with_a_token(server: tuple[str, type[Script]]) -> None:
    url, script = server
    settings = Settings(mqtt_tls=False, influx_api="v2", influx_url=url, influx_token="tok", influx_org="o")  # type: ignore[arg-type]
    _write(settings, b"x")
    assert script.seen == [
        {"path": "/api/v2/write?org=o&bucket=fieldlink&precision=ms", "auth": "Token tok", "body": b"x"}
    ]


def test_answers(server: tuple[str, type[Script]]) -> None:
    url, script = server
    settings = Settings(mqtt_tls=False, influx_api="v1", influx_url=url)
    script.answers += [(400, b'{"error":"field type conflict"}')]
    with pytest.raises(RejectedMessage, match="field type conflict") as refused:
        _write(settings, b"x")
    assert refused.value.reason == "storage_rejected" and refused.value.dropped is None
    # A partial write stored the others and says how many it dropped; InfluxDB 2.x answers 422.
    script.answers += [
        (400, b'{"error":"partial write: points beyond retention policy dropped=2"}'),
        (
            422,
            b'{"code":"unprocessable entity","message":"failure writing points to database: partial write: '
            b'field type conflict: dropped=3"}',
        ),
    ]
    for dropped in (2, 3):
        with pytest.raises(RejectedMessage, match="partial write") as refused:
            _write(settings, b"x")
        assert refused.value.dropped == dropped
    script.answers += [(503, b"busy"), (401, b"who are you")]
    for detail in ("HTTP 503: busy", "HTTP 401: who are you"):
        with pytest.raises(StorageError, match=detail):
            _write(settings, b"x")
    script.answers += [(200, b"")]  # what some servers answer
    _write(settings, b"x")


def test_a_connection_closed_while_idle_costs_the_batch_nothing(server: tuple[str, type[Script]]) -> None:
    url, script = server
    script.close_after = True
    _write(Settings(mqtt_tls=False, influx_api="v1", influx_url=url), b"one", b"two", b"three")
    assert [seen["body"] for seen in script.seen] == [b"one", b"two", b"three"]


def test_no_server_is_a_storage_error_and_a_bad_url_a_settings_error() -> None:
    with pytest.raises(StorageError, match="InfluxDB unreachable"):
        _write(Settings(mqtt_tls=False, influx_api="v1", influx_url=f"http://127.0.0.1:{free_port()}"), b"x")
    with pytest.raises(SettingsError, match="is not an http"):
        InfluxWriter(Settings(mqtt_tls=False, influx_url="ftp://somewhere"))
