"""Each benchmark figure: how it is measured, on which input, and what it returns.

Throughput figures read a backlog: the file is published first, then the consumer
starts, and the rate is ``lines / (done - first)`` where *first* is the moment the
consumer got its first message (for Pulse: the last ``/status`` poll that still showed
nothing processed, so start-up is excluded and the interval is never shorter than the
truth) and *done* is, for Pulse, the first poll at which the consumer group's committed
offsets on the broker reach the end of every input partition (every event stored, since
Pulse commits only stored events) and, for the peers, the moment they decoded the last
message. CPU time of the consumer process over the same interval is reported next to
each rate: on a shared machine it is steadier than wall time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness import Bench, BenchError, Loaded, Worker, poll

__all__ = [
    "PulseRun",
    "run_pulse",
    "peer_rate",
    "purchases_figures",
    "freshness",
    "state_and_restore",
]

POLL = 0.2


def _say(text: str) -> None:
    print(text, flush=True)


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list.

    >>> _percentile([1.0, 2.0, 3.0, 4.0], 50), _percentile([5.0], 99), _percentile([1.0, 9.0], 99)
    (2.0, 5.0, 9.0)
    """
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --- Pulse over a backlog -------------------------------------------------------------
@dataclass
class PulseRun:
    workers: int
    lines: int
    events_per_s: float
    seconds: float
    startup_s: float
    cpu_s: float
    finished: bool
    status: list[dict[str, Any]]
    counts: dict[str, int]
    #: every valid event has its row in ``events`` (over the union of the workers' shards)
    all_stored: bool

    def details(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "lines": self.lines,
            "events_per_s": round(self.events_per_s, 1),
            "seconds": round(self.seconds, 2),
            "startup_s": round(self.startup_s, 2),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_us_per_event": round(self.cpu_s / max(self.lines, 1) * 1e6, 1),
            "finished": self.finished,
            "all_stored": self.all_stored,
            "counts": self.counts,
            "status": [_brief(s) for s in self.status],
        }


_STATUS_KEYS = (
    "processed",
    "rejected",
    "duplicates",
    "members",
    "events_held",
    "events_released_early",
    "sink_flushes",
    "restored_members",
    "consent_withheld",
    "erased_events",
    "rolled_back_rows",
)


def _brief(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status[k] for k in _STATUS_KEYS if k in status}


COUNTS_SQL = """
SELECT
  (SELECT count() FROM events) AS events,
  (SELECT count() FROM score_history) AS score_history,
  (SELECT countIf(trigger = 'event') FROM score_history) AS score_history_event,
  (SELECT countIf(trigger != 'event') FROM score_history) AS score_history_other,
  (SELECT count() FROM member_scores) AS member_scores_rows,
  (SELECT count() FROM lifecycle_transitions) AS lifecycle_transitions,
  (SELECT count() FROM alerts) AS alerts,
  (SELECT count() FROM model_metrics) AS model_metrics
"""


def _counts(workers: list[Worker]) -> dict[str, int]:
    """Row counts summed over the workers' ClickHouse shards."""
    total: dict[str, int] = {}
    for worker in workers:
        for key, value in worker.query(COUNTS_SQL)[0].items():
            total[key] = total.get(key, 0) + int(value)
    return total


def _reached(committed: dict[tuple[str, int], int], loaded: Loaded) -> int:
    """How many input partitions the committed offsets cover to their end."""
    return sum(1 for tp, end in loaded.ends.items() if end == 0 or committed.get(tp, -1) >= end)


def run_pulse(
    bench: Bench, loaded: Loaded, *, workers: int = 1, timeout: float = 1800, label: str = "pulse"
) -> PulseRun:
    """``workers`` fresh ``pulse worker`` processes in one group read ``loaded`` to its end."""
    app_id = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    store = "kafka" if workers > 1 else "clickhouse"
    running = [
        bench.worker(f"{app_id}-w{i}", loaded.prefix, app_id, None, store=store)
        for i in range(workers)
    ]
    launched = min(w.launched for w in running)
    before = time.time()
    cpu_first = [0.0] * workers
    first: float | None = None
    statuses: list[dict[str, Any] | None] = [None] * workers
    deadline = time.monotonic() + timeout
    finished = False
    last_print = time.monotonic()
    while time.monotonic() < deadline:
        now = time.time()
        statuses = [w.status() for w in running]
        processed = sum(s["processed"] for s in statuses if s)
        if first is None:
            if processed == 0:
                before = now
                cpu_first = [w.cpu() for w in running]
            else:
                first = before
        if first is not None:
            committed = bench.committed(app_id, loaded)
            settled = all(
                s is not None and s["events_held"] == 0 and s["sink_pending_acks"] == 0
                for s in statuses
            )
            if _reached(committed, loaded) == len(loaded.ends) and settled:
                finished = True
                break
            if time.monotonic() - last_print > 15:
                last_print = time.monotonic()
                _say(f"    {label}: processed {processed:,} of {loaded.lines:,}")
        time.sleep(POLL)
    done = time.time()
    cpu = sum(w.cpu() - c for w, c in zip(running, cpu_first, strict=True))
    start = first if first is not None else done
    seconds = done - start
    if finished:  # not timed: the rows are counted once erasures are done on every shard
        _wait_for_erasures(running, deadline=time.monotonic() + 120)
    counts = _counts(running)
    final = [s for s in (w.status() for w in running) if s is not None]
    stored = sum(
        s["processed"]
        - s["rejected"]
        - s["duplicates"]
        - s.get("consent_withheld", 0)
        - s.get("erased_events", 0)
        for s in final
    )
    for worker in running:
        worker.stop()
    if not finished:
        _say(f"    {label}: did NOT finish within {timeout:.0f}s")
    return PulseRun(
        workers=workers,
        lines=loaded.lines,
        events_per_s=loaded.lines / seconds if finished and seconds > 0 else 0.0,
        seconds=seconds,
        startup_s=start - launched,
        cpu_s=cpu,
        finished=finished,
        status=final,
        counts=counts,
        all_stored=finished and counts["events"] == stored,
    )


def _wait_for_erasures(running: list[Worker], deadline: float) -> None:
    """Until no task has an erasure or withdrawal left and every worker carried out the
    erasure feed past what all of them published (or ``deadline``)."""
    while time.monotonic() < deadline:
        statuses = [w.status() for w in running]
        if all(statuses):
            published = sum(s.get("erasures_published", 0) for s in statuses if s)
            if all(
                s.get("erasures_pending", 0) == 0 and s.get("erasure_feed_position", 0) >= published
                for s in statuses
                if s
            ):
                return
        time.sleep(POLL)
    _say("    erasures not done on every shard in time: the counts may include erased rows")


def peer_rate(bench: Bench, kind: str, loaded: Loaded, timeout: float = 900) -> dict[str, Any]:
    result = bench.peer(kind, loaded, timeout)
    seconds = result["last_wall"] - result["first_wall"]
    return {
        "events_per_s": round(loaded.lines / seconds, 1) if seconds > 0 else None,
        "seconds": round(seconds, 3),
        "startup_s": round(result["first_wall"] - result["launched_wall"], 2),
        "cpu_s": round(result["cpu_s"], 2),
        "cpu_us_per_event": round(result["cpu_s"] / loaded.lines * 1e6, 1),
    }


# --- purchases-only ------------------------------------------------------------------
def purchases_figures(bench: Bench, loaded: Loaded, members: int) -> dict[str, Any]:
    run = run_pulse(bench, loaded, label="purchases")
    c = run.counts
    return {
        "members": members,
        **run.details(),
        "score_rows_per_event": round(c["score_history"] / max(c["events"], 1), 3),
        "silence_rows_per_event": round(c["score_history_other"] / max(c["events"], 1), 3),
    }


# --- freshness -----------------------------------------------------------------------
def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _score_visible(worker: Worker, occurred_at: str) -> bool:
    rows = worker.query(
        "SELECT count() AS n FROM score_history WHERE trigger = 'event' AND "
        f"scored_at = parseDateTime64BestEffort('{occurred_at}', 3, 'UTC')"
    )
    return bool(rows and int(rows[0]["n"]) > 0)


def _first_scored(worker: Worker, occurred_at: str, timeout: float) -> tuple[float, float]:
    """Seconds from launch until ``/status`` answers, and until the event's score is stored."""
    worker.wait_up(timeout)
    up = time.time()
    poll(lambda: _score_visible(worker, occurred_at), timeout, "the first score", interval=0.1)
    return up - worker.launched, time.time() - worker.launched


class _Seen:
    """Polls ``events`` through ``POST /query`` and notes when each event id first appears.

    An event is queryable from the start of the first poll that returns it (the query
    reads what was stored before it began). Each poll asks only for the events since
    the oldest one still awaited, and gives up on an event after ``give_up_s``: some
    never reach ``events`` (withheld consent, erasures), and waiting for them would make
    every poll read all events since the start, slower and slower, and load the worker.
    """

    def __init__(self, worker: Worker, interval: float, give_up_s: float = 30.0) -> None:
        self.worker = worker
        self.interval = interval
        self.give_up_s = give_up_s
        self.sent: dict[str, tuple[float, str]] = {}  # id -> (send wall time, occurred_at)
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.polls = 0
        self.errors: list[str] = []

    def _awaited(self, now: float) -> list[str]:
        """``occurred_at`` of the events not seen yet and not given up on at ``now``."""
        with self.lock:
            return [
                occurred
                for k, (sent, occurred) in self.sent.items()
                if k not in self.seen and sent > now - self.give_up_s
            ]

    def awaiting(self) -> int:
        """Events not seen yet and not given up on."""
        return len(self._awaited(time.time()))

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            asked = time.time()
            pending = self._awaited(asked)
            if not pending:
                continue
            low = min(pending)
            try:
                rows = self.worker.query(
                    "SELECT toString(event_id) AS id FROM events WHERE occurred_at >= "
                    f"parseDateTime64BestEffort('{low}', 3, 'UTC') - INTERVAL 1 SECOND"
                )
            except BenchError as exc:
                self.errors.append(str(exc)[:200])
                continue
            self.polls += 1
            with self.lock:
                for row in rows:
                    if row["id"] in self.sent and row["id"] not in self.seen:
                        self.seen[row["id"]] = asked


def freshness(
    bench: Bench,
    events: list[dict[str, Any]],
    rate: float,
    warmup_s: float,
    measure_s: float,
    interval: float = 0.25,
) -> dict[str, Any]:
    """Occurred-to-queryable latency of events published live at ``rate`` per second."""
    prefix = f"fresh{uuid.uuid4().hex[:4]}."
    app_id = f"bench-fresh-{uuid.uuid4().hex[:6]}"
    empty = Loaded(prefix, 0)
    producer = bench.producer(prefix)
    from streams.broker import ensure_topics

    ensure_topics(bench.bootstrap, empty.topics, 4)
    probe = dict(events[0], event_id=str(uuid.uuid4()), occurred_at=_now_iso())
    producer.send(probe)
    producer.flush(30)
    worker = bench.worker(app_id, prefix, app_id)
    up_s, first_scored_s = _first_scored(worker, probe["occurred_at"], 180)
    _say(f"    fresh start: /status after {up_s:.1f}s, first event scored {first_scored_s:.1f}s")
    seen = _Seen(worker, interval)
    poller = threading.Thread(target=seen.run, daemon=True)
    poller.start()
    total = int(rate * (warmup_s + measure_s))
    if total > len(events) - 1:
        raise BenchError(f"freshness needs {total} events, the source has {len(events) - 1}")
    started = time.time()
    measured_from = started + warmup_s
    cpu_from: float | None = None
    for i, event in enumerate(events[1 : total + 1]):
        if cpu_from is None and time.time() >= measured_from:
            cpu_from = worker.cpu()
        due = started + i / rate
        while (delay := due - time.time()) > 0:
            time.sleep(min(delay, 0.05))
        at = time.time()
        occurred = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
        event = dict(event, occurred_at=occurred)
        producer.send(event)
        with seen.lock:
            seen.sent[event["event_id"]] = (at, occurred)
    producer.flush(30)
    published_s = time.time() - started
    cpu_s = worker.cpu() - (cpu_from if cpu_from is not None else 0.0)
    try:
        poll(lambda: seen.awaiting() == 0, 120, "every event to be queryable", 0.5)
    except BenchError:
        pass
    seen.stop.set()
    poller.join(10)
    worker.stop()
    latencies = [
        seen.seen[k] - sent
        for k, (sent, _) in seen.sent.items()
        if k in seen.seen and sent >= measured_from
    ]
    measured = sum(1 for sent, _ in seen.sent.values() if sent >= measured_from)
    if not latencies:
        raise BenchError("no event became queryable")
    return {
        "rate_per_s": round(rate, 1),
        "achieved_rate_per_s": round(total / published_s, 1),
        "warmup_s": warmup_s,
        "measured_s": measure_s,
        "events_measured": measured,
        "events_never_queryable": measured - len(latencies),
        # the worker's CPU while the measured events were published, per event
        "worker_cpu_us_per_event": round(cpu_s / max(1, measured) * 1e6),
        "p50_s": round(_percentile(latencies, 50), 3),
        "p90_s": round(_percentile(latencies, 90), 3),
        "p99_s": round(_percentile(latencies, 99), 3),
        "max_s": round(max(latencies), 3),
        "poll_interval_s": interval,
        "polls": seen.polls,
        "poll_errors": seen.errors[:3],
        "fresh_start_status_s": round(up_s, 2),
        "fresh_start_first_scored_s": round(first_scored_s, 2),
    }


# --- state size and restore ----------------------------------------------------------
STATE_SQL = """
SELECT
  countIf(key NOT LIKE '~%') AS members,
  sumIf(length(state), key NOT LIKE '~%') AS member_bytes,
  maxIf(length(state), key NOT LIKE '~%') AS member_max_bytes,
  sumIf(length(state), key = '~task') AS models_bytes
FROM task_state FINAL
"""
PARTS_SQL = """
SELECT sum(data_compressed_bytes) AS compressed, sum(data_uncompressed_bytes) AS uncompressed,
       sum(rows) AS rows
FROM system.parts WHERE database = currentDatabase() AND table = 'task_state' AND active
"""


def state_and_restore(
    bench: Bench, loaded: Loaded, probe: dict[str, Any], timeout: float = 1800
) -> dict[str, Any]:
    """Score a large community, measure its checkpointed state, restart, time the first score."""
    app_id = f"bench-state-{uuid.uuid4().hex[:6]}"
    data = bench.root / app_id
    worker = bench.worker(app_id, loaded.prefix, app_id, data)
    _say(f"    scoring {loaded.lines:,} events ...")
    poll(lambda: worker.status() is not None, 180, "the worker", 0.2)
    up = time.time()
    poll(
        lambda: _reached(bench.committed(app_id, loaded), loaded) == len(loaded.ends),
        timeout,
        "the state run to commit everything",
        1.0,
    )
    poll(_settled(worker), 120, "the checkpoint of the last events", 0.5)
    scoring_s = time.time() - up
    state = {k: int(v) for k, v in worker.query(STATE_SQL)[0].items()}
    parts = {k: int(v) for k, v in worker.query(PARTS_SQL)[0].items()}
    status = worker.status() or {}
    stop_s = worker.stop()
    members = state["members"]
    per_member = (state["member_bytes"] + state["models_bytes"]) / max(members, 1)
    _say(
        f"    {members:,} members: {per_member:,.0f} bytes of sealed state per member "
        f"(models record {state['models_bytes']:,} bytes); graceful stop took {stop_s:.1f}s"
    )
    producer = bench.producer(loaded.prefix)
    producer.send(probe)
    producer.flush(30)
    restarted = bench.worker(f"{app_id}-restart", loaded.prefix, app_id, data)
    up_s, scored_s = _first_scored(restarted, probe["occurred_at"], 600)
    after = restarted.status() or {}
    restarted.stop()
    restored = int(after.get("restored_members") or members)
    return {
        "members": members,
        "events": loaded.lines,
        "scoring_events_per_s": round(loaded.lines / scoring_s, 1),
        "state_bytes_per_member": round(per_member, 1),
        "member_record_bytes_avg": round(state["member_bytes"] / max(members, 1), 1),
        "member_record_bytes_max": state["member_max_bytes"],
        "models_record_bytes": state["models_bytes"],
        "member_state_on_disk_bytes_per_member": round(parts["compressed"] / max(members, 1), 1),
        "member_state_rows_on_disk": parts["rows"],
        "engine_members": status.get("members"),
        "graceful_stop_s": round(stop_s, 2),
        "restart_status_s": round(up_s, 2),
        "restore_s": round(scored_s, 2),
        "restored_members": after.get("restored_members"),
        "restored_from_changelog": after.get("restored_from_changelog"),
        "restore_s_per_100k_members": round(scored_s * 100_000 / max(restored, 1), 2),
    }


def _settled(worker: Worker) -> Callable[[], bool]:
    def check() -> bool:
        status = worker.status()
        return bool(status and status["events_held"] == 0 and status["sink_pending_acks"] == 0)

    return check


def probe_event(lines: list[bytes]) -> dict[str, Any]:
    """A new event for a member of ``lines``: its last ``content_viewed`` again, an hour later."""
    last = json.loads(lines[-1])
    end = datetime.fromisoformat(last["occurred_at"]).astimezone(UTC)
    for line in reversed(lines):
        event = json.loads(line)
        if event["event_type"] == "content_viewed":
            at = (end + timedelta(hours=1)).isoformat(timespec="milliseconds")
            return dict(event, event_id=str(uuid.uuid4()), occurred_at=at)
    raise BenchError("no content_viewed event to copy")
