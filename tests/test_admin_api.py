"""The admin and read API: bearer tokens, the device lifecycle over HTTP against the real registry, CA
and broker, and Host checking. The app runs in-process without its lifespan (no second MQTT consumer
beside the session's service); the lifecycle reaches the real broker."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from ingest import Registry, Settings, create_app
from ingest._consumer import Stats
from tests.support import IngestInfo, StackInfo, fieldlink, mqtt_client, wait_until
from tools._home import Home
from tools.cli import _stack_fallbacks

ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"


def _settings(stack: StackInfo, **changes: object) -> Settings:
    return Settings(**{**_stack_fallbacks(Home(stack.home)), **changes})  # type: ignore[arg-type]


@pytest.fixture
def api(stack: StackInfo) -> Iterator[TestClient]:
    app = create_app(_settings(stack, admin_token=ADMIN, read_token=READER))
    registry = Registry(Home(stack.home).registry_path)
    app.state.registry, app.state.stats = registry, Stats()  # what the lifespan would set
    # Not entered as a context manager: the lifespan (and a second MQTT consumer) stays off.
    yield TestClient(app, base_url="http://127.0.0.1")
    registry.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _devices(stack: StackInfo) -> list[str]:
    registry = Registry(Home(stack.home).registry_path)
    try:
        return [d.id for d in registry.devices()]
    finally:
        registry.close()


def _registered(stack: StackInfo, device: str) -> bool:
    registry = Registry(Home(stack.home).registry_path)
    try:
        return registry.get(device) is not None
    finally:
        registry.close()


@pytest.mark.parametrize(
    "headers", [{}, _bearer("wrong-token-0123456789"), _bearer(READER)], ids=["none", "wrong", "read"]
)
def test_admin_routes_refuse_without_the_admin_token(
    api: TestClient, stack: StackInfo, uid: str, headers: dict[str, str]
) -> None:
    device = f"nope-{uid}"
    calls = [
        ("POST", "/api/admin/devices", {"id": device}),
        ("GET", f"/api/admin/devices/{device}", None),
        ("POST", f"/api/admin/devices/{device}/revoke", None),
        ("POST", f"/api/admin/devices/{device}/rotate", None),
        ("POST", f"/api/admin/devices/{device}/rotate/finish", None),
        ("DELETE", f"/api/admin/devices/{device}", None),
    ]
    for method, path, body in calls:
        response = api.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    assert not _registered(stack, device)


def test_admin_api_is_closed_without_a_configured_token(stack: StackInfo, uid: str) -> None:
    client = TestClient(create_app(_settings(stack)), base_url="http://127.0.0.1")
    response = client.post("/api/admin/devices", json={"id": f"closed-{uid}"}, headers=_bearer(ADMIN))
    assert response.status_code == 403
    assert response.json() == {"detail": "the admin API is closed: FIELDLINK_ADMIN_TOKEN is not set"}
    assert not _registered(stack, f"closed-{uid}")


def test_the_running_service_without_a_token_refuses_admin_calls(
    ingest: IngestInfo, stack: StackInfo, uid: str
) -> None:
    response = httpx.post(f"{ingest.url}/api/admin/devices", json={"id": f"svc-{uid}"}, headers=_bearer(ADMIN))
    assert response.status_code == 403
    assert not _registered(stack, f"svc-{uid}")


def test_add_returns_a_working_bundle_once(api: TestClient, stack: StackInfo, uid: str, workdir: Path) -> None:
    device = f"api-{uid}"
    created = api.post("/api/admin/devices", json={"id": device, "labels": {"site": "a"}}, headers=_bearer(ADMIN))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["device"]["id"] == device
    assert body["device"]["labels"] == {"site": "a"}
    assert body["device"]["status"] == "active"
    (workdir / "cert.pem").write_text(body["bundle"]["cert_pem"])
    (workdir / "key.pem").write_text(body["bundle"]["key_pem"])
    (workdir / "ca.pem").write_text(body["bundle"]["ca_pem"])
    client = mqtt_client(stack.mqtt_port, workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem", device)
    client.loop_stop()
    client.disconnect()
    shown = api.get(f"/api/admin/devices/{device}", headers=_bearer(ADMIN)).json()
    assert "key_pem" not in str(shown) and "PRIVATE KEY" not in str(shown)
    again = api.post("/api/admin/devices", json={"id": device}, headers=_bearer(ADMIN))
    assert again.status_code == 409
    assert again.json()["detail"] == f"device '{device}' is already registered"


@pytest.mark.parametrize("device_id", ["../pki", "", "A", "x" * 65, "a b"])
def test_add_refuses_bad_ids(api: TestClient, stack: StackInfo, device_id: str) -> None:
    from tests.test_lifecycle import _tree_digest

    before = _tree_digest(stack.home / "pki"), _tree_digest(stack.home / "devices"), len(_devices(stack))
    response = api.post("/api/admin/devices", json={"id": device_id}, headers=_bearer(ADMIN))
    assert response.status_code == 422, response.text
    assert "is not a valid device id" in response.json()["detail"]
    assert (_tree_digest(stack.home / "pki"), _tree_digest(stack.home / "devices"), len(_devices(stack))) == before


def test_revoke_rotate_and_delete_over_http(api: TestClient, stack: StackInfo, uid: str, workdir: Path) -> None:
    device = f"life-{uid}"
    bundle = api.post("/api/admin/devices", json={"id": device}, headers=_bearer(ADMIN)).json()["bundle"]
    for name in ("cert", "key", "ca"):
        (workdir / f"{name}.pem").write_text(bundle[f"{name}_pem"])
    rotated = api.post(f"/api/admin/devices/{device}/rotate", headers=_bearer(ADMIN))
    assert rotated.status_code == 201
    assert len(rotated.json()["device"]["certificates"]) == 2
    unused = api.post(f"/api/admin/devices/{device}/rotate/finish", headers=_bearer(ADMIN))
    assert unused.status_code == 409
    assert "does not use its new certificate yet" in unused.json()["detail"]
    forced = api.post(f"/api/admin/devices/{device}/rotate/finish?force=true", headers=_bearer(ADMIN))
    assert forced.status_code == 200
    assert forced.json()["revoked"] == 1

    # The first certificate is revoked now; connect with the second one and revoke the device live.
    for name in ("cert", "key"):
        (workdir / f"{name}.pem").write_text(rotated.json()["bundle"][f"{name}_pem"])
    client = mqtt_client(stack.mqtt_port, workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem", device)
    try:
        revoked = api.post(f"/api/admin/devices/{device}/revoke", headers=_bearer(ADMIN))
        assert revoked.status_code == 200
        result = revoked.json()
        assert (result["crl_reloaded"], result["session_closed"], result["problem"]) == (True, True, None)
        assert result["device"]["status"] == "revoked"
        assert all(c["revoked_ms"] is not None for c in result["device"]["certificates"])
        wait_until(lambda: not client.is_connected(), timeout=5)
    finally:
        client.loop_stop()
    with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
        mqtt_client(stack.mqtt_port, workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem", device).loop_stop()

    deleted = api.delete(f"/api/admin/devices/{device}", headers=_bearer(ADMIN))
    assert deleted.status_code == 204
    assert api.get(f"/api/admin/devices/{device}", headers=_bearer(ADMIN)).status_code == 404
    assert not _registered(stack, device)


def test_read_endpoints_need_the_read_or_admin_token(api: TestClient, stack: StackInfo, uid: str) -> None:
    device = f"seen-{uid}"
    stack.add_device(device)
    assert api.get("/api/devices").status_code == 401
    assert api.get("/api/devices", headers=_bearer("not-the-token-0123")).status_code == 401
    for token in (READER, ADMIN):
        response = api.get("/api/devices", headers=_bearer(token))
        assert response.status_code == 200
        assert device in [d["id"] for d in response.json()]
    assert api.get(f"/api/devices/{device}/latest", headers=_bearer(READER)).json() == {
        "device": device,
        "readings": {},
        "source": "memory",  # this app has no lifespan, so no database reader
    }


def test_only_configured_host_names_are_served(api: TestClient) -> None:
    rebound = api.get("/healthz", headers={"Host": "attacker.example"})
    assert (rebound.status_code, rebound.text) == (400, "Invalid host header")
    assert api.get("/api/devices", headers={"Host": "localhost:8000", **_bearer(READER)}).status_code == 200


def test_openapi_documents_the_admin_routes_behind_bearer_auth(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    assert set(spec["paths"]) >= {
        "/api/admin/devices",
        "/api/admin/devices/{device_id}",
        "/api/admin/devices/{device_id}/revoke",
        "/api/admin/devices/{device_id}/rotate",
        "/api/admin/devices/{device_id}/rotate/finish",
    }
    assert spec["paths"]["/api/admin/devices"]["post"]["security"] == [{"HTTPBearer": []}]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_settings_refuse_unsafe_admin_configurations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = {name: tmp_path / f"{name}.pem" for name in ("mqtt_ca", "mqtt_cert", "mqtt_key")}
    for path in tls.values():
        path.write_text("x")
    monkeypatch.setenv("FIELDLINK_ENV", "production")
    with pytest.raises(ValidationError, match="production with the admin API needs FIELDLINK_ADMIN_TOKEN"):
        Settings(influx_token="t", **tls)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="FIELDLINK_ADMIN_TOKEN must be at least 16 characters"):
        Settings(influx_token="t", admin_token="short", **tls)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not '\\*'"):
        Settings(influx_token="t", admin_token=ADMIN, allowed_hosts=["*"], **tls)  # type: ignore[arg-type]
    assert Settings(influx_token="t", admin_api=False, **tls).admin_api is False  # type: ignore[arg-type]
    assert Settings(influx_token="t", admin_token=ADMIN, **tls).admin_token is not None  # type: ignore[arg-type]


def test_labels_are_bounded_alike_over_http_and_in_the_cli(api: TestClient, stack: StackInfo, uid: str) -> None:
    device = f"labels-{uid}"
    too_many = {f"k{i}": "v" for i in range(33)}
    for labels in (too_many, {"": "v"}, {"k" * 65: "v"}, {"k": "v" * 257}):
        response = api.post("/api/admin/devices", json={"id": device, "labels": labels}, headers=_bearer(ADMIN))
        assert response.status_code == 422, response.text
    result = fieldlink(stack.home, "device", "add", device, "--label", "k=" + "v" * 257)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: label 'k': keys take 1-64 characters, values up to 256"
    assert not _registered(stack, device)
