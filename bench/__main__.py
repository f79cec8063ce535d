"""``make bench`` / ``python -m bench``: the whole pipeline against its peers, in one run.

One embedded Tansu broker serves every figure. The same simulated file is published once
and read by a raw confluent-kafka consumer, a stock Faust agent and ``pulse worker``
(replay-equivalent: a backlog read to the end, every event stored and committed); then
a purchases-only customer base, live freshness at half Pulse's measured rate, state size
and restore at 100,000 members, the same file through two workers in one group, and the
member API's latency at 200 requests/s (``bench/member_api.py``, a worker of its own).
Figures and ratios are printed as they come and written to ``bench/results.json``
(``bench/results-quick.json`` with ``--quick``) with the machine they come from.

    python -m bench                       # everything (about 14 minutes on 2 cores)
    python -m bench --quick               # small inputs, a couple of minutes
    python -m bench --only raw,faust,pulse
    python -m bench --skip state,scaling
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Bench, BenchError, Loaded, machine

FIGURES = (
    "engine",
    "raw",
    "faust",
    "pulse",
    "purchases",
    "freshness",
    "state",
    "scaling",
    "member_api",
)
START = datetime(2025, 1, 6, tzinfo=UTC)
HERE = Path(__file__).parent


@dataclass(frozen=True)
class Sizes:
    main_members: int
    main_days: int
    purchases_members: int
    state_members: int
    fresh_warmup_s: float
    fresh_measure_s: float


FULL = Sizes(2000, 120, 24_000, 130_000, 10.0, 60.0)
QUICK = Sizes(300, 60, 2_400, 8_000, 3.0, 15.0)
#: Freshness publishes at half of Pulse's rate; without a Pulse figure in the run, this.
DEFAULT_PULSE_RATE = 1000.0


def _say(text: str) -> None:
    print(text, flush=True)


def _lines(events: Any) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in events]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _median(values: list[Any]) -> float:
    return round(float(statistics.median(values)), 1)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.selected = [f for f in FIGURES if f in args.only and f not in args.skip]
        #: Pulse's replay (and Faust's, when selected) alternate this many times: one run
        #: moves by about 15 % on a shared machine, so the headline is the median.
        self.rounds: int = args.rounds or (1 if args.quick else 3)
        self._faust_rates: list[float | None] = []
        self.results: dict[str, Any] = {
            "pulse_events_per_s": None,
            "faust_json_events_per_s": None,
            "raw_consume_events_per_s": None,
            "ratio_vs_faust": None,
            "ratio_vs_raw": None,
            "purchases_only_events_per_s": None,
            "score_rows_per_event": None,
            "freshness_p99_s": None,
            "state_bytes_per_member": None,
            "restore_s_per_100k_members": None,
            "scaling_2_workers": None,
            "scaling_correctness": None,
            "member_api_p99_ms_idle": None,
            "member_api_p99_ms_ingesting": None,
        }
        self.details: dict[str, Any] = {}
        self._main: tuple[list[bytes], Loaded] | None = None

    # --- inputs ----------------------------------------------------------------
    def main_lines(self) -> list[bytes]:
        from streams.simulator import SimulationConfig, simulate

        s = self.sizes
        config = SimulationConfig(members=s.main_members, days=s.main_days, seed=5, start=START)
        lines = _lines(simulate(config))
        self.details["main_file"] = {
            "members": s.main_members,
            "days": s.main_days,
            "seed": 5,
            "events": len(lines),
            "bytes": sum(len(x) + 1 for x in lines),
        }
        return lines

    def main_loaded(self, bench: Bench) -> Loaded:
        if self._main is None:
            lines = self.main_lines()
            started = time.monotonic()
            loaded = bench.load("main.", lines)
            self.details["main_file"]["publish_s"] = round(time.monotonic() - started, 2)
            _say(
                f"  main file: {self.sizes.main_members:,} members, {self.sizes.main_days} days, "
                f"{loaded.lines:,} events published in {time.monotonic() - started:.1f}s"
            )
            self._main = (lines, loaded)
        return self._main[1]

    # --- figures ---------------------------------------------------------------
    def fig_engine(self, bench: Bench) -> None:
        from bench.engine import engine_figures

        lines = self._main[0] if self._main else self.main_lines()
        self.details["engine"] = engine_figures(lines)

    def fig_raw(self, bench: Bench) -> None:
        from bench.figures import peer_rate

        result = peer_rate(bench, "raw", self.main_loaded(bench))
        self.details["raw"] = result
        self.results["raw_consume_events_per_s"] = result["events_per_s"]
        _say(f"  raw confluent-kafka + json.loads: {result['events_per_s']:,.0f} events/s")

    def fig_faust(self, bench: Bench) -> None:
        from bench.figures import peer_rate

        result = peer_rate(bench, "faust", self.main_loaded(bench))
        self.details["faust"] = result
        self.results["faust_json_events_per_s"] = result["events_per_s"]
        self._faust_rates = [result["events_per_s"]]
        _say(f"  stock Faust agent + json.loads: {result['events_per_s']:,.0f} events/s")

    def fig_pulse(self, bench: Bench) -> None:
        from bench.figures import peer_rate, run_pulse

        loaded = self.main_loaded(bench)
        rounds: list[dict[str, Any]] = []
        for n in range(self.rounds):
            if n and self._faust_rates:  # Faust again, right before this round's Pulse
                again = peer_rate(bench, "faust", loaded)
                self._faust_rates.append(again["events_per_s"])
                _say(f"  stock Faust agent + json.loads: {again['events_per_s']:,.0f} events/s")
            run = run_pulse(bench, loaded)
            if not n:
                self.details["pulse"] = run.details()
            rate = round(run.events_per_s, 1) if run.finished else None
            faust = self._faust_rates[-1] if self._faust_rates else None
            cpu_us = run.cpu_s / run.lines * 1e6
            ratio = _ratio(rate, faust)
            rounds.append(
                {
                    "pulse_events_per_s": rate,
                    "pulse_cpu_us_per_event": round(cpu_us, 1),
                    "faust_json_events_per_s": faust,
                    "ratio_vs_faust": ratio,
                }
            )
            _say(
                f"  pulse worker (stored and committed): {run.events_per_s:,.0f} events/s "
                f"({run.seconds:.1f}s, start-up {run.startup_s:.1f}s excluded, "
                f"{cpu_us:,.0f} us CPU/event); vs Faust {ratio}"
            )
        rates = [r["pulse_events_per_s"] for r in rounds]
        self.results["pulse_events_per_s"] = None if None in rates else _median(rates)
        if self._faust_rates and None not in self._faust_rates:
            self.results["faust_json_events_per_s"] = _median(self._faust_rates)
            self.details["faust"]["rounds"] = self._faust_rates
        self.details["pulse"]["rounds"] = rounds
        self._ratios()
        if self.rounds > 1:
            _say(
                f"  median of {self.rounds} rounds: pulse {self.results['pulse_events_per_s']:,} "
                f"events/s, Faust {self.results['faust_json_events_per_s'] or 0:,}; vs Faust "
                f"{self.results['ratio_vs_faust']}, vs raw {self.results['ratio_vs_raw']}"
            )

    def _ratios(self) -> None:
        r = self.results
        r["ratio_vs_faust"] = _ratio(r["pulse_events_per_s"], r["faust_json_events_per_s"])
        r["ratio_vs_raw"] = _ratio(r["pulse_events_per_s"], r["raw_consume_events_per_s"])

    def fig_purchases(self, bench: Bench) -> None:
        from bench.figures import purchases_figures
        from streams.simulator.purchases import PurchasesConfig, simulate_purchases

        config = PurchasesConfig(members=self.sizes.purchases_members, seed=0, start=START)
        lines = _lines(simulate_purchases(config))
        loaded = bench.load("purchases.", lines)
        _say(
            f"  purchases-only: {config.members:,} customers, {config.days} days, "
            f"{loaded.lines:,} events"
        )
        result = purchases_figures(bench, loaded, config.members)
        result["days"] = config.days
        self.details["purchases"] = result
        self.results["purchases_only_events_per_s"] = result["events_per_s"] or None
        self.results["score_rows_per_event"] = result["score_rows_per_event"]
        _say(
            f"  purchases-only: {result['events_per_s']:,.0f} events/s, "
            f"{result['score_rows_per_event']} score rows per event "
            f"({result['silence_rows_per_event']} silence re-scores)"
        )

    def fig_freshness(self, bench: Bench) -> None:
        from bench.figures import freshness
        from streams.simulator import SimulationConfig, simulate

        s = self.sizes
        sustained = self.results["pulse_events_per_s"]
        source = "pulse_events_per_s of this run"
        if self.args.freshness_rate:
            rate, source = self.args.freshness_rate, "--freshness-rate"
        elif sustained:
            rate = sustained / 2
        else:
            rate, source = DEFAULT_PULSE_RATE / 2, f"half of a default {DEFAULT_PULSE_RATE:.0f}/s"
        needed = int(rate * (s.fresh_warmup_s + s.fresh_measure_s)) + 2
        events: list[dict[str, Any]] = []
        for event in simulate(SimulationConfig(members=3000, days=120, seed=11, start=START)):
            events.append(event)
            if len(events) >= needed:
                break
        _say(f"  freshness: publishing live at {rate:,.0f} events/s ({source}) ...")
        result = freshness(bench, events, rate, s.fresh_warmup_s, s.fresh_measure_s)
        result["rate_source"] = source
        self.details["freshness"] = result
        self.results["freshness_p99_s"] = result["p99_s"]
        _say(
            f"  freshness (occurred -> queryable): p50 {result['p50_s']}s, p99 {result['p99_s']}s, "
            f"max {result['max_s']}s over {result['events_measured']:,} events "
            f"(worker: {result['worker_cpu_us_per_event']} us CPU per event)"
        )

    def fig_state(self, bench: Bench) -> None:
        from bench.figures import probe_event, state_and_restore
        from streams.simulator import SimulationConfig, simulate

        members = self.args.state_members or self.sizes.state_members
        config = SimulationConfig(members=members, days=1, seed=13, start=START)
        lines = _lines(simulate(config))
        loaded = bench.load("state.", lines)
        _say(f"  state: {config.members:,} simulated members over 1 day, {loaded.lines:,} events")
        result = state_and_restore(bench, loaded, probe_event(lines))
        self.details["state"] = result
        self.results["state_bytes_per_member"] = result["state_bytes_per_member"]
        self.results["restore_s_per_100k_members"] = result["restore_s_per_100k_members"]
        _say(
            f"  restore: first new event scored {result['restore_s']}s after the restart of a "
            f"worker holding {result['members']:,} members "
            f"({result['restore_s_per_100k_members']}s per 100k members)"
        )

    def fig_scaling(self, bench: Bench) -> None:
        from bench.figures import run_pulse

        loaded = self.main_loaded(bench)
        one = self.results["pulse_events_per_s"]
        reference = self.details.get("pulse", {}).get("counts")
        if one is None or reference is None:
            single = run_pulse(bench, loaded, label="scale1")
            self.details["scaling_1"] = single.details()
            one = single.events_per_s if single.finished else None
            reference = single.counts
        timeout = max(300.0, 3 * loaded.lines / one) if one else 1800.0
        two = run_pulse(bench, loaded, workers=2, timeout=timeout, label="scale2")
        # the union of the two shards holds what one worker stored, row for row
        keys = ("events", "score_history_event", "lifecycle_transitions")
        differ = {k: (two.counts.get(k), reference.get(k)) for k in keys}
        differ = {k: v for k, v in differ.items() if v[0] != v[1]}
        if not two.finished:
            correctness = "did not finish"
        elif differ:
            correctness = f"differs from one worker (2 workers, 1 worker): {differ}"
        else:
            correctness = "same rows as one worker"
        self.results["scaling_correctness"] = correctness
        self.details["scaling"] = {**two.details(), "one_worker_events_per_s": one}
        ratio = _ratio(two.events_per_s if two.finished else None, one)
        self.results["scaling_2_workers"] = ratio
        _say(
            f"  scaling: 2 workers {two.events_per_s:,.0f} events/s vs 1 worker "
            f"{one or 0:,.0f}: x{ratio} ({correctness})"
        )

    def fig_member_api(self, bench: Bench) -> None:
        from bench.member_api import run as member_api

        quick = self.args.quick
        result = member_api(members=300 if quick else 2000, seconds=10.0 if quick else 30.0)
        self.details["member_api"] = result
        idle, busy = result["idle"], result["ingesting"]
        self.results["member_api_p99_ms_idle"] = idle["p99_ms"]
        self.results["member_api_p99_ms_ingesting"] = busy["p99_ms"]
        _say(
            f"  member API at {result['rate']:.0f} requests/s: idle p50 {idle['p50_ms']} ms, "
            f"p99 {idle['p99_ms']} ms; ingesting p50 {busy['p50_ms']} ms, p99 {busy['p99_ms']} ms"
        )

    # --- the run ---------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        started = time.time()
        info = machine()
        _say(
            f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
            f"load {info['load_average_at_start']}; figures: {', '.join(self.selected)}"
        )
        root = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
        timings: dict[str, Any] = {}
        failures: dict[str, str] = {}
        try:
            with Bench(root) as bench:
                for name in self.selected:
                    figure: Callable[[Bench], None] = getattr(self, f"fig_{name}")
                    load = round(os.getloadavg()[0], 2)
                    _say(f"\n[{name}] load {load:.2f}")
                    t = time.time()
                    try:
                        figure(bench)
                    except (BenchError, OSError) as exc:
                        failures[name] = str(exc)[:2000]
                        _say(f"  {name} FAILED: {exc}")
                    timings[name] = {
                        "seconds": round(time.time() - t, 1),
                        "load_average_1m_at_start": load,
                        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                    }
        finally:
            if self.args.keep:
                _say(f"\nworker logs and data kept in {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return {
            **self.results,
            "machine": info,
            "run": {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "quick": self.args.quick,
                "figures": self.selected,
                "seconds": round(time.time() - started, 1),
                "per_figure": timings,
                "failures": failures,
                "conditions": CONDITIONS,
            },
            "details": self.details,
        }


CONDITIONS = (
    "One embedded Tansu broker (memory storage, loopback) shared by every figure; "
    "4 partitions per input topic; each Pulse worker a `pulse worker` subprocess with "
    "default settings, its own fresh chDB data dir and consumer group. Throughput: a "
    "backlog published first, rate = events / (first message -> last event stored and "
    "committed), start-up excluded. Peers (raw, faust) run as subprocesses on the same "
    "topics. The machine is shared: see load averages."
)


def _figures(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in FIGURES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown figure(s) {unknown}; choose from {FIGURES}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (a few minutes)")
    parser.add_argument(
        "--only", type=_figures, default=list(FIGURES), help=f"figures: {','.join(FIGURES)}"
    )
    parser.add_argument("--skip", type=_figures, default=[], help="figures to leave out")
    parser.add_argument("--out", type=Path, help="results file (default bench/results.json)")
    parser.add_argument(
        "--freshness-rate", type=float, help="events/s for freshness (default: half of Pulse's)"
    )
    parser.add_argument(
        "--state-members",
        type=int,
        help="simulated members for state and restore (default 130,000: about 100,000 with "
        "events on their one day)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="alternating runs of Faust and Pulse on the main file; figures are medians "
        "(default 3, 1 with --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep worker logs and data dirs")
    args = parser.parse_args()
    out = args.out or HERE / ("results-quick.json" if args.quick else "results.json")
    results = Run(args).execute()
    out.write_text(json.dumps(results, indent=2) + "\n")
    _say(f"\nwrote {out}")
    for key, value in results.items():
        if not isinstance(value, dict):
            _say(f"  {key:<30} {value}")


if __name__ == "__main__":
    main()
