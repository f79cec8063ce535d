"""Every output table holds the same rows as before for a fixed input (issue 9).

Throughput work changes how rows are built, batched and inserted; it must not change
what they say. A fixed simulated community (300 members, 60 days, seed 21) goes
through `pulse replay` on the real broker and engine, and each output table's rows --
without the columns that name the checkpoint that wrote them (``task``, ``gen``,
``seq``: the generation is random) or the wall clock (``ingested_at``, ``failed_at``,
``emitted_at``), ``member_scores`` as ``FINAL`` reads it (its engine merges rows when it
likes) -- are sorted and hashed. The hashes are compared with
``output_rows.golden.json``, written by the code before the change.

A change that means to alter rows regenerates the file with
``PULSE_UPDATE_GOLDEN=1 pytest tests/integration/test_output_rows.py`` (the run then
fails, so that nobody commits it unawares) and says in its commit what differs and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import pulse_env, run_pulse

from streams.broker import EmbeddedBroker
from streams.simulator import SimulationConfig, simulate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GOLDEN = Path(__file__).with_name("output_rows.golden.json")

#: table -> columns left out: which checkpoint wrote a row, and wall-clock times
TABLES: dict[str, tuple[str, ...]] = {
    "events": ("task", "gen", "seq", "ingested_at"),
    "failed_events": ("task", "gen", "seq", "failed_at"),
    "score_history": ("task", "gen", "seq"),
    "member_scores": ("task", "gen", "seq"),
    "lifecycle_transitions": ("task", "gen", "seq"),
    "model_metrics": ("task", "gen", "seq"),
    "alerts": ("task", "gen", "seq", "emitted_at"),
}


def _digests(env: dict[str, str], prefix: str) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for table, left_out in TABLES.items():
        final = " FINAL" if table == "member_scores" else ""
        sql = f"SELECT * EXCEPT ({', '.join(left_out)}) FROM {table}{final}"
        result = run_pulse(["query", sql, "--format", "json"], env, timeout=120)
        assert result.returncode == 0, result.stderr
        # the topic prefix is the test's own: rows name topics without it
        rows = sorted(line.replace(prefix, "") for line in result.stdout.splitlines() if line)
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        found[table] = {"rows": len(rows), "sha256": digest}
    return found


def test_every_output_table_holds_the_same_rows_for_a_fixed_input(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    config = SimulationConfig(members=300, days=60, seed=21, start=datetime(2026, 1, 1, tzinfo=UTC))
    source = tmp_path / "events.jsonl"
    with source.open("w") as out:
        for event in simulate(config):
            out.write(json.dumps(event) + "\n")
    prefix = f"g{uuid.uuid4().hex[:8]}."
    env = pulse_env(broker.bootstrap, prefix, f"golden-{uuid.uuid4().hex[:6]}", tmp_path / "data")
    replayed = run_pulse(["replay", str(source)], env, timeout=480)
    assert replayed.returncode == 0, replayed.stderr[-2000:]

    found = _digests(env, prefix)
    if os.environ.get("PULSE_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
        pytest.fail(f"{GOLDEN.name} rewritten: review the difference and commit it")
    expected = json.loads(GOLDEN.read_text())
    differ = {t: (found[t], expected.get(t)) for t in TABLES if found[t] != expected.get(t)}
    assert not differ, f"rows differ from {GOLDEN.name} (found, expected): {differ}"
    assert int(found["events"]["rows"]) > 9_000  # type: ignore[call-overload]
