"""Acceptance: SIGKILL a worker mid-stream, restart it, end where an uninterrupted run ends.

Two real ``pulse worker`` processes read the same simulated community from the
fixture broker, each from its own topics, consumer group and ClickHouse data
dir. Each run is fed the same way: the first half of the events (in event time)
is published, and once a third of the whole is committed the second half
follows. One run goes through; the other is killed with SIGKILL at that moment
and started again on the same data dir. Publishing in two halves is what makes
"mid-stream" certain: the worker cannot have committed what is not published
yet (a single publish let a fast worker commit everything between two polls).
Compared from ClickHouse afterwards: the same members, engagement scores, tiers
and lifecycle stages, and churn probabilities within 0.05 for at least 99% of
members -- plus every event stored exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, committed_offsets, pulse_env, run_pulse, wait_for

from streams.broker import EmbeddedBroker, ensure_topics, free_port
from streams.checkpoint_store import read_commits
from streams.replay import Publisher
from streams.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.e2e

PARTITIONS = 2  # as pulse_env sets them


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "streams.cli", "worker", "--quiet"],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _status(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:  # noqa: S310
            result: dict[str, Any] = json.load(r)
            return result
    except OSError:
        return {}


def _committed(bootstrap: str, group: str, prefix: str) -> int:
    return sum(
        max(0, offset)
        for topic in ("interactions", "purchases")
        for offset in committed_offsets(bootstrap, group, prefix + topic, PARTITIONS).values()
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _query(env: dict[str, str], sql: str) -> list[dict[str, Any]]:
    result = run_pulse(["query", sql, "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _scores(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    rows = _query(
        env,
        "SELECT member_id, argMax(engagement_score, version) AS engagement, "
        "argMax(engagement_tier, version) AS tier, argMax(lifecycle_stage, version) AS stage, "
        "argMax(churn_probability, version) AS churn FROM member_scores GROUP BY member_id",
    )
    return {r["member_id"]: r for r in rows}


def _compare(
    baseline: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]], what: str
) -> str:
    """Same tiers, stages and engagement as the baseline; churn within 0.05 for 99%."""
    for key in ("tier", "stage", "engagement"):
        differ = [m for m in other if baseline[m][key] != other[m][key]]
        assert not differ, f"{what}: {key} differs for {len(differ)} of {len(other)} members"
    churn = sorted(abs(float(baseline[m]["churn"]) - float(other[m]["churn"])) for m in other)
    within = sum(d <= 0.05 for d in churn)
    assert within >= 0.99 * len(churn), (what, within, churn[-5:])
    return (
        f"{what}: {len(other)} members, tiers, stages and engagement equal; "
        f"churn |diff| max {churn[-1]:.2e}, {within}/{len(churn)} within 0.05"
    )


def _stored_ids(events: list[dict[str, Any]]) -> set[str]:
    """The events Pulse keeps: not the behaviour of a member who withdrew analytics
    consent (until given again), not an erased member's events (but the request)."""
    erased = {e["member_id"] for e in events if e["event_type"] == "erasure_requested"}
    opted_out: set[str] = set()
    kept: set[str] = set()
    for e in sorted(events, key=lambda e: datetime.fromisoformat(e["occurred_at"])):
        member, kind = e["member_id"], e["event_type"]
        if kind == "consent_changed" and "analytics" in e["properties"]:
            (opted_out.discard if e["properties"]["analytics"] else opted_out.add)(member)
            kept.add(e["event_id"])
        elif kind == "erasure_requested" or (member not in erased and member not in opted_out):
            kept.add(e["event_id"])
    return kept


def test_sigkill_mid_stream_then_restart_matches_an_uninterrupted_run(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Three runs on the same input: uninterrupted; SIGKILL and restart on the same data
    dir (the state table in RocksDB); SIGKILL and restart on a new, empty data dir, as on
    a new host. Both resume from the state changelog and the task-commits topic (Kafka is
    the record with an external broker)."""
    config = SimulationConfig(members=300, days=60, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC))
    events = list(simulate(config))
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    total = len(events)
    assert total > 10_000
    kept = _stored_ids(events)

    runs: dict[str, dict[str, dict[str, Any]]] = {}
    event_ids: dict[str, list[set[str]]] = {}
    restored: dict[str, dict[str, Any]] = {}
    checkpointed_before_kill = 0
    for name in ("uninterrupted", "killed", "moved"):
        prefix = f"crash{tmp_path.name[-8:]}{name[0]}."
        ensure_topics(broker.bootstrap, [prefix + "interactions", prefix + "purchases"], PARTITIONS)
        publisher = Publisher(broker.bootstrap, prefix)
        assert publisher.publish_events(first).published == len(first)
        port = free_port()
        env = pulse_env(
            broker.bootstrap,
            prefix,
            f"crash-{name}-{tmp_path.name}",
            tmp_path / name,
            PULSE_PSEUDONYM_KEY="crash-test-key-0123456789abcdef",
            PULSE_SINK_FLUSH_SECONDS="0.3",
            PULSE_CHECKPOINT_SECONDS="0.2",  # commits advance in small steps
            PULSE_METRICS_PORT=str(port),
            # the killed worker restarts on its own RocksDB store (local state + the
            # changelog's tail); the others keep the table in memory
            PULSE_STORE="rocksdb" if name == "killed" else "memory",
        )
        envs = [env]
        log = tmp_path / f"{name}.log"
        worker = _worker(env, log)
        try:
            group = env["PULSE_APP_ID"]
            wait_for(
                lambda g=group, p=prefix: _committed(broker.bootstrap, g, p) >= total // 3,
                240,
                f"the {name} run to commit a third of the stream",
            )
            if name != "uninterrupted":
                worker.send_signal(signal.SIGKILL)
                assert worker.wait(30) == -signal.SIGKILL
                # mid-stream: stored and committed up to somewhere in the first half
                assert total // 3 <= _committed(broker.bootstrap, group, prefix) <= len(first)
            assert publisher.publish_events(second).published == total
            if name != "uninterrupted":
                if name == "moved":  # a new host: nothing of the first incarnation's data dir
                    # the members of the checkpoints that committed before the kill (rows
                    # of a checkpoint cut short are in the dir too, without a commit)
                    commits = read_commits(broker.bootstrap, f"{group}-task-commits")
                    rows = _query(env, "SELECT member_id, task, gen, seq FROM events")
                    checkpointed_before_kill = len(
                        {
                            r["member_id"]
                            for r in rows
                            if int(r["task"]) in commits
                            and commits[int(r["task"])].lineage.committed(
                                int(r["gen"]), int(r["seq"])
                            )
                        }
                    )
                    env = {**env, "PULSE_DATA_DIR": str(tmp_path / "moved-new-host")}
                    envs.append(env)
                worker = _worker(env, log)
                # it resumes from its checkpoint (restored before the first batch), not from zero
                wait_for(
                    lambda p=port: (
                        len(_status(p).get("partitions", ())) == PARTITIONS
                        and _status(p).get("restored_members", 0) > 0
                    ),
                    120,
                    f"the {name} run's second worker to restore its checkpoints",
                )
                restored[name] = _status(port)
            wait_for(
                lambda g=group, p=prefix: _committed(broker.bootstrap, g, p) == total,
                420,
                f"the {name} run to commit every offset",
            )
            wait_for(
                lambda p=port: (
                    _status(p).get("events_held", 1) == 0
                    and _status(p).get("sink_pending_acks", 1) == 0
                ),
                60,
                f"the {name} run to settle",
            )
        finally:
            _stop(worker)
        runs[name] = _scores(env)
        event_ids[name] = []
        for data_env in envs:
            rows = _query(data_env, "SELECT event_id FROM events")
            ids = {r["event_id"] for r in rows}
            assert len(ids) == len(rows), f"{name}: an event stored twice in one data dir"
            event_ids[name].append(ids)

    # every event stored, and exactly once per data dir
    for name, id_sets in event_ids.items():
        assert set().union(*id_sets) == kept, name
    assert event_ids["killed"][0] == kept
    # the restarts resumed from their checkpoints in the state changelog and commits topic:
    # on the same data dir, then on a new one, as on a new host
    assert restored["killed"]["restored_members"] > 0, restored["killed"]
    moved = restored["moved"]
    # every member of the checkpoints the first data dir committed
    assert moved["restored_members"] >= checkpointed_before_kill > 0, moved

    a = runs["uninterrupted"]
    assert set(a) == set(runs["killed"]) and len(a) >= 290
    print(f"{total:,} events after SIGKILL and restart")
    print(_compare(a, runs["killed"], "same data dir"))
    # the new host's ClickHouse holds the members scored after the move: nearly all
    assert set(runs["moved"]) <= set(a) and len(runs["moved"]) >= 0.8 * len(a)
    print(_compare(a, runs["moved"], "new data dir, state from the changelog"))
