"""Site settings: what the nodes of one place need to reach the fleet — its Wi-Fi networks, the broker's
address as seen from there, its port and TLS server name, NTP servers. One JSON file per site in the
state folder (`<state>/sites/<name>.json`, mode 0600: it holds Wi-Fi passphrases; the state folder is
never committed). `fieldlink site ...` writes them; a person may too (docs/field-guide.md). A device's
bundle takes its site's settings when it is added with `--site`, flashed, deployed or imaged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest import write_atomic
from shared.protocol import valid_id
from tools._config import Broker, Wifi
from tools._errors import UsageError
from tools._home import Home

_MASK = "********"
# A host name (RFC 1123 labels) or an IPv4 address; IPv6 literals are not offered (the node's resolver).
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def valid_host(value: str) -> bool:
    return bool(_HOST.match(value))


def _host(value: str) -> str:
    if not valid_host(value):
        raise ValueError(f"{value[:80]!r} is not a host name or IPv4 address")
    return value


class SiteWifi(_Strict):
    ssid: str = Field(min_length=1)
    password: str = ""

    @field_validator("ssid")
    @classmethod
    def _ssid(cls, value: str) -> str:
        if len(value.encode()) > 32:
            raise ValueError("an SSID has at most 32 bytes")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        # WPA2/WPA3-Personal: 8-63 printable ASCII characters, or 64 hex digits (the key itself); "" for
        # an open network.
        if value == "" or re.fullmatch(r"[ -~]{8,63}", value) or re.fullmatch(r"[0-9a-fA-F]{64}", value):
            return value
        raise ValueError("a Wi-Fi passphrase has 8 to 63 printable ASCII characters (or is 64 hex digits)")

    def __repr__(self) -> str:  # never a passphrase in a traceback or a log
        return f"SiteWifi({self.ssid!r}, password={_MASK if self.password else 'none'})"


class SiteBroker(_Strict):
    host: str
    port: int = Field(default=8883, ge=1, le=65535)
    server_hostname: str | None = None

    @field_validator("host", "server_hostname")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        return None if value is None else _host(value)


class Site(_Strict):
    """One site's settings, as its file holds them."""

    broker: SiteBroker | None = None
    wifi: list[SiteWifi] = Field(default_factory=list, max_length=8)
    ntp: list[str] = Field(default_factory=lambda: ["pool.ntp.org"], min_length=1, max_length=4)

    @field_validator("ntp")
    @classmethod
    def _check_ntp(cls, value: list[str]) -> list[str]:
        return [_host(host) for host in value]

    def device_settings(self, name: str) -> dict[str, Any]:
        """The `broker` and `wifi` parts of a device config for this site, checked by the device
        config's own models; a site that cannot run a node in the field is a UsageError."""
        if self.broker is None:
            raise UsageError(f"site {name!r} names no broker: `fieldlink site set {name} --broker HOST`")
        if not self.wifi:
            raise UsageError(
                f"site {name!r} has no Wi-Fi network, and a board reaches the broker only through one: "
                f"`fieldlink site wifi {name} SSID`"
            )
        broker = {"host": self.broker.host, "port": self.broker.port}
        if self.broker.server_hostname:
            broker["server_hostname"] = self.broker.server_hostname
        wifi = {"networks": [w.model_dump() for w in self.wifi], "ntp_hosts": list(self.ntp)}
        # The same models as every bundle: a site can only ever make a config the node accepts.
        return {
            "broker": Broker.model_validate(broker).model_dump(exclude_none=True),
            "wifi": Wifi.model_validate(wifi).model_dump(exclude_none=True),
        }

    def lines(self) -> list[str]:
        """What `site show` prints: every setting, passphrases masked."""
        broker = "none"
        if self.broker:
            broker = f"{self.broker.host}:{self.broker.port}"
            broker += f" (certificate name {self.broker.server_hostname or self.broker.host})"
        networks = ", ".join(f"{w.ssid} ({'passphrase ' + _MASK if w.password else 'open'})" for w in self.wifi)
        return [f"broker   {broker}", f"wifi     {networks or 'none'}", f"ntp      {', '.join(self.ntp)}"]


def _path(home: Home, name: str) -> Path:
    if not valid_id(name):
        raise UsageError(f"{name[:80]!r} is not a valid site name (1-64 of a-z, 0-9, '-', '_', '.')")
    return home.root / "sites" / f"{name}.json"


def load_site(home: Home, name: str) -> Site:
    path = _path(home, name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        known = ", ".join(site_names(home)) or "none yet"
        raise UsageError(
            f"no site {name!r} (sites: {known}); make it with `fieldlink site set {name} --broker HOST`"
        ) from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {str(exc)[:200]}") from exc
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'the file'}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise UsageError(f"{path} is not a valid site file: {problems}") from exc


def save_site(home: Home, name: str, site: Site) -> Path:
    path = _path(home, name)
    home.ensure()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_atomic(path, (json.dumps(site.model_dump(exclude_none=True), indent=2) + "\n").encode(), 0o600)
    return path


def site_names(home: Home) -> list[str]:
    folder = home.root / "sites"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def remove_site(home: Home, name: str) -> None:
    path = _path(home, name)
    if not path.is_file():
        raise UsageError(f"no site {name!r}")
    path.unlink()


def update_site(
    home: Home,
    name: str,
    *,
    broker: str | None = None,
    port: int | None = None,
    server_name: str | None = None,
    ntp: tuple[str, ...] = (),
) -> Site:
    """Create the site or change the settings given; the rest stay."""
    path = _path(home, name)
    site = load_site(home, name) if path.is_file() else Site()
    data = site.model_dump()
    if broker is not None or port is not None or server_name is not None:
        current = data["broker"] or {}
        if broker is None and not current:
            raise UsageError(f"site {name!r} has no broker yet: give --broker HOST")
        data["broker"] = {
            "host": broker if broker is not None else current["host"],
            "port": port if port is not None else current.get("port", 8883),
            "server_hostname": server_name if server_name is not None else current.get("server_hostname"),
        }
        if data["broker"]["server_hostname"] == "":
            data["broker"]["server_hostname"] = None
    if ntp:
        data["ntp"] = list(ntp)
    return _checked_save(home, name, data)


def set_wifi(home: Home, name: str, ssid: str, password: str | None) -> Site:
    """Add a network (or change its passphrase); None removes it."""
    data = load_site(home, name).model_dump()
    networks = [w for w in data["wifi"] if w["ssid"] != ssid]
    if password is None:
        if len(networks) == len(data["wifi"]):
            raise UsageError(f"site {name!r} has no Wi-Fi network {ssid!r}")
    else:
        # In place if it was there: the order is the order the node tries them in.
        position = next((i for i, w in enumerate(data["wifi"]) if w["ssid"] == ssid), len(networks))
        networks.insert(position, {"ssid": ssid, "password": password})
    data["wifi"] = networks
    return _checked_save(home, name, data)


def _checked_save(home: Home, name: str, data: dict[str, Any]) -> Site:
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise UsageError(f"site {name!r}: {problems}") from exc
    save_site(home, name, site)
    return site


def apply_site(config: dict[str, Any], site: Site, name: str) -> dict[str, Any]:
    """A device's config (as its bundle holds it) with the site's broker and Wi-Fi; the broker's
    keep-alive and timeouts stay the device's own."""
    settings = site.device_settings(name)
    broker = {**config.get("broker", {}), **settings["broker"]}
    if "server_hostname" not in settings["broker"]:
        broker.pop("server_hostname", None)  # the site's host is the name to check
    return {**config, "broker": broker, "wifi": settings["wifi"]}
