"""Member API latency: GET /v1/members/{member_id} at a fixed request rate against a worker.

``run()`` starts a real worker (embedded Tansu broker, chDB in a temporary data
dir, the scorer), loads a simulated community through the pipeline and waits
until it is stored, then sends requests on an open-loop schedule (request ``i`` is
due at ``start + i / rate``, and its latency counts from that instant, so a slow
answer delays nobody's measurement: no coordinated omission) over keep-alive
loopback connections, from a separate process (a client in the worker's process
would compete with it for the GIL and measure itself). Two phases: ``idle`` (the
worker has nothing to ingest) and ``ingesting`` (a second community is being
published, from a process of its own as upstream apps do, and scored meanwhile).
Each phase reports which ``source`` answered (``worker``: the worker's own state,
``clickhouse``: ``member_scores``) and the machine's load average around it, since
the figures mean little on a machine busy with other work.

``python -m bench`` runs it as the ``member_api`` figure; alone:
``python -m bench.member_api``
(``--seconds 10 --members 500`` for a quick look; ``--help``).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
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
    sources: Counter[str] = Counter()
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
                body = response.read()
                status = response.status
                source = _source(body) if status == 200 else None
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=10
                )
                status, source = 0, None
            done = time.perf_counter()
            with lock:
                latencies.append(done - due)
                service.append(done - sent)
                statuses[status] += 1
                if source is not None:
                    sources[source] += 1
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
        "sources": dict(sources),
        "p50_ms": round(_percentile(ms, 0.50), 2),
        "p95_ms": round(_percentile(ms, 0.95), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_service_ms": round(statistics.fmean(service) * 1000, 2),
    }


def _source(body: bytes) -> str:
    source = json.loads(body).get("source")
    return str(source)


def _load_elsewhere(base_url: str, member_ids: list[str], rate: float, seconds: float) -> Any:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        before = os.getloadavg()
        result = pool.submit(load, base_url, member_ids, rate=rate, seconds=seconds).result()
    result["load_average"] = {"before": before, "after": os.getloadavg()}
    return result


def _publish(
    bootstrap: str, prefix: str, config: SimulationConfig, speed: float, stop: ProcessEvent
) -> None:
    """In a process of its own: publish a second community (member ids ``b-...``)."""
    events = [{**e, "member_id": f"b-{e['member_id']}"} for e in simulate(config)]
    Publisher(bootstrap, prefix).publish_events(events, speed=speed, should_stop=stop.is_set)


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

            # A second community (other member ids, later event time) scored meanwhile,
            # published from its own process (upstream apps are not in the worker's).
            later = SimulationConfig(
                members=members, days=days, seed=8, start=datetime(2027, 1, 1, tzinfo=UTC)
            )
            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            publisher = context.Process(
                target=_publish,
                args=(runtime.bootstrap, settings.topic_prefix, later, ingest_speed, stop),
                daemon=True,
            )
            processed = runtime.status()["processed"]
            publisher.start()
            try:
                wait_until(
                    lambda: runtime.status()["processed"] > processed,
                    120,
                    "the second community to arrive",
                )
                before = runtime.status()["processed"]
                started = time.monotonic()
                busy = _load_elsewhere(runtime.http.url, ids, rate, seconds)
                busy["events_per_second_ingested"] = round(
                    (runtime.status()["processed"] - before) / (time.monotonic() - started), 1
                )
            finally:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.member_api", description="GET /v1/members/{id} latency"
    )
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args(argv)
    result = run(members=args.members, days=args.days, rate=args.rate, seconds=args.seconds)
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
            f"  mean service {r['mean_service_ms']} ms  statuses {r['statuses']}"
            f"  sources {r['sources']}{extra}  load average {_loads(r)}"
        )
    if args.json:
        print(json.dumps(result))


def _loads(phase: dict[str, Any]) -> str:
    before, after = phase["load_average"]["before"], phase["load_average"]["after"]
    return f"{before[0]:.2f} -> {after[0]:.2f}"


if __name__ == "__main__":
    main()
