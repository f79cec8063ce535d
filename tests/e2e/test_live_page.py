"""The live community page in a real browser: `pulse up` with a simulated community,
Debian's Chromium driven through its chromedriver (Selenium), charts checked for data,
for paint and for updates, and a screenshot saved under the test's tmp dir.

The worker runs with an API token; the browser sends it as a header (the page works
the same with the browser's Basic-auth prompt). A missing browser fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, pulse_env
from prom_harness import free_port, poll

from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.e2e

TOKEN = "live-page-token-7c2e"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1400",
]
CHARTS = [
    "chart-rate",
    "chart-tiers",
    "chart-risk",
    "chart-funnel",
    "chart-conversion",
    "chart-auc",
    "chart-freshness",
]

# Sum of every number a chart plots, and how many of its canvas pixels are painted.
_CHART_STATE = """
const out = {};
for (const id of arguments[0]) {
  const chart = window.pulse.charts[id];
  let sum = 0, points = 0;
  for (const set of chart.data.datasets) for (const p of set.data) {
    const v = typeof p === "number" ? p : (p && p.y);
    if (typeof v === "number" && isFinite(v)) { sum += v; points += 1; }
  }
  const canvas = document.getElementById(id);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted += 1;
  out[id] = {sum, points, painted};
}
return out;
"""


def _binary(path: str, package: str) -> str:
    if not Path(path).exists():
        pytest.fail(
            f"{path} not found: install Debian's `{package}` (apt-get install chromium "
            "chromium-driver; .ci/run does)",
            pytrace=False,
        )
    return path


def _get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


@pytest.fixture
def pulse_up(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`pulse up` with a simulated community, in a subprocess stopped by PID."""
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    env = pulse_env(
        broker.bootstrap,
        f"live{suffix}.",
        f"pulse-live-{suffix}",
        tmp_path / "data",
        PULSE_METRICS_PORT=str(port),
        PULSE_API_TOKEN=TOKEN,
        PULSE_CHECKPOINT_SECONDS="0.5",
    )
    log = tmp_path / "pulse-up.log"
    args = [sys.executable, "-m", "streams.cli", "up", "--members", "300", "--days", "90"]
    args += ["--speed", "150000", "--status-every", "5"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        poll(
            lambda: proc.poll() is not None or _get(base + "/healthz", None)[0] == 200,
            120,
            "pulse up to serve /healthz",
        )
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        yield base, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # a clean stop: flush, commit
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM, "chromium")
    for flag in [*HEADLESS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        _binary(CHROMEDRIVER, "chromium-driver"), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_live_page_renders_and_updates_in_chromium(
    pulse_up: tuple[str, Path], browser: Any, tmp_path: Path
) -> None:
    base, log = pulse_up
    assert f"live page   {base}/" in log.read_text()  # what `make run` prints
    assert _get(base + "/", token=None)[0] == 401  # the page is not public
    poll(
        lambda: json.loads(_get(base + "/v1/dashboard")[1] or b"{}").get("members_scored", 0) > 0,
        120,
        "the first scores in ClickHouse",
    )

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}}
    )
    browser.get(base + "/")
    assert browser.title == "Community Pulse — live"
    poll(
        lambda: browser.execute_script("return window.pulse && window.pulse.updates") >= 1,
        30,
        "the page's first refresh",
    )

    def charts() -> dict[str, dict[str, float]]:
        state: dict[str, dict[str, float]] = browser.execute_script(_CHART_STATE, CHARTS)
        return state

    seen: dict[str, dict[str, float]] = {}

    def all_have_data() -> dict[str, dict[str, float]] | None:
        seen.update(charts())
        return seen if all(c["sum"] > 0 and c["painted"] > 500 for c in seen.values()) else None

    try:
        state = dict(poll(all_have_data, 150, "every chart to plot non-zero data"))
    except AssertionError as exc:
        browser.save_screenshot(str(tmp_path / "live-page-failed.png"))
        raise AssertionError(f"{exc}: {seen}") from None
    before = browser.execute_script(
        "return {u: window.pulse.updates, events: window.pulse.last.events_total}"
    )
    poll(
        lambda: browser.execute_script(
            "return window.pulse.updates >= arguments[0] + 2 "
            "&& window.pulse.last.events_total > arguments[1]",
            before["u"],
            before["events"],
        ),
        60,
        "the page to refresh with new events",
    )
    after = charts()
    assert after["chart-rate"]["points"] > state["chart-rate"]["points"]
    assert browser.find_element("id", "kpi-members").text not in ("", "–", "0")
    assert browser.find_element("id", "state").get_attribute("data-updates") != "0"

    shot = tmp_path / "live-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    if os.environ.get("PULSE_SCREENSHOT"):  # refresh docs/live-page.png by hand
        shutil.copy(shot, os.environ["PULSE_SCREENSHOT"])
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    assert time.time() > 0
