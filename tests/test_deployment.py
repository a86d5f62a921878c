"""What docs/deployment.md ships: the systemd unit (checked by `systemd-analyze verify` where the machine
has it, and by its keys everywhere) and the example production settings (every key a real setting)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from ingest import Settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "tools" / "setup" / "fieldlink-ingest.service"
ENV_EXAMPLE = ROOT / "tools" / "setup" / "ingest.env.example"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)  # strict: a key given twice fails
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_runs_the_service_as_its_own_user_hardened() -> None:
    service = _unit()["Service"]
    assert service["ExecStart"] == "/opt/fieldlink/.venv/bin/fieldlink ingest --log-format json"
    assert (service["User"], service["Group"]) == ("fieldlink", "fieldlink")
    assert service["EnvironmentFile"] == "/etc/fieldlink/ingest.env"
    assert service["StateDirectory"] == "fieldlink" and service["WorkingDirectory"] == "/var/lib/fieldlink"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 30
    assert service["Restart"] == "on-failure"
    hardening = {
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter": "@system-service",
    }
    assert {key: service.get(key) for key in hardening} == hardening
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"
    # The settings name the state folder the unit makes writable, and nothing else is writable.
    env = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and line[0] != "#")
    for key in ("FIELDLINK_REGISTRY_PATH", "FIELDLINK_SPOOL_DIR", "FIELDLINK_HOME"):
        assert env[key].startswith("/var/lib/fieldlink"), key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze on this machine")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """The unit as shipped, with its two paths pointed at this checkout (verify wants an executable)."""
    env = tmp_path / "ingest.env"
    env.write_text(ENV_EXAMPLE.read_text())
    text = UNIT.read_text().replace("/opt/fieldlink/.venv/bin/fieldlink", str(ROOT / ".venv" / "bin" / "fieldlink"))
    text = text.replace("/etc/fieldlink/ingest.env", str(env))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    mine = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert (result.returncode, mine) == (0, []), result.stdout + result.stderr


def test_every_example_setting_is_a_setting() -> None:
    fields = {f"FIELDLINK_{name.upper()}" for name in Settings.model_fields} | {"FIELDLINK_HOME"}  # the CLI's
    keys = [line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if line and line[0] != "#"]
    assert keys and not [key for key in keys if key not in fields]
    assert "FIELDLINK_ENV=production" in ENV_EXAMPLE.read_text().splitlines()
