"""The read side: InfluxDB's read-only user, typed responses in OpenAPI, one time unit."""

from __future__ import annotations

import json

import httpx
from fastapi.testclient import TestClient

from ingest import Settings, create_app
from tests.support import StackInfo


def test_the_read_user_reads_and_cannot_write(stack: StackInfo) -> None:
    reader = json.loads((stack.home / "influxdb" / "credentials.json").read_text())["reader"]
    auth = (reader["username"], reader["password"])
    query = httpx.post(f"{stack.influx_url}/query", data={"db": "fieldlink", "q": "SHOW MEASUREMENTS"}, auth=auth)
    assert query.status_code == 200 and "error" not in query.json()["results"][0]
    point = b"readings,device=x,sensor=y value=1"
    write = httpx.post(f"{stack.influx_url}/write", params={"db": "fieldlink"}, content=point, auth=auth)
    assert write.status_code == 403


def test_every_route_has_a_typed_response_and_times_are_milliseconds() -> None:
    spec = TestClient(create_app(Settings(mqtt_tls=False)), base_url="http://127.0.0.1").get("/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            ok = [code for code in operation["responses"] if code.startswith("2")]
            assert ok, (method, path)
            content = operation["responses"][ok[0]].get("content", {})
            if path == "/metrics" or ok[0] == "204":
                continue
            schema = content["application/json"]["schema"]
            assert "$ref" in schema or "$ref" in schema.get("items", {}), (method, path, schema)
    for name, model in spec["components"]["schemas"].items():
        for field in model.get("properties", {}):
            assert not field.endswith(("_at", "_s")) or field == "uptime_s", (name, field)  # times: *_ms
