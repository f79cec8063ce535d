"""``pulse``: the command line of Community Pulse.

    pulse up [--simulate/--no-simulate] [--duration S]   the platform, with a live status
    pulse worker                                          a worker for production (no simulator)
    pulse replay FILE.jsonl                               backfill a file through the pipeline
    pulse query "SQL" [--format table|csv|json]           read-only queries on ClickHouse
    pulse simulate --members N --days D --seed S [--out FILE] [--purchases-only]
    pulse schemas export DIR
    pulse evaluate --seed 7                               model quality against ground truth

Settings come from ``PULSE_*`` environment variables (see README).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import PulseError
from streams.config import Settings, SettingsError
from streams.kafka_config import librdkafka_config
from streams.runtime import Runtime, read_instance
from streams.web.ops import QUERY_FORMATS

if TYPE_CHECKING:
    from streams.replay import RefusedLine

__all__ = ["main"]

log = logging.getLogger("pulse")


def _settings() -> Settings:
    return Settings.from_env()


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The running worker's API token, when one is set (never printed)."""
    return {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: leave now
            raise KeyboardInterrupt
        print("\nstopping: flushing to ClickHouse and committing offsets...", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# --- pulse up / worker ---------------------------------------------------------
def _status_line(status: dict[str, Any], rate: float) -> str:
    line = (
        f"{time.strftime('%H:%M:%S')}  events/s {rate:7.0f}  processed {status['processed']:>9,}"
        f"  rejected {status['rejected']:>6,}  duplicates {status['duplicates']:>6,}"
        f"  sink backlog {status['sink_backlog_rows']:>6,} rows"
    )
    if "members" in status:
        line += f"  members {status['members']:>7,}"
    if status.get("sink_error"):
        line += f"\n  ! sink: {status['sink_error'][:160]}"
    return line


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings()
    if read_instance(settings):
        print(
            f"a Pulse worker already runs on {settings.data_path}; stop it first", file=sys.stderr
        )
        return 2
    stop = threading.Event()
    _stop_on_signals(stop)
    print("starting Pulse: broker, ClickHouse, Faust worker ...", flush=True)
    runtime = Runtime(settings).start()
    try:
        http = runtime.http.url if runtime.http else "(disabled)"
        print(
            f"\n  Kafka       {runtime.bootstrap}"
            f"{' (embedded Tansu)' if settings.embedded_kafka else ''}\n"
            f"  ClickHouse  {runtime.status()['clickhouse']}, "
            f"database {settings.clickhouse_database}\n"
            f"  live page   {http}/\n"
            f"  metrics     {http}/metrics   health {http}/healthz\n"
            f"  API         POST {http}/v1/events   GET {http}/v1/members/<member id>\n"
            '  query       pulse query "SELECT event_type, count() FROM events GROUP BY event_type"'
            "\n  stop        Ctrl-C\n",
            flush=True,
        )
        if args.simulate:
            threading.Thread(
                target=_simulate_into, args=(runtime, settings, args, stop), daemon=True
            ).start()
        deadline = time.monotonic() + args.duration if args.duration else None
        last_processed, last_time = 0, time.monotonic()
        while not stop.wait(args.status_every):
            status = runtime.status()
            now = time.monotonic()
            rate = (status["processed"] - last_processed) / max(now - last_time, 1e-6)
            last_processed, last_time = status["processed"], now
            if not args.quiet:
                print(_status_line(status, rate), flush=True)
            if deadline and now >= deadline:
                break
    finally:
        stop.set()
        runtime.stop()
        print(f"stopped. Data kept in {settings.data_path}", flush=True)
    return 0


def _simulate_into(
    runtime: Runtime, settings: Settings, args: argparse.Namespace, stop: threading.Event
) -> None:
    from streams.replay import Publisher
    from streams.simulator import SimulationConfig, simulate

    config = SimulationConfig(members=args.members, days=args.days, seed=args.seed)
    print(
        f"simulating {config.members:,} members over {config.days} days of event time "
        f"at {args.speed:,.0f}x ...",
        flush=True,
    )
    try:
        publisher = Publisher(
            runtime.bootstrap, settings.topic_prefix, config=librdkafka_config(settings)
        )
        report = publisher.publish_events(
            simulate(config), speed=args.speed, should_stop=stop.is_set
        )
        print(f"simulation published {report.published:,} events", flush=True)
    except Exception as exc:  # keep the platform up; say what went wrong
        print(f"simulation stopped: {exc}", file=sys.stderr, flush=True)


def cmd_worker(args: argparse.Namespace) -> int:
    args.simulate = False
    return cmd_up(args)


# --- pulse replay --------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from sinks.clickhouse import connect
    from streams.replay import Publisher, numbered_lines, store_refused, wait_until

    path = Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    settings = _settings()
    running = read_instance(settings)
    if running:
        return _replay_into_running(path, settings, running, args.timeout)
    started = time.monotonic()
    runtime = Runtime(settings, serve_http=False).start(consume=False)
    try:
        # everything is published before anything is read: no input looks caught up
        # while the file is still being published, so the same file gives the same
        # scores, alerts and transitions in every run, interrupted or not
        publisher = Publisher(
            runtime.bootstrap,
            settings.topic_prefix,
            runtime.pseudonym,
            config=librdkafka_config(settings),
        )
        report = publisher.publish_lines(
            numbered_lines(path), progress=lambda n: print(f"  published {n:,} lines", flush=True)
        )
        publisher.close()
        targets = dict(report.last_offsets)
        # Lines the broker refused never reach the pipeline: record them here (a client of
        # its own: the sink's is busy in the worker's thread).
        client = connect(settings.clickhouse_url, None, settings.data_path)
        recorded = store_refused(client, settings.clickhouse_database, report.refused)
        print(
            f"published {report.published:,} of {report.lines:,} lines"
            f"{_refused_note(report.refused, recorded)}; processing ...",
            flush=True,
        )
        runtime.consume()

        consuming = time.monotonic()
        shown = [consuming]

        def progress() -> None:  # a line every 2 s: processed so far, and the rate
            now = time.monotonic()
            if now - shown[0] >= 2.0:
                shown[0] = now
                processed = runtime.status()["processed"]
                rate = processed / max(now - consuming, 1e-6)
                print(f"  processed {processed:,} ({rate:,.0f} events/s)", flush=True)

        wait_until(
            lambda: runtime.stored_through(targets),
            args.timeout,
            "the pipeline to store every line",
            on_tick=progress,
        )
        # the community alerts of the last periods: aggregated after the inputs
        wait_until(runtime.drained, args.timeout, "the community periods to close")
        status = runtime.status()
    finally:
        runtime.stop()
    elapsed = time.monotonic() - started
    stored = status["processed"] - status["rejected"] - status["duplicates"]
    stored -= status["consent_withheld"]
    withheld = ""
    if status["consent_withheld"] or status["erased_events"]:
        withheld = (
            f" (and {status['consent_withheld']:,} withheld: no analytics consent; "
            f"{status['erased_events']:,} deleted by erasure requests)"
        )
    print(
        f"replayed {report.lines:,} lines in {elapsed:.1f}s: "
        f"{stored:,} new events stored{withheld}, "
        f"{status['duplicates']:,} duplicates dropped, {status['rejected']:,} rejected "
        f"to {settings.topic('dead-letter')} and failed_events, "
        f"{len(report.refused):,} refused by the broker ({recorded:,} new in failed_events)"
    )
    return 0


def _refused_note(refused: Sequence[RefusedLine], recorded: int) -> str:
    """What happened to the lines the broker refused, for the progress line."""
    if not refused:
        return ""
    numbers = ", ".join(str(line.number) for line in refused[:10])
    more = ", ..." if len(refused) > 10 else ""
    which = "line" if len(refused) == 1 else "lines"
    return (
        f" ({len(refused):,} refused by the broker, {which} {numbers}{more}: "
        f"{recorded:,} new in failed_events)"
    )


def _replay_into_running(
    path: Path, settings: Settings, running: dict[str, Any], timeout: float
) -> int:
    """Publish into a running worker's broker and follow its /status until it caught up."""
    import json

    from sinks.clickhouse import connect
    from sinks.privacy import Pseudonymizer, load_or_create_key
    from streams.replay import Publisher, numbered_lines, store_refused, wait_until

    def status() -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own worker's URL
            f"{running['http']}/status", headers=_auth_headers(settings)
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            result: dict[str, Any] = json.load(response)
            return result

    before = status()["processed"]
    pseudonym = Pseudonymizer(load_or_create_key(settings.pseudonym_key, settings.data_path))
    publisher = Publisher(
        running["kafka_bootstrap"],
        settings.topic_prefix,
        pseudonym,
        config=librdkafka_config(settings),
    )
    report = publisher.publish_lines(numbered_lines(path))
    publisher.close()
    print(f"published {report.published:,} lines to the running worker (pid {running['pid']})")
    if report.refused and settings.clickhouse_url:
        client = connect(settings.clickhouse_url, None, settings.data_path)
        recorded = store_refused(client, settings.clickhouse_database, report.refused)
        print(f"refused by the broker{_refused_note(report.refused, recorded)}")
    elif report.refused:  # the running worker's process owns the embedded ClickHouse
        lines = ", ".join(str(line.number) for line in report.refused[:20])
        print(
            f"{len(report.refused):,} lines refused by the broker (lines {lines}) are NOT "
            "recorded in failed_events: the running worker owns the embedded ClickHouse. "
            "Replay the file without a running worker to record them.",
            file=sys.stderr,
        )

    def caught_up() -> bool:
        s = status()
        return bool(
            s["processed"] - before >= report.published
            and s["sink_pending_acks"] == 0
            and s["events_held"] == 0
        )

    wait_until(caught_up, timeout, "the running worker to store every line", interval=0.5)
    print("done: every line was processed and stored")
    return 0


# --- pulse query ---------------------------------------------------------------
def cmd_apply_erasures(args: argparse.Namespace) -> int:
    """Carry out the erasure feed on this data dir's ClickHouse (a shard whose worker is
    not running: a running worker follows the feed itself)."""
    settings = _settings()
    if settings.embedded_kafka:
        print(
            "pulse apply-erasures needs PULSE_KAFKA_BOOTSTRAP: the embedded broker keeps no "
            "erasure feed across restarts (and one worker needs none)",
            file=sys.stderr,
        )
        return 2
    if read_instance(settings):
        print(
            f"a worker runs on {settings.data_path}: it follows the erasure feed itself",
            file=sys.stderr,
        )
        return 2
    from sinks.clickhouse import connect
    from sinks.migrations import apply_migrations
    from streams.runtime import open_feed

    ca = settings.clickhouse_ca_file
    client = connect(settings.clickhouse_url, None, settings.data_path, ca_file=ca)
    apply_migrations(client, settings.clickhouse_database)
    feed = open_feed(settings, settings.kafka_bootstrap, client)
    done = feed.catch_up(timeout=args.timeout)
    print(
        f"carried out {done:,} erasures and consent withdrawals of other workers "
        f"({feed.position:,} feed messages read)"
    )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    settings = _settings()
    fmt = QUERY_FORMATS[args.format]
    running = read_instance(settings)
    if running and running.get("http"):
        request = urllib.request.Request(  # noqa: S310 - loopback URL of our own worker
            f"{running['http']}/query?format={args.format}",
            data=args.sql.encode(),
            method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8", **_auth_headers(settings)},
        )
        try:
            with urllib.request.urlopen(request, timeout=args.timeout) as response:  # noqa: S310
                sys.stdout.write(response.read().decode())
            return 0
        except urllib.error.HTTPError as exc:
            print(exc.read().decode().strip(), file=sys.stderr)
            return 1
    from sinks.clickhouse import connect

    if settings.embedded_clickhouse and not (settings.data_path / "clickhouse").exists():
        print(
            f"no Pulse data in {settings.data_path}: start `pulse up` or load a file with "
            "`pulse replay FILE.jsonl` first (or set PULSE_DATA_DIR / PULSE_CLICKHOUSE_URL)",
            file=sys.stderr,
        )
        return 1
    try:
        client = connect(
            settings.clickhouse_url,
            settings.clickhouse_database,
            settings.data_path,
            readonly=True,
            ca_file=settings.clickhouse_ca_file,
        )
        sys.stdout.write(client.raw_query(args.sql, fmt=fmt).decode())
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


# --- pulse simulate / schemas / evaluate ----------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.simulator import SimulationConfig, simulate, write_jsonl
    from streams.simulator.purchases import (
        PurchasesConfig,
        simulate_purchases,
        write_purchases_jsonl,
    )

    config = SimulationConfig(members=args.members, days=args.days, seed=args.seed)
    purchases = PurchasesConfig(members=args.members, days=args.days, seed=args.seed)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()

        def progress(n: int) -> None:
            print(f"  {n:,} events", flush=True)

        if args.purchases_only:
            counts = write_purchases_jsonl(purchases, Path(args.out), progress=progress)
            truth = ""
        else:
            counts = write_jsonl(config, Path(args.out), progress=progress)
            truth = f" and ground truth to {Path(args.out).with_suffix('.truth.jsonl')}"
        print(
            f"wrote {counts['events']:,} events of {counts['members']:,} members to {args.out}"
            f"{truth} in {time.monotonic() - started:.1f}s"
        )
        return 0
    settings = _settings()
    running = read_instance(settings)
    bootstrap = settings.kafka_bootstrap or (running or {}).get("kafka_bootstrap")
    if not bootstrap:
        print(
            "nowhere to publish: set PULSE_KAFKA_BOOTSTRAP, start `pulse up`, or use --out FILE",
            file=sys.stderr,
        )
        return 2
    from streams.replay import Publisher

    events = simulate_purchases(purchases) if args.purchases_only else simulate(config)
    publisher = Publisher(bootstrap, settings.topic_prefix, config=librdkafka_config(settings))
    report = publisher.publish_events(events, speed=args.speed)
    print(f"published {report.published:,} events to {bootstrap}")
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export_json_schemas
    from streams.web.openapi import export_openapi

    written = export_json_schemas(Path(args.dir))
    openapi = export_openapi(Path(args.dir))
    print(f"wrote {len(written)} JSON Schema files and {openapi.name} (the HTTP API) to {args.dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from streams.evaluate import run_evaluation

    result: int = run_evaluation(args)
    return result


# --- parser --------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulse", description="Community Pulse")
    sub = parser.add_subparsers(dest="command", required=True)

    def sim_options(p: argparse.ArgumentParser, members: int, days: int) -> None:
        p.add_argument("--members", type=int, default=members, help="simulated members")
        p.add_argument("--days", type=int, default=days, help="days of event time")
        p.add_argument("--seed", type=int, default=7, help="random seed (reproducible)")
        p.add_argument(
            "--speed",
            type=float,
            default=20_000.0,
            help="event-time seconds per wall-clock second (0: as fast as possible)",
        )

    up = sub.add_parser("up", help="run the platform on embedded defaults")
    up.add_argument("--simulate", action=argparse.BooleanOptionalAction, default=True)
    up.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: Ctrl-C)")
    up.add_argument("--status-every", type=float, default=2.0, help="seconds between status lines")
    up.add_argument("--quiet", action="store_true", help="no status lines")
    sim_options(up, 2000, 60)
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="a worker without simulator (production)")
    worker.add_argument("--duration", type=float, default=0)
    worker.add_argument("--status-every", type=float, default=10.0)
    worker.add_argument("--quiet", action="store_true")
    worker.set_defaults(func=cmd_worker)

    replay = sub.add_parser("replay", help="publish a JSONL file through the whole pipeline")
    replay.add_argument("file")
    replay.add_argument("--timeout", type=float, default=1800, help="seconds to wait at most")
    replay.set_defaults(func=cmd_replay)

    erasures = sub.add_parser(
        "apply-erasures", help="carry out other workers' erasures on this data dir's ClickHouse"
    )
    erasures.add_argument("--timeout", type=float, default=60, help="seconds to read at most")
    erasures.set_defaults(func=cmd_apply_erasures)

    query = sub.add_parser("query", help="a read-only SQL query on Pulse's ClickHouse")
    query.add_argument("sql")
    query.add_argument("--format", choices=sorted(QUERY_FORMATS), default="table")
    query.add_argument("--timeout", type=float, default=60)
    query.set_defaults(func=cmd_query)

    simulate = sub.add_parser("simulate", help="a simulated community, to Kafka or to a file")
    sim_options(simulate, 2000, 120)
    simulate.add_argument("--out", help="write JSONL (and .truth.jsonl) instead of publishing")
    simulate.add_argument(
        "--purchases-only",
        action="store_true",
        help="a transaction log instead of a community: purchases, quotes, claims and "
        "cancellations only, with repeat buying as in retail logs (BG/NBD); no ground truth",
    )
    simulate.set_defaults(func=cmd_simulate)

    schemas = sub.add_parser("schemas", help="event schemas")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser(
        "export", help="write JSON Schema files and the HTTP API's OpenAPI for upstream teams"
    )
    export.add_argument("dir")
    export.set_defaults(func=cmd_schemas_export)

    evaluate = sub.add_parser("evaluate", help="churn/conversion quality vs ground truth")
    evaluate.add_argument("--seed", type=int, default=7)
    evaluate.add_argument("--members", type=int, default=20_000)
    evaluate.add_argument("--days", type=int, default=270)
    evaluate.add_argument("--timeout", type=float, default=3600)
    evaluate.add_argument(
        "--keep-data",
        metavar="DIR",
        type=Path,
        help="keep the pipeline's data (ClickHouse tables, worker log) in DIR, to query with "
        "PULSE_DATA_DIR=DIR pulse query (default: a temporary directory, deleted)",
    )
    evaluate.add_argument(
        "--pipeline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score through the real broker, Faust worker and ClickHouse (default); "
        "--no-pipeline runs the same engine in-process, faster",
    )
    evaluate.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="split members into P partitions, each with its own models, as the pipeline "
        "does (in-process; through the pipeline: PULSE_PARTITIONS)",
    )
    real = evaluate.add_argument_group(
        "a real purchase log", "score a CSV purchase log instead of the simulator"
    )
    real.add_argument("--transactions", metavar="FILE.csv", help="one purchase per row")
    real.add_argument("--customer-column", default="customer_id")
    real.add_argument("--date-column", default="date")
    real.add_argument("--amount-column", default="amount")
    real.add_argument("--date-format", help="strptime format, e.g. %%d/%%m/%%Y (default: ISO 8601)")
    real.add_argument("--delimiter", help="column separator (default: guessed)")
    real.add_argument(
        "--cutoff", help="last day of the calibration period (default: last day - holdout)"
    )
    real.add_argument("--holdout-days", type=float, default=90.0, help="days after the cutoff")
    real.add_argument(
        "--churn-window-days",
        type=float,
        default=0.0,
        help="the models' churn window (default: PULSE_CHURN_WINDOW_DAYS)",
    )
    real.add_argument("--currency", default="USD", help="ISO 4217 code of the amounts")
    real.add_argument(
        "--product-line",
        default="property",
        choices=["health", "accident", "auto", "travel", "life", "property"],
    )
    real.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings_level = Settings.from_env().log_level if args.command != "schemas" else "warn"
    except SettingsError as exc:  # a configuration error, not a crash: say which setting
        print(f"pulse: {exc}", file=sys.stderr)
        return 2
    level = {"crit": "CRITICAL", "warn": "WARNING"}.get(settings_level, settings_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result: int = args.func(args)
        return result
    except PulseError as exc:
        print(f"pulse: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
