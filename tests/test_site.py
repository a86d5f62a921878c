"""Site settings (`fieldlink site ...`, `device add --site`) and `stack up --public-name`: what a file
holds, what is shown (never a passphrase), what is refused, and a broker certificate a field node can
check by the site's name."""

from __future__ import annotations

import json
import socket
import ssl
import stat
from pathlib import Path

import pytest

from tests.boards import run_cli
from tests.support import StackInfo, fieldlink
from tools._process import free_port


def test_site_settings_are_kept_private_and_shown_masked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = run_cli(home, "site", "set", "plant-2", "--broker", "mqtt.plant-2.example", "--ntp", "10.2.0.1")
    assert made.returncode == 0, made.stderr
    assert run_cli(home, "site", "wifi", "plant-2", "plant-iot", stdin="correct horse battery\n").returncode == 0
    assert run_cli(home, "site", "wifi", "plant-2", "visitors", "--open").returncode == 0
    assert run_cli(home, "site", "set", "plant-2", "--port", "18883", "--server-name", "broker.plant-2").returncode == 0
    shown = run_cli(home, "site", "show", "plant-2")
    path = home / "sites" / "plant-2.json"
    assert shown.stdout.splitlines() == [
        f"site plant-2 ({path.resolve()})",
        "  broker   mqtt.plant-2.example:18883 (certificate name broker.plant-2)",
        "  wifi     plant-iot (passphrase ********), visitors (open)",
        "  ntp      10.2.0.1",
    ]
    assert json.loads(path.read_text()) == {
        "broker": {"host": "mqtt.plant-2.example", "port": 18883, "server_hostname": "broker.plant-2"},
        "wifi": [{"ssid": "plant-iot", "password": "correct horse battery"}, {"ssid": "visitors", "password": ""}],
        "ntp": ["10.2.0.1"],
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert (home / ".gitignore").read_text() == "*\n"  # the state folder is never committed
    assert run_cli(home, "site", "list").stdout == "plant-2\n"
    # A new passphrase keeps the network's place; a removed network is gone.
    assert run_cli(home, "site", "wifi", "plant-2", "plant-iot", stdin="another passphrase\n").returncode == 0
    assert run_cli(home, "site", "wifi", "plant-2", "visitors", "--remove").returncode == 0
    assert json.loads(path.read_text())["wifi"] == [{"ssid": "plant-iot", "password": "another passphrase"}]
    assert run_cli(home, "site", "rm", "plant-2").stdout == "site plant-2 removed\n"
    assert not path.exists()


_NO_SITE = "error: no site 'nowhere' (sites: none yet); make it with `fieldlink site set nowhere --broker HOST`"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["site", "set", "s", "--broker", "bad host"], "", "error: site 's': 'bad host' is not a host name or IPv4 "
         "address"),
        (["site", "set", "s", "--port", "18883"], "", "error: site 's' has no broker yet: give --broker HOST"),
        (["site", "set", "../x", "--broker", "b"], "", "error: '../x' is not a valid site name (1-64 of a-z, 0-9, "
         "'-', '_', '.')"),
        (["site", "wifi", "nowhere", "ap"], "passphrase\n", _NO_SITE),
        (["site", "show", "nowhere"], "", _NO_SITE),
    ],
)  # fmt: skip
def test_site_refusals(tmp_path: Path, args: list[str], stdin: str, message: str) -> None:
    result = run_cli(tmp_path, *args, stdin=stdin)
    assert (result.returncode, result.stderr.strip()) == (2, message)


def test_passphrases_and_ssids_are_checked(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "site", "set", "s", "--broker", "b.example").returncode == 0
    short = run_cli(tmp_path, "site", "wifi", "s", "ap", stdin="short\n")
    assert (short.returncode, short.stderr.strip()) == (
        2,
        "error: site 's': a Wi-Fi passphrase has 8 to 63 printable ASCII characters (or is 64 hex digits)",
    )
    assert "short" not in short.stdout
    empty = run_cli(tmp_path, "site", "wifi", "s", "ap", stdin="")
    assert (empty.returncode, empty.stderr.strip()) == (
        2,
        "error: no passphrase on standard input (use --open for an open network)",
    )
    long_ssid = run_cli(tmp_path, "site", "wifi", "s", "x" * 33, "--open")
    assert (long_ssid.returncode, long_ssid.stderr.strip()) == (2, "error: site 's': an SSID has at most 32 bytes")


def test_device_add_with_a_site(stack: StackInfo, uid: str, tmp_path: Path) -> None:
    site = f"s-{uid}"
    assert run_cli(stack.home, "site", "set", site, "--broker", "10.20.0.5", "--port", "18883").returncode == 0
    no_wifi = run_cli(stack.home, "device", "add", f"n-{uid}", "--site", site)
    assert no_wifi.returncode == 2 and "has no Wi-Fi network" in no_wifi.stderr
    assert not (stack.home / "devices" / f"n-{uid}").exists()  # refused before anything was issued
    assert run_cli(stack.home, "site", "wifi", site, "plant-iot", stdin="secret-passphrase\n").returncode == 0
    added = run_cli(stack.home, "device", "add", f"n-{uid}", "--site", site)
    assert added.returncode == 0, added.stderr
    config = json.loads((stack.home / "devices" / f"n-{uid}" / "config.json").read_text())
    assert config["broker"] == {"host": "10.20.0.5", "port": 18883, "keepalive_s": 30, "timeout_ms": 10000}
    assert config["wifi"] == {
        "networks": [{"ssid": "plant-iot", "password": "secret-passphrase"}],
        "ntp_hosts": ["pool.ntp.org"],
    }
    assert "labels      site=" + site in run_cli(stack.home, "device", "show", f"n-{uid}").stdout


def _handshake(port: int, pki: Path, name: str) -> str:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "ingest.pem"), str(pki / "ingest.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=name):
                return "ok"
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_message


def test_public_names_go_into_the_broker_certificate(tmp_path: Path) -> None:
    home = tmp_path / "home"
    mqtt, influx, rpc = free_port(), free_port(), free_port()
    ports = ["--mqtt-port", str(mqtt), "--influx-port", str(influx), "--influx-rpc-port", str(rpc)]
    up = fieldlink(home, "stack", "up", *ports, "--public-name", "broker.plant-2.example", "--public-name", "10.20.0.5")
    try:
        assert up.returncode == 0, up.stderr
        assert "field nodes reach it as broker.plant-2.example, 10.20.0.5" in up.stdout
        assert f"listener {mqtt}\n" in (home / "mosquitto" / "mosquitto.conf").read_text()
        # A node checks the name it was given against the certificate: the public ones pass, others not.
        for name in ("broker.plant-2.example", "localhost"):
            assert _handshake(mqtt, home / "pki", name) == "ok"
        assert (
            _handshake(mqtt, home / "pki", "elsewhere.example")
            == "Hostname mismatch, certificate is not valid for 'elsewhere.example'."
        )
        again = fieldlink(home, "stack", "up", "--public-name", "other.example")
        assert (again.returncode, again.stderr.strip()) == (
            2,
            "error: the broker is running; run `fieldlink stack down` before changing its public names",
        )
    finally:
        fieldlink(home, "stack", "down")
    # Kept across runs; --local-only drops them.
    assert json.loads((home / "stack.json").read_text())["public_names"] == ["broker.plant-2.example", "10.20.0.5"]
    local = fieldlink(home, "stack", "up", "--local-only")
    try:
        assert local.returncode == 0, local.stderr
        assert f"listener {mqtt} 127.0.0.1\n" in (home / "mosquitto" / "mosquitto.conf").read_text()
        assert _handshake(mqtt, home / "pki", "broker.plant-2.example") == (
            "Hostname mismatch, certificate is not valid for 'broker.plant-2.example'."
        )
    finally:
        fieldlink(home, "stack", "down")
    bad = fieldlink(home, "stack", "up", "--public-name", "not a name")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "error: --public-name 'not a name' is not a host name or IPv4 address",
    )
