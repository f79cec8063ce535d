"""``make bench`` keeps working: a quick run drives a real `pulse worker` and a raw consumer.

Speed is not asserted (benchmarks measure it); the test checks that the instrument
measures what it claims: the same file read to its end by both, every event stored in
ClickHouse and committed, and a results file with every figure key and the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "pulse_events_per_s",
    "faust_json_events_per_s",
    "raw_consume_events_per_s",
    "ratio_vs_faust",
    "ratio_vs_raw",
    "purchases_only_events_per_s",
    "score_rows_per_event",
    "freshness_p99_s",
    "state_bytes_per_member",
    "restore_s_per_100k_members",
    "scaling_2_workers",
}


@pytest.mark.timeout(600)
def test_a_quick_bench_measures_pulse_and_raw_consumption_on_the_same_file(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "bench", "--quick", "--only", "raw,pulse", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert KEYS <= set(results)
    assert results["run"]["failures"] == {}
    events = results["details"]["main_file"]["events"]
    pulse = results["details"]["pulse"]
    assert pulse["finished"] and pulse["all_stored"]
    # read from ClickHouse through POST /query: every event, but those of members who
    # withdrew analytics consent or asked to be erased
    gone = sum(s["consent_withheld"] + s["erased_events"] for s in pulse["status"])
    assert pulse["counts"]["events"] == events - gone
    assert pulse["counts"]["score_history_event"] >= 0.99 * events
    assert results["pulse_events_per_s"] > 0 and results["raw_consume_events_per_s"] > 0
    assert results["ratio_vs_raw"] == pytest.approx(
        results["pulse_events_per_s"] / results["raw_consume_events_per_s"], abs=1e-3
    )
    assert results["faust_json_events_per_s"] is None  # not selected: not measured
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["python"] and machine["versions"]["tansu"]
