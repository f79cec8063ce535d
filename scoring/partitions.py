"""One scoring engine per partition, in process: how the pipeline splits members and models.

The pipeline runs one task per Kafka partition, each with its own members, clock and
model bank, so each churn or conversion model learns only from the labels of its
partition's members (about ``1 / P`` of the community). :class:`PartitionedEngines`
reproduces that split in process, for evaluations: a member goes to the partition the
producer's ``murmur2`` partitioner gives its key (the Java client's and Faust's
choice, :func:`partition_of`), and each partition has its own
:class:`~scoring.engine.ScoringEngine`.

>>> murmur2(b"foobar") - 2**32, murmur2(b"abc")  # the Java client's signed values
(-790332482, 479470107)
>>> engines = PartitionedEngines(4)
>>> sorted({engines.partition("m-%d" % i) for i in range(100)})
[0, 1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from schemas.envelope import EventBase
from scoring.config import ScoringConfig
from scoring.engine import DEFAULT_CONFIG, ScoringEngine
from scoring.errors import UnknownMember
from scoring.records import Record, ScoreRecord

__all__ = ["murmur2", "partition_of", "PartitionedEngines"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (seed ``0x9747b28c``), as an unsigned 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length % 4
    if extra == 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_of(member_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key ``member_id``."""
    return (murmur2(member_id.encode()) & 0x7FFFFFFF) % partitions


class PartitionedEngines:
    """``partitions`` scoring engines, members split by :func:`partition_of`."""

    def __init__(self, partitions: int, config: ScoringConfig = DEFAULT_CONFIG) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.engines = [ScoringEngine(config) for _ in range(partitions)]
        self._of: dict[str, int] = {}

    def partition(self, member_id: str) -> int:
        """The partition (and engine index) of a member."""
        p = self._of.get(member_id)
        if p is None:
            p = self._of[member_id] = partition_of(member_id, len(self.engines))
        return p

    def process(self, event: EventBase) -> list[Record]:
        """Apply an event in its member's partition (see :meth:`ScoringEngine.process`)."""
        p = self.partition(event.member_id)
        return self.engines[p].process(event, p)

    def advance(self, watermark: datetime) -> list[Record]:
        """Tick every partition's clock to ``watermark``."""
        out: list[Record] = []
        for p, engine in enumerate(self.engines):
            out.extend(engine.advance(p, watermark))
        return out

    def daily_scores(self) -> list[ScoreRecord]:
        """Every partition's daily batch (see :meth:`ScoringEngine.daily_scores`)."""
        out: list[ScoreRecord] = []
        for p, engine in enumerate(self.engines):
            out.extend(engine.daily_scores(p))
        return out

    def members(self) -> Iterator[str]:
        """Every member known to some partition."""
        for engine in self.engines:
            yield from engine.states

    def __contains__(self, member_id: object) -> bool:
        if not isinstance(member_id, str):
            return False
        return member_id in self.engines[self.partition(member_id)].states

    def opted_out(self, member_id: str) -> bool:
        """Whether the member withdrew analytics consent (see :meth:`ScoringEngine.opted_out`)."""
        return self.engines[self.partition(member_id)].opted_out(member_id)

    def score_member(self, member_id: str, at: datetime) -> ScoreRecord:
        """The member's score at ``at`` by its partition's current models."""
        engine = self.engines[self.partition(member_id)]
        if member_id not in engine.states:
            raise UnknownMember(member_id)
        return engine.score_member(member_id, at)
