"""Settings and verification, against a real SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest import Issued, Registry, RejectedMessage, Settings, load_settings
from ingest._consumer import Verifier
from shared.protocol import encode_batch


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pem" for name in ("mqtt_ca", "mqtt_cert", "mqtt_key")}
    for path in files.values():
        path.write_text("x")
    return files


def test_production_refuses_unsafe_settings(tls_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDLINK_ENV", "production")
    with pytest.raises(ValidationError, match="production with the v2 API needs FIELDLINK_INFLUX_TOKEN"):
        Settings(**tls_files)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="production needs FIELDLINK_MQTT_TLS=true"):
        Settings(mqtt_tls=False, influx_token="t")  # type: ignore[arg-type]
    assert Settings(influx_token="t", admin_api=False, **tls_files).env == "production"  # type: ignore[arg-type]


def test_tls_files_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="FIELDLINK_MQTT_CA is required with TLS"):
        Settings()


def test_environment_beats_fallbacks(tls_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDLINK_MQTT_PORT", "1234")
    settings = load_settings({"mqtt_port": 9999, "influx_api": "v1", **tls_files})
    assert settings.mqtt_port == 1234
    assert settings.influx_api == "v1"


@pytest.fixture
def verifier(tmp_path: Path) -> tuple[Verifier, Registry]:
    registry = Registry(tmp_path / "registry.db")
    registry.add("node-1", Issued("01", "ab" * 32, 0.0))
    settings = Settings(mqtt_tls=False, max_clock_skew_s=60)
    return Verifier(settings, registry), registry


def test_verifier_accepts_and_splits_failed_reads(verifier: tuple[Verifier, Registry]) -> None:
    check, _ = verifier
    payload = encode_batch(4, 1000, ["t"], [(0, 0, 1.5), (10, 0, float("nan"))])
    assert check.check("fl/v1/node-1/data", payload, now_ms=2000) == ("node-1", 4, [(1000, "t", 1.5)], 1)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("fl/v1/node-2/data", encode_batch(0, 1000, ["t"], [(0, 0, 1.0)]), "unregistered"),
        ("fl/v1/node-1/status", encode_batch(0, 1000, ["t"], [(0, 0, 1.0)]), "bad_topic"),
        ("fl/v1/node-1/data", encode_batch(0, 70_000, ["t"], [(0, 0, 1.0)]), "clock_skew"),
        ("fl/v1/node-1/data", b"\xff\xfe", "malformed"),
    ],
)
def test_verifier_rejections(verifier: tuple[Verifier, Registry], topic: str, payload: bytes, reason: str) -> None:
    check, _ = verifier
    with pytest.raises(RejectedMessage) as caught:
        check.check(topic, payload, now_ms=2000)
    assert caught.value.reason == reason


def test_registry_rejects_duplicates_and_bad_ids(tmp_path: Path) -> None:
    from ingest import RegistryError

    registry = Registry(tmp_path / "r.db")
    registry.add("a", Issued("01", "00" * 32, 0.0))
    with pytest.raises(RegistryError, match="already registered"):
        registry.add("a", Issued("01", "00" * 32, 0.0))
    with pytest.raises(RegistryError, match="not a valid device id"):
        registry.add("A B", Issued("03", "02" * 32, 0.0))
    assert [d.id for d in registry.devices()] == ["a"]


def test_line_protocol_is_exact() -> None:
    from ingest._writer import to_text

    assert to_text("node-1", [(1700000000123, "temperature", 21.5), (1700000000124, "rh", 40.0)]) == (
        "readings,device=node-1,sensor=temperature value=21.5 1700000000123\n"
        "readings,device=node-1,sensor=rh value=40.0 1700000000124"
    )


def test_registry_migrates_a_version_1_file(tmp_path: Path) -> None:
    import sqlite3

    from ingest import Issued
    from ingest._registry import SCHEMA_VERSION

    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE devices (id TEXT PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('active', 'revoked')), "
        "cert_sha256 TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    db.executemany(
        "INSERT INTO devices VALUES (?, ?, ?, ?)", [("a", "active", "aa" * 32, 1.0), ("b", "revoked", "bb" * 32, 2.0)]
    )
    db.commit()
    db.close()

    registry = Registry(path)
    try:
        assert registry._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        a, b = registry.devices()
        assert (a.id, a.status, a.created_at, a.last_seen_ms, a.labels) == ("a", "active", 1.0, None, {})
        assert [(c.sha256, c.serial, c.revoked_at) for c in a.certificates] == [("aa" * 32, None, None)]
        assert (b.status, b.certificates[0].revoked_at) == ("revoked", 2.0)
        assert registry.revoked_certificates() == []  # no serial known yet: nothing for the CRL
        registry.set_serial("bb" * 32, "1f")
        assert registry.revoked_certificates() == [("1f", 2.0)]
        registry.add("c", Issued(serial="2e", sha256="cc" * 32, not_after=9.0))
    finally:
        registry.close()
    reopened = Registry(path)  # a second open finds version 2 and changes nothing
    try:
        assert [d.id for d in reopened.devices()] == ["a", "b", "c"]
    finally:
        reopened.close()


def test_registry_refuses_a_newer_schema(tmp_path: Path) -> None:
    import sqlite3

    from ingest import RegistryError

    path = tmp_path / "future.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(RegistryError, match="schema version 99; this fieldlink knows up to 2"):
        Registry(path)


def test_registry_certificates_through_rotation_and_revocation(tmp_path: Path) -> None:
    from ingest import Issued, RegistryError

    registry = Registry(tmp_path / "r.db")
    old, new = Issued("01", "aa" * 32, 1.0), Issued("02", "bb" * 32, 2.0)
    registry.add("d", old)
    registry.add_certificate("d", new)
    assert registry.certificate_known("d", "aa" * 8) and registry.certificate_known("d", "bb" * 8)
    assert not registry.certificate_known("d", "cc" * 8)
    assert registry.get("d").cert_in_use == "bb" * 32  # type: ignore[union-attr]
    assert registry.revoke_certificates("d", keep=new.sha256) == 1
    assert not registry.certificate_known("d", "aa" * 8)
    assert [s for s, _ in registry.revoked_certificates()] == ["01"]
    with pytest.raises(RegistryError, match="is active; revoke it first"):
        registry.remove("d")
    registry.revoke("d")
    assert registry.status("d") == "revoked"
    with pytest.raises(RegistryError, match="is revoked; it gets no new certificate"):
        registry.add_certificate("d", Issued("03", "dd" * 32, 3.0))
    registry.remove("d")
    assert registry.status("d") is None
    assert [s for s, _ in registry.revoked_certificates()] == ["01", "02"]  # kept for the CRL
    registry.close()


def test_the_service_keeps_every_counter_the_node_reports() -> None:
    # A counter the decoder does not know is left out of the health point: the node's must all be known.
    import ast
    from pathlib import Path

    from shared import decode

    tree = ast.parse((Path(__file__).parent.parent / "firmware" / "health.py").read_text())
    (function,) = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "counters"]
    (returned,) = [node.value for node in ast.walk(function) if isinstance(node, ast.Return)]
    assert isinstance(returned, ast.Dict)
    names = [key.value for key in returned.keys if isinstance(key, ast.Constant)]
    assert len(names) == len(returned.keys) and set(names) == set(decode.STATUS_COUNTERS)
    report = decode.decode_status_report(b'{"v":1,"online":true,"counters":{"dropped":1,"made_up":7}}')
    assert report["counters"] == {"dropped": 1}
