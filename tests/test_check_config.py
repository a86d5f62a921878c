"""`fieldlink ingest --check-config` against the session's stack, and with settings broken one at a time:
each problem named, with its exit code (2 a setting, 3 a file or folder, 4 a service), nothing started."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import FIELDLINK, StackInfo, extra_ingest_identity
from tools._process import free_port


@pytest.fixture(scope="module")
def identity(stack: StackInfo) -> dict[str, str]:
    """An ingest identity of the checks' own: a CONNECT as the session's service would take its session."""
    return extra_ingest_identity(stack, "check")


def check(stack: StackInfo, tmp_path: Path, identity: dict[str, str], **settings: str) -> tuple[int, dict[str, str]]:
    env = dict(os.environ, FIELDLINK_HOME=str(stack.home), FIELDLINK_SPOOL_DIR=str(tmp_path / "spool"), **identity)
    env.update({f"FIELDLINK_{name.upper()}": value for name, value in settings.items()})
    result = subprocess.run(
        [*FIELDLINK, "ingest", "--check-config"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in result.stderr, result.stderr
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, _, rest = line.partition("  ")
        lines[name.strip()] = rest.strip()
    if result.returncode:
        assert result.stderr.strip().endswith("the service was not started"), result.stderr
    return result.returncode, lines


def test_the_session_stack_passes_every_check(stack: StackInfo, tmp_path: Path, identity: dict[str, str]) -> None:
    code, lines = check(stack, tmp_path, identity)
    assert code == 0, lines
    assert list(lines) == [
        "settings",
        "broker",
        "influxdb",
        "influxdb write",
        "influxdb read",
        "registry",
        "spool",
        "the settings are sound and every dependency answers",
    ]
    assert lines["broker"].startswith(f"ok  mqtts://127.0.0.1:{stack.mqtt_port}: TLS handshake, MQTT CONNECT as")
    assert lines["influxdb write"] == "ok  database fieldlink: writing allowed (an empty write, nothing stored)"
    assert lines["influxdb read"] == "ok  InfluxQL on fieldlink as user fieldlink-reader"
    assert not (tmp_path / "spool").exists()  # nothing made


def test_wrong_influx_credentials_are_a_setting(stack: StackInfo, tmp_path: Path, identity: dict[str, str]) -> None:
    code, lines = check(stack, tmp_path, identity, influx_password="not-the-password", influx_read_username="nobody")
    assert code == 2
    assert lines["influxdb write"].startswith("PROBLEM  database fieldlink: the credentials may not write (HTTP 401")
    assert lines["influxdb read"].startswith("PROBLEM  InfluxQL on fieldlink as user nobody refused")
    assert lines["broker"].startswith("ok")


def test_a_missing_database_is_a_setting(stack: StackInfo, tmp_path: Path, identity: dict[str, str]) -> None:
    code, lines = check(stack, tmp_path, identity, influx_database="nodb", influx_query_database="fieldlink")
    assert code == 2
    assert lines["influxdb write"].startswith('PROBLEM  database nodb does not exist (HTTP 404: {"error":"database')


def test_services_that_do_not_answer_are_exit_code_4(
    stack: StackInfo, tmp_path: Path, identity: dict[str, str]
) -> None:
    code, lines = check(
        stack, tmp_path, identity, mqtt_port=str(free_port()), influx_url=f"http://127.0.0.1:{free_port()}"
    )
    assert code == 4
    assert "did not complete a TLS handshake and MQTT CONNECT" in lines["broker"]
    assert lines["influxdb"].startswith("PROBLEM  http://127.0.0.1:") and "/ping: no answer" in lines["influxdb"]
    assert "influxdb write" not in lines


def test_a_client_id_that_is_not_the_certificates_name(
    stack: StackInfo, tmp_path: Path, identity: dict[str, str]
) -> None:
    code, lines = check(stack, tmp_path, identity, mqtt_client_id="someone-else")
    assert code == 2
    assert lines["identity"].startswith(
        f"PROBLEM  the certificate {identity['FIELDLINK_MQTT_CERT']} names 'fieldlink:ingest-check', "
        "FIELDLINK_MQTT_CLIENT_ID is 'someone-else'"
    )


def test_a_key_that_is_not_the_certificates(stack: StackInfo, tmp_path: Path, identity: dict[str, str]) -> None:
    other_key = str(stack.home / "pki" / "admin.key")
    code, lines = check(stack, tmp_path, identity, mqtt_key=other_key)
    assert code == 2
    assert lines["broker"].startswith("PROBLEM  FIELDLINK_MQTT_CA/CERT/KEY cannot be used together")


def test_a_spool_in_use_and_a_registry_that_cannot_be_made(
    stack: StackInfo, tmp_path: Path, identity: dict[str, str]
) -> None:
    from ingest import Settings
    from ingest._spool import Spool

    spool = Settings(mqtt_tls=False, spool_dir=tmp_path / "spool", mqtt_client_id=identity["FIELDLINK_MQTT_CLIENT_ID"])
    held = Spool(spool.spool_path, 1024)  # another process's, as far as the check can tell
    (tmp_path / "a-file").write_text("")
    try:
        code, lines = check(stack, tmp_path, identity, registry_path=str(tmp_path / "a-file" / "registry.db"))
    finally:
        held.close()
    assert code == 3
    assert (
        lines["spool"] == f"PROBLEM  the spool folder {spool.spool_path} is in use by another ingest process (running?)"
    )
    registry = tmp_path / "a-file" / "registry.db"
    assert lines["registry"] == f"PROBLEM  {registry} does not exist and cannot be made: {registry.parent} is a file"


def test_bad_settings_stop_before_any_check(stack: StackInfo, tmp_path: Path, identity: dict[str, str]) -> None:
    env = dict(os.environ, FIELDLINK_HOME=str(stack.home), FIELDLINK_ENV="production", FIELDLINK_INFLUX_API="v2")
    result = subprocess.run(
        [*FIELDLINK, "ingest", "--check-config"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: ingest settings: production with the v2 API needs FIELDLINK_INFLUX_TOKEN"
    assert result.stdout == ""
    assert json.dumps(result.stderr).count("Traceback") == 0
