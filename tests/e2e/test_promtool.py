"""The monitoring configuration in ``deploy/`` checked by the real tools.

``promtool`` and ``amtool`` (Debian's ``prometheus`` and ``prometheus-alertmanager``
packages) validate the Prometheus config, the rule files and the Alertmanager config,
run the rule unit tests and resolve routes. A real Alertmanager and a real Prometheus
are started on free loopback ports to prove that inhibition works and that the server
loads every rule. Python checks that every alert has a firing unit test, a runbook
section, and that the Grafana dashboards are well-formed.

A missing binary fails the test with a clear message: these checks must never be
skipped silently.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
PROM_CONFIGS = [PROM_DIR / "prometheus.yml", PROM_DIR / "prometheus.compose.yml"]
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.rules.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.test.yml"))
AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RUNBOOKS = DEPLOY / "runbooks.md"

TIMEOUT = 60
SEVERITIES = {"critical", "warning", "info"}
TEAM_OF_FILE = {"pipeline.rules.yml": "ops", "business.rules.yml": "marketing"}


# --- helpers ---------------------------------------------------------------------------


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(
            f"`{name}` not found on PATH or in /usr/bin. Install Debian's `prometheus` "
            f"(promtool, prometheus) and `prometheus-alertmanager` (amtool, "
            f"prometheus-alertmanager) packages: apt-get install prometheus "
            f"prometheus-alertmanager",
            pytrace=False,
        )
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in args]
    cmd[0] = _binary(cmd[0])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    out = f"$ {' '.join(proc.args)}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{out}"
    return proc.stdout


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _alert_rules() -> list[tuple[Path, dict[str, Any]]]:
    rules: list[tuple[Path, dict[str, Any]]] = []
    for path in RULE_FILES:
        for group in _load_yaml(path)["groups"]:
            rules.extend((path, r) for r in group["rules"] if "alert" in r)
    return rules


def _recording_rules() -> list[str]:
    return [
        r["record"]
        for path in RULE_FILES
        for group in _load_yaml(path)["groups"]
        for r in group["rules"]
        if "record" in r
    ]


def _unit_tests() -> Iterator[dict[str, Any]]:
    for path in TEST_FILES:
        yield from _load_yaml(path)["tests"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _wait_ready(url: str, proc: subprocess.Popen[str], log: Path, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {deadline_s}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# --- the files exist -----------------------------------------------------------------


def test_deploy_files_present() -> None:
    assert len(RULE_FILES) >= 2, f"rule files: {RULE_FILES}"
    assert len(TEST_FILES) >= 2, f"rule test files: {TEST_FILES}"
    assert len(DASHBOARDS) >= 2, f"dashboards: {DASHBOARDS}"
    for path in [*PROM_CONFIGS, AM_CONFIG, RUNBOOKS, DEPLOY / "compose.yaml"]:
        assert path.is_file(), f"missing {path}"


# --- promtool ------------------------------------------------------------------------


@pytest.mark.parametrize("config", PROM_CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config: Path) -> None:
    out = _ok(_run("promtool", "check", "config", config))
    assert "SUCCESS" in out


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(rule_file: Path) -> None:
    out = _ok(_run("promtool", "check", "rules", rule_file))
    assert "SUCCESS" in out


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path) -> None:
    out = _ok(_run("promtool", "test", "rules", test_file))
    assert "SUCCESS" in out and "FAILED" not in out, out


# --- rule conventions and test coverage ----------------------------------------------


def test_every_alert_has_labels_annotations_and_runbook() -> None:
    anchors = {
        m.group(1).lower()
        for m in re.finditer(r"^#{2,4}\s+(\S+)\s*$", RUNBOOKS.read_text(encoding="utf-8"), re.M)
    }
    problems = []
    for path, rule in _alert_rules():
        name = rule["alert"]
        labels = rule.get("labels", {})
        ann = rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        if labels.get("team") != TEAM_OF_FILE.get(path.name, labels.get("team")):
            problems.append(f"{name}: team {labels.get('team')!r} in {path.name}")
        if "for" not in rule:
            problems.append(f"{name}: no `for:`")
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{name}: no {key} annotation")
        url = ann.get("runbook_url", "")
        if url != f"deploy/runbooks.md#{name.lower()}":
            problems.append(f"{name}: runbook_url {url!r}")
        if name.lower() not in anchors:
            problems.append(f"{name}: no section in {RUNBOOKS.name}")
    assert not problems, "\n".join(problems)


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fired: dict[tuple[str, str], int] = {}
    silent: dict[str, int] = {}
    for case in _unit_tests():
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            exp = check.get("exp_alerts") or []
            if not exp:
                silent[name] = silent.get(name, 0) + 1
            for alert in exp:
                labels = alert.get("exp_labels") or {}
                assert alert.get("exp_annotations"), f"{name}: firing case without exp_annotations"
                assert labels, f"{name}: firing case without exp_labels"
                key = (name, labels.get("severity", ""))
                fired[key] = fired.get(key, 0) + 1
    missing = []
    for _, rule in _alert_rules():
        name, severity = rule["alert"], rule["labels"]["severity"]
        if (name, severity) not in fired:
            missing.append(f"{name} ({severity}): no test where it fires")
        if name not in silent:
            missing.append(f"{name}: no test where it stays silent")
    assert not missing, "\n".join(missing)


def test_every_recording_rule_is_unit_tested() -> None:
    tested = {
        expr_test["expr"].strip()
        for case in _unit_tests()
        for expr_test in case.get("promql_expr_test", [])
    }
    untested = [name for name in _recording_rules() if name not in tested]
    assert not untested, f"recording rules without a promql_expr_test: {untested}"


def test_keep_firing_for_is_used() -> None:
    with_keep = [r["alert"] for _, r in _alert_rules() if "keep_firing_for" in r]
    assert len(with_keep) >= 5, with_keep


# --- amtool --------------------------------------------------------------------------


def test_amtool_check_config() -> None:
    out = _ok(_run("amtool", "check-config", AM_CONFIG))
    assert "SUCCESS" in out
    assert "2 inhibit rules" in out


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["team=marketing", "severity=warning"], "marketing"),
        (["team=marketing", "severity=critical"], "marketing"),
        (["team=marketing", "severity=info"], "marketing-digest"),
        (["team=ops", "severity=critical"], "ops-pager"),
        (["team=ops", "severity=warning"], "ops"),
        (["team=ops", "severity=info"], "ops"),
        (["alertname=SomethingUnlabelled"], "ops"),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, list) else v,
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    proc = _run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    out = _ok(proc)
    assert out.strip() == receiver, f"{labels} routed to {out.strip()!r}, expected {receiver!r}"


def test_every_rule_routes_to_its_team() -> None:
    """Each real alert label set reaches a receiver of its own team."""
    for _, rule in _alert_rules():
        team, severity = rule["labels"]["team"], rule["labels"]["severity"]
        out = _ok(
            _run(
                "amtool",
                "config",
                "routes",
                "test",
                f"--config.file={AM_CONFIG}",
                f"alertname={rule['alert']}",
                f"team={team}",
                f"severity={severity}",
            )
        )
        assert out.strip().startswith(team), f"{rule['alert']} ({team}) -> {out.strip()}"


# --- a real Alertmanager: inhibition -------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = _binary("prometheus-alertmanager")
    port = _free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={AM_CONFIG}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/-/ready", proc, log)
        yield base
    finally:
        _stop(proc)


def test_alertmanager_inhibition(alertmanager: str) -> None:
    def alert(**labels: str) -> dict[str, Any]:
        return {"labels": {"job": "pulse", **labels}}

    sent = [
        alert(alertname="PulseWorkerDown", severity="critical", team="ops", instance="w1:9464"),
        alert(
            alertname="PulseHighChurnRiskSurge", severity="warning", team="marketing", risk="high"
        ),
        alert(
            alertname="PulseModelDriftDetected", severity="info", team="marketing", model="churn"
        ),
        # critical and warning of the same alert and subject: the warning is muted...
        alert(
            alertname="PulseConsumerLagGrowing",
            severity="critical",
            team="ops",
            instance="w2:9464",
            topic="pulse.interactions",
            partition="0",
        ),
        alert(
            alertname="PulseConsumerLagGrowing",
            severity="warning",
            team="ops",
            instance="w2:9464",
            topic="pulse.interactions",
            partition="0",
        ),
        # ...but not the warning of another partition.
        alert(
            alertname="PulseConsumerLagGrowing",
            severity="warning",
            team="ops",
            instance="w2:9464",
            topic="pulse.interactions",
            partition="1",
        ),
    ]
    _http(f"{alertmanager}/api/v2/alerts", json.dumps(sent).encode())

    expected = {
        ("PulseWorkerDown", "critical", None): "active",
        ("PulseHighChurnRiskSurge", "warning", None): "suppressed",
        ("PulseModelDriftDetected", "info", None): "suppressed",
        ("PulseConsumerLagGrowing", "critical", "0"): "active",
        ("PulseConsumerLagGrowing", "warning", "0"): "suppressed",
        ("PulseConsumerLagGrowing", "warning", "1"): "active",
    }
    got: dict[tuple[str, str, str | None], str] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = {
            (a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("partition")): a[
                "status"
            ]["state"]
            for a in _http(f"{alertmanager}/api/v2/alerts")
        }
        if got == expected:
            break
        time.sleep(0.3)
    assert got == expected


# --- a real Prometheus: the server loads every rule ----------------------------------


def test_prometheus_loads_and_evaluates_all_rules(tmp_path: Path) -> None:
    binary = _binary("prometheus")
    # deploy/prometheus/prometheus.yml as is, evaluated every second so that every
    # rule runs once within the test; rule paths made absolute for the copy.
    config = _load_yaml(PROM_DIR / "prometheus.yml")
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str((PROM_DIR / f).resolve()) for f in config["rule_files"]]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = _free_port()
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/-/ready", proc, log)
        loaded: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            loaded = [
                r for g in _http(f"{base}/api/v1/rules")["data"]["groups"] for r in g["rules"]
            ]
            if loaded and all(r.get("health") == "ok" for r in loaded):
                break
            time.sleep(0.5)
    finally:
        _stop(proc)
    names = {r["name"] for r in loaded}
    expected = {r["alert"] for _, r in _alert_rules()} | set(_recording_rules())
    assert names == expected, f"missing: {expected - names}, extra: {names - expected}"
    unhealthy = [(r["name"], r.get("health"), r.get("lastError")) for r in loaded]
    unhealthy = [u for u in unhealthy if u[1] != "ok"]
    assert not unhealthy, f"{unhealthy}\n{log.read_text()}"


# --- Grafana dashboards and compose ----------------------------------------------------


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_json(dashboard: Path) -> None:
    data = json.loads(dashboard.read_text(encoding="utf-8"))
    for key in ("uid", "title", "schemaVersion", "panels"):
        assert data.get(key), f"{dashboard.name}: no {key}"
    assert data["panels"], f"{dashboard.name}: no panels"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), f"{dashboard.name}: duplicate panel ids"
    for panel in data["panels"]:
        grid = panel.get("gridPos") or {}
        assert {"x", "y", "w", "h"} <= grid.keys(), f"{panel.get('title')}: gridPos {grid}"
        assert grid["x"] + grid["w"] <= 24, f"{panel.get('title')}: wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), (
            f"{dashboard.name}: panel {panel.get('title')!r} has no targets"
        )
        for target in panel["targets"]:
            assert target.get("refId"), f"{panel['title']}: target without refId"
            assert target.get("expr") or target.get("rawSql"), f"{panel['title']}: empty query"


def test_dashboards_use_known_metrics_and_datasources() -> None:
    metrics_src = (ROOT / "streams" / "metrics.py").read_text(encoding="utf-8")
    exported = set(re.findall(r'"(pulse_[a-z_]+)"', metrics_src))
    histograms = set(re.findall(r'Histogram\(\s*"(pulse_[a-z_]+)"', metrics_src))
    exported |= {f"{h}_{s}" for h in histograms for s in ("bucket", "sum", "count")}
    pipeline = json.loads((DEPLOY / "grafana/dashboards/pulse-pipeline.json").read_text())
    business = json.loads((DEPLOY / "grafana/dashboards/pulse-business.json").read_text())
    for panel in pipeline["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["type"] == "prometheus"
            for name in re.findall(r"\b(pulse_[a-z_]+)", target["expr"]):
                assert name in exported, f"{panel['title']}: unknown metric {name}"
    sql = " ".join(t["rawSql"] for p in business["panels"] for t in p.get("targets", []))
    for panel in business["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["type"] == "grafana-clickhouse-datasource"
    for table in ("community_daily_health", "lifecycle_funnel", "member_scores FINAL", "alerts"):
        assert f"pulse.{table}" in sql, f"business dashboard does not query pulse.{table}"
    provisioning = _load_yaml(DEPLOY / "grafana/provisioning/datasources.yml")
    uids = {d["uid"]: d["type"] for d in provisioning["datasources"]}
    assert uids == {
        "pulse-prometheus": "prometheus",
        "pulse-clickhouse": "grafana-clickhouse-datasource",
    }
    assert _load_yaml(DEPLOY / "grafana/provisioning/dashboards.yml")["providers"]


def test_rules_use_only_exported_metrics() -> None:
    metrics_src = (ROOT / "streams" / "metrics.py").read_text(encoding="utf-8")
    exported = set(re.findall(r'"(pulse_[a-z_]+)"', metrics_src))
    histograms = set(re.findall(r'Histogram\(\s*"(pulse_[a-z_]+)"', metrics_src))
    exported |= {f"{h}_{s}" for h in histograms for s in ("bucket", "sum", "count")}
    unknown = [
        (rule.get("alert") or rule.get("record"), name)
        for path in RULE_FILES
        for group in _load_yaml(path)["groups"]
        for rule in group["rules"]
        for name in re.findall(r"(?<![:\w])(pulse_[a-z_]+)", rule["expr"])
        if name not in exported
    ]
    assert not unknown, f"metrics not exported by streams/metrics.py: {unknown}"


def test_compose_describes_the_production_shape() -> None:
    compose = _load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    images = {name: svc.get("image", "") for name, svc in services.items()}
    assert images["kafka"].startswith("apache/kafka")
    assert images["clickhouse"].startswith("clickhouse/clickhouse-server")
    assert {"prometheus", "alertmanager", "grafana"} <= services.keys()
    worker = services["pulse-worker"]
    assert worker["command"] == ["worker"]
    assert str(worker["deploy"]["replicas"]).startswith("${PULSE_WORKERS")  # N workers
    env = worker["environment"]
    assert env["PULSE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["PULSE_CLICKHOUSE_URL"] == "http://clickhouse:8123"
    assert str(env["PULSE_METRICS_PORT"]) == "9464"
    assert env["PULSE_PSEUDONYM_KEY"].startswith("${PULSE_PSEUDONYM_KEY:?")  # one key, required
    assert env["PULSE_REPLICATION_FACTOR"].startswith("${PULSE_REPLICATION_FACTOR")
    scrape = _load_yaml(PROM_DIR / "prometheus.compose.yml")["scrape_configs"]
    [pulse] = [job for job in scrape if job["job_name"] == "pulse"]
    # every replica, however many: Compose's DNS answers the service name with all of them
    assert pulse["dns_sd_configs"] == [
        {"names": ["pulse-worker"], "type": "A", "port": 9464, "refresh_interval": "30s"}
    ]
