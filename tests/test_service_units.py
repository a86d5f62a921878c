"""Settings and verification, against a real SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest import Registry, RejectedMessage, Settings, load_settings
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
    assert Settings(influx_token="t", **tls_files).env == "production"  # type: ignore[arg-type]


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
    registry.add("node-1", "ab" * 32)
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
    registry.add("a", "00")
    with pytest.raises(RegistryError, match="already registered"):
        registry.add("a", "00")
    with pytest.raises(RegistryError, match="not a valid device id"):
        registry.add("A B", "00")
    assert [d.id for d in registry.devices()] == ["a"]


def test_line_protocol_is_exact() -> None:
    from ingest._writer import to_lines

    assert to_lines("node-1", [(1700000000123, "temperature", 21.5), (1700000000124, "rh", 40.0)]) == [
        "readings,device=node-1,sensor=temperature value=21.5 1700000000123",
        "readings,device=node-1,sensor=rh value=40.0 1700000000124",
    ]
