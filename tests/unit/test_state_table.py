"""Partition-task state records and the commit lineage: what a restore may trust."""

from __future__ import annotations

import pytest

from streams.commits import CommitRecord, Lineage
from streams.offsets import AppliedOffsets
from streams.state_table import StateRecord

pytestmark = pytest.mark.unit


def test_a_record_round_trips_through_its_changelog_bytes() -> None:
    record = StateRecord("3f2a9c", partition=3, gen=11, seq=7, sealed="AbC=", previous=(11, 6, "x"))
    assert StateRecord.decode(b"3f2a9c", record.encode()) == record


def test_an_erased_member_keeps_its_place_and_holds_nothing() -> None:
    tombstone = StateRecord("3f2a9c", partition=0, gen=1, seq=7, sealed="")
    back = StateRecord.decode(b"3f2a9c", tombstone.encode())
    assert back.seq == 7 and back.sealed == ""


def test_a_record_of_a_checkpoint_that_never_committed_falls_back_to_its_previous() -> None:
    lineage = Lineage.start(gen=5, seq=0).committing(5, 1).committing(5, 2)
    orphan = StateRecord("m", 1, gen=5, seq=3, sealed="s3", previous=(5, 2, "s2"))
    assert orphan.as_of(lineage) == StateRecord("m", 1, 5, 2, "s2")
    assert orphan.as_of(lineage.committing(5, 3)) is orphan


def test_a_crashed_generations_last_checkpoint_stays_uncommitted_after_a_new_commit() -> None:
    # generation 5 committed 1..2 and wrote 3 before dying; generation 8 restored 2 and
    # committed its own 3 and 4: generation 5's 3 is an orphan, even below the new head
    lineage = Lineage.start(5, 0).committing(5, 1).committing(5, 2)
    lineage = lineage.committing(8, 3).committing(8, 4)
    assert lineage.committed(8, 3) and lineage.committed(8, 4) and lineage.committed(5, 2)
    assert not lineage.committed(5, 3) and not lineage.committed(9, 4)
    orphan = StateRecord("m", 0, gen=5, seq=3, sealed="crashed", previous=(5, 1, "s1"))
    assert orphan.as_of(lineage) == StateRecord("m", 0, 5, 1, "s1")


def test_orphan_condition_names_the_committed_ranges() -> None:
    lineage = Lineage.start(5, 0).committing(5, 1).committing(5, 2).committing(8, 3)
    assert lineage.orphan_condition() == (
        "seq > 0 AND NOT ((gen = 5 AND seq BETWEEN 1 AND 2) OR (gen = 8 AND seq BETWEEN 3 AND 3))"
    )
    assert Lineage.start(1, 0).orphan_condition() == "seq > 0"


def test_the_lineage_is_bounded_and_its_floor_keeps_old_history_committed() -> None:
    lineage = Lineage.start(0, 0)
    for gen in range(1, 200):
        lineage = lineage.committing(gen, gen)
    assert len(lineage.ranges) == 64
    assert lineage.committed(3, 3)  # below the floor: history
    assert not lineage.committed(3, 150)


def test_a_commit_record_round_trips() -> None:
    record = CommitRecord(
        task=2,
        gen=9,
        seq=4,
        lineage=Lineage.start(9, 0).committing(9, 4),
        broker="pulse-abc",
        inputs={"pulse.interactions": AppliedOffsets(10, frozenset({12}))},
        outputs={"pulse.scores:2": 77},
    )
    assert CommitRecord.decode(record.encode()) == record
