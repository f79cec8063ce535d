"""Real Prometheus and Alertmanager around an in-process Pulse worker, for e2e tests.

Free loopback ports, test configs derived from ``deploy/`` (routes, inhibitions, rule
expressions and labels kept; only URLs and timings rewritten), a webhook receiver
that records what Alertmanager posts, bounded polling, and processes stopped by PID
(terminate, then kill after a timeout). A missing binary fails the test, never skips.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"

# --- small utilities -----------------------------------------------------------------


def binary(name: str) -> str:
    """Path of a required binary; fails the test with an install hint when missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(
            f"`{name}` not found on PATH or in /usr/bin. Install Debian's `prometheus` and "
            f"`prometheus-alertmanager` packages: apt-get install prometheus "
            f"prometheus-alertmanager",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Call ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def write_yaml(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# --- config rewriting ----------------------------------------------------------------

_AM_TIMINGS = ("group_wait", "group_interval", "repeat_interval")


def alertmanager_test_config(webhook_base: str, timing: str = "1s") -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml with every webhook URL pointed at
    ``webhook_base`` (path kept) and group/repeat timings set to ``timing``.
    Routes, matchers and inhibitions are untouched."""
    doc = copy.deepcopy(load_yaml(AM_CONFIG))

    def shorten(route: dict[str, Any]) -> None:
        for key in _AM_TIMINGS:
            if key in route or route is doc["route"]:
                route[key] = timing
        for child in route.get("routes", []):
            shorten(child)

    shorten(doc["route"])
    base = urllib.parse.urlsplit(webhook_base)
    for receiver in doc.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            url = urllib.parse.urlsplit(hook["url"])
            hook["url"] = urllib.parse.urlunsplit(
                (base.scheme, base.netloc, url.path, url.query, "")
            )
    return doc


def prometheus_test_rules() -> list[dict[str, Any]]:
    """The deploy rule files, with every alert's ``for`` set to 0s and
    ``keep_firing_for`` dropped; expr and labels are kept as they are."""
    docs = []
    for path in RULE_FILES:
        doc = copy.deepcopy(load_yaml(path))
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "0s"
                    rule.pop("keep_firing_for", None)
        docs.append({"name": path.name, "doc": doc})
    return docs


def prometheus_test_config(target: str, alertmanager: str, rule_files: list[str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": "pulse",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }


# --- webhook receiver ----------------------------------------------------------------


@dataclass
class Notification:
    path: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Records every JSON document POSTed to it (Alertmanager's webhook payloads)."""

    host: str = "127.0.0.1"
    received: list[Notification] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsable": raw.decode(errors="replace")}
                with receiver._lock:
                    receiver.received.append(Notification(self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self.received)

    def firing(self, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        """(path, alert) for every firing alert named ``alertname`` received so far."""
        return [
            (n.path, alert)
            for n in self.notifications()
            for alert in n.body.get("alerts", [])
            if alert.get("status") == "firing"
            and alert.get("labels", {}).get("alertname") == alertname
        ]


# --- processes -----------------------------------------------------------------------


class Server:
    """One external server process, started on a loopback port and stopped by PID."""

    def __init__(self, name: str, args: list[str], port: int, ready_path: str, log: Path) -> None:
        self.name = name
        self.args = args
        self.port = port
        self.ready_path = ready_path
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, cwd=self.log.parent
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def alertmanager(workdir: Path, webhook_base: str) -> Server:
    """A configured (not yet started) Alertmanager: clustering off, storage in workdir."""
    exe = binary("prometheus-alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_yaml(workdir / "alertmanager.yml", alertmanager_test_config(webhook_base))
    port = free_port()
    args = [
        exe,
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    return Server("alertmanager", args, port, "/-/ready", workdir / "alertmanager.log")


def prometheus(workdir: Path, target: str, alertmanager_address: str) -> Server:
    """A configured (not yet started) Prometheus scraping ``target`` as job `pulse`."""
    exe = binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    rule_paths = []
    for item in prometheus_test_rules():
        rule_paths.append(str(write_yaml(workdir / item["name"], item["doc"])))
    config = write_yaml(
        workdir / "prometheus.yml",
        prometheus_test_config(target, alertmanager_address, rule_paths),
    )
    check = subprocess.run(
        [binary("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, f"promtool rejects the test config:\n{check.stdout}{check.stderr}"
    port = free_port()
    args = [
        exe,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    return Server("prometheus", args, port, "/-/ready", workdir / "prometheus.log")


def prometheus_alerts(prom: Server) -> list[dict[str, Any]]:
    """Prometheus' active alerts (pending and firing) from /api/v1/alerts."""
    doc = http_json(prom.url + "/api/v1/alerts")
    assert doc["status"] == "success", doc
    alerts: list[dict[str, Any]] = doc["data"]["alerts"]
    return alerts


def firing_in_prometheus(prom: Server, alertname: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prometheus_alerts(prom)
        if a["labels"].get("alertname") == alertname and a["state"] == "firing"
    ]
