"""Member API latency: GET /v1/members/{member_id} at a fixed request rate against a worker.

``run()`` starts a real worker (embedded Tansu broker, chDB in a temporary data
dir, the scorer), loads a simulated community through the pipeline and waits
until it is stored, then sends requests on an open-loop schedule (request ``i`` is
due at ``start + i / rate``, and its latency counts from that instant, so a slow
answer delays nobody's measurement: no coordinated omission) over keep-alive
loopback connections, from a separate process (a client in the worker's process
would compete with it for the GIL and measure itself). Two phases: ``idle`` (the
worker has nothing to ingest) and ``ingesting`` (a second community is being
published and scored meanwhile).

The lead wires it into ``python -m bench``; alone: ``python -m bench.member_api``.
"""

from __future__ import annotations

import http.client
import itertools
import multiprocessing
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streams.config import Settings
from streams.replay import Publisher, wait_until
from streams.runtime import Runtime
from streams.simulator import SimulationConfig, simulate

__all__ = ["run", "load"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def load(
    base_url: str, member_ids: list[str], *, rate: float, seconds: float, workers: int = 8
) -> dict[str, Any]:
    """Open-loop GETs of random members at ``rate`` requests/s for ``seconds``."""
    parts = urlsplit(base_url)
    total = int(rate * seconds)
    ids = random.Random(7).choices(member_ids, k=total)  # noqa: S311 - not security
    latencies: list[float] = []
    service: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    counter = itertools.count()
    start = time.perf_counter() + 0.2

    def worker() -> None:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        while (i := next(counter)) < total:
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            try:
                connection.request("GET", f"/v1/members/{ids[i]}")
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=10
                )
                status = 0
            done = time.perf_counter()
            with lock:
                latencies.append(done - due)
                service.append(done - sent)
                statuses[status] += 1
        connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {
        "requests": total,
        "achieved_rate": round(total / elapsed, 1),
        "statuses": dict(statuses),
        "p50_ms": round(_percentile(ms, 0.50), 2),
        "p95_ms": round(_percentile(ms, 0.95), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_service_ms": round(statistics.fmean(service) * 1000, 2),
    }


def _load_elsewhere(base_url: str, member_ids: list[str], rate: float, seconds: float) -> Any:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(load, base_url, member_ids, rate=rate, seconds=seconds).result()


def run(
    *,
    members: int = 2000,
    days: int = 60,
    rate: float = 200.0,
    seconds: float = 30.0,
    ingest_speed: float = 20_000.0,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Latency of the member API at ``rate`` requests/s: idle worker, then ingesting."""
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as scratch:
        settings = Settings(
            data_dir=str(data_dir or scratch),
            metrics_port=0,
            partitions=2,
            rebalance_timeout_seconds=2.0,
            input_idle_seconds=1.0,
        )
        runtime = Runtime(settings, announce=False).start()
        try:
            assert runtime.http is not None
            config = SimulationConfig(members=members, days=days, seed=7)
            events = list(simulate(config))
            loaded = time.monotonic()
            report = Publisher(runtime.bootstrap, settings.topic_prefix).publish_events(events)
            targets = dict(report.last_offsets)
            wait_until(lambda: runtime.stored_through(targets), 1800, "the community stored")
            wait_until(runtime.settled, 600, "the worker to settle")
            load_seconds = time.monotonic() - loaded
            ids = sorted({e["member_id"] for e in events})
            idle = _load_elsewhere(runtime.http.url, ids, rate, seconds)

            # A second community (other member ids, later event time) scored meanwhile.
            later = SimulationConfig(
                members=members, days=days, seed=8, start=datetime(2027, 1, 1, tzinfo=UTC)
            )
            busy_events = [{**e, "member_id": f"b-{e['member_id']}"} for e in simulate(later)]
            stop = threading.Event()
            before = runtime.status()["processed"]
            publisher = threading.Thread(
                target=Publisher(runtime.bootstrap, settings.topic_prefix).publish_events,
                args=(busy_events,),
                kwargs={"speed": ingest_speed, "should_stop": stop.is_set},
                daemon=True,
            )
            publisher.start()
            started = time.monotonic()
            busy = _load_elsewhere(runtime.http.url, ids, rate, seconds)
            busy["events_per_second_ingested"] = round(
                (runtime.status()["processed"] - before) / (time.monotonic() - started), 1
            )
            stop.set()
            publisher.join(120)
        finally:
            runtime.stop()
    return {
        "members": len(ids),
        "events": len(events),
        "load_seconds": round(load_seconds, 1),
        "rate": rate,
        "idle": idle,
        "ingesting": busy,
    }


def main() -> None:
    result = run()
    print(f"member API: {result['members']:,} members, {result['events']:,} events loaded")
    for phase in ("idle", "ingesting"):
        r = result[phase]
        extra = (
            f", {r['events_per_second_ingested']:,.0f} events/s ingested"
            if "events_per_second_ingested" in r
            else ""
        )
        print(
            f"  {phase:<10} {r['requests']:,} GETs at {r['achieved_rate']}/s: p50 {r['p50_ms']} ms"
            f"  p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms  max {r['max_ms']} ms"
            f"  mean service {r['mean_service_ms']} ms  statuses {r['statuses']}{extra}"
        )


if __name__ == "__main__":
    main()
