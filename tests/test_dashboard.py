"""The dashboard in a real browser: Debian's headless Chromium driven by its chromedriver (the W3C
WebDriver protocol over HTTP, spoken here with httpx), against the session's real stack and service
with simulated nodes running the real firmware. `make test` installs chromium and chromium-driver
(tools/setup/system-packages.sh --tests)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import IngestInfo, StackInfo, start_node, wait_until
from tools._process import free_port, stop_pid, wait_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class Browser:
    """One headless Chromium session through chromedriver."""

    def __init__(self, driver_url: str) -> None:
        self._http = httpx.Client(base_url=driver_url, timeout=60)
        options = {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,1100",
            ],
        }
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise AssertionError(f"webdriver {path}: {value}")
        return value

    def go(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script: str) -> Any:
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot")))

    def close(self) -> None:
        self._http.delete(f"/session/{self.session}")
        self._http.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (`make test` installs them)")
    port = free_port()
    log = (tmp_path / "chromedriver.log").open("wb")
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_port(port, 15), "chromedriver did not start"
        browser = Browser(f"http://127.0.0.1:{port}")
        try:
            yield browser
        finally:
            browser.close()
    finally:
        stop_pid(driver.pid)
        driver.wait()
        log.close()


ROWS = "return [...document.querySelectorAll('#fleet tr[data-device]')].map(r => r.dataset.device)"
CHART_POINTS = (
    "return Object.fromEntries([...document.querySelectorAll('#charts svg')]"
    ".map(s => [s.dataset.sensor, Number(s.dataset.points)]))"
)


def test_the_dashboard_shows_the_fleet_and_live_charts(
    stack: StackInfo, ingest: IngestInfo, browser: Browser, uid: str, tmp_path: Path
) -> None:
    devices = [f"dash-{uid}-{i}" for i in (1, 2)]
    nodes = []
    for device in devices:
        bundle = stack.add_device(device, sample_interval_ms=200, batch_max_readings=10, batch_max_age_ms=500)
        nodes.append(start_node(bundle, tmp_path / f"{device}.log", duration_s=12.0))
    try:
        stack.wait_points(devices[0], 3)
        browser.go(ingest.url + "/")
        shown = wait_until(lambda: set(devices) <= set(browser.js(ROWS)) and browser.js(ROWS), timeout=15)
        assert set(devices) <= set(shown)
        browser.js(f"document.querySelector('#fleet tr[data-device=\"{devices[0]}\"]').click()")
        wait_until(lambda: browser.js("return document.querySelector('#chart-device').textContent") == devices[0])
        first = wait_until(lambda: (p := browser.js(CHART_POINTS)) and all(p.values()) and p, timeout=15)
        assert set(first) == {"temperature", "humidity", "pressure"}
        row = f'#fleet tr[data-device="{devices[0]}"]'
        status = browser.js(f"return document.querySelector('{row} .pill').textContent")
        assert status == "online"
        seen = browser.js(f"return Number(document.querySelector('{row} td[data-ms]').dataset.ms)")
        # Live: without a reload, the row's last reading moves on while the node runs.
        wait_until(
            lambda: browser.js(f"return Number(document.querySelector('{row} td[data-ms]').dataset.ms)") > seen,
            timeout=10,
        )
        assert browser.js("return document.querySelector('#service').textContent").count("points stored") == 1
        browser.screenshot(tmp_path / "dashboard.png")
        assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        for node in nodes:
            stop_pid(node.pid)
            node.wait()


def test_api_docs_load_without_a_cdn(ingest: IngestInfo, browser: Browser) -> None:
    page = httpx.get(f"{ingest.url}/docs").text
    assert "cdn" not in page.lower() and "/static/docs/swagger-ui-bundle.js" in page
    browser.go(ingest.url + "/docs")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        titles = browser.js("return [...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)")
        if titles:
            break
        time.sleep(0.2)
    assert "/api/devices/{device_id}/latest" in " ".join(titles)
