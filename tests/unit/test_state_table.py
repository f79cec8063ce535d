"""The state table's records: what goes to the changelog topic and comes back."""

from __future__ import annotations

import pytest

from streams.state_table import StateRecord, consistent

pytestmark = pytest.mark.unit


def test_a_record_round_trips_through_its_changelog_bytes() -> None:
    record = StateRecord("3f2a9c", partition=3, version=1_770_000_000_000_001, sealed="AbC=")
    assert StateRecord.decode(b"3f2a9c", record.encode()) == record


def test_an_erased_member_keeps_its_version_and_holds_nothing() -> None:
    tombstone = StateRecord("3f2a9c", partition=0, version=7, sealed="")
    back = StateRecord.decode(b"3f2a9c", tombstone.encode())
    assert back.version == 7 and back.sealed == ""


def test_a_record_newer_than_the_checkpoint_falls_back_to_its_previous() -> None:
    record = StateRecord("m", partition=1, version=11, sealed="s11", previous=(9, "s9"))
    assert record.as_of(11) is record
    assert record.as_of(10) == StateRecord("m", 1, 9, "s9")
    assert record.as_of(8) is None


MODELS = "~models"


def _r(key: str, version: int, previous: tuple[int, str] | None = None) -> StateRecord:
    return StateRecord(key, 0, version, f"{key}@{version}", previous)


def test_a_checkpoint_cut_short_in_the_changelog_is_not_restored() -> None:
    # ClickHouse holds checkpoint 9 whole; the crash came while checkpoint 10 was being
    # sent: member a's record got there, its models record did not
    stored = {MODELS: _r(MODELS, 9), "a": _r("a", 9), "b": _r("b", 5)}
    changelog = [_r(MODELS, 9), _r("a", 10, previous=(9, "a@9")), _r("b", 5)]
    merged, from_table = consistent(stored, iter(changelog), MODELS)
    assert {k: r.version for k, r in merged.items()} == {MODELS: 9, "a": 9, "b": 5}
    assert from_table == 0


def test_on_a_new_host_the_changelog_alone_gives_the_last_whole_checkpoint() -> None:
    changelog = [_r(MODELS, 10), _r("a", 11, previous=(10, "a@10")), _r("b", 7), _r("c", 11)]
    merged, from_table = consistent({}, iter(changelog), MODELS)
    # c first appeared in the unfinished checkpoint 11: its events are redelivered
    assert {k: r.sealed for k, r in merged.items()} == {
        MODELS: "~models@10",
        "a": "a@10",
        "b": "b@7",
    }
    assert from_table == 2


def test_a_whole_checkpoint_newer_in_the_changelog_wins_over_clickhouse() -> None:
    # the changelog is written before ClickHouse: a crash between leaves it ahead
    stored = {MODELS: _r(MODELS, 9), "a": _r("a", 9), "b": _r("b", 9)}
    changelog = [_r(MODELS, 10), _r("a", 10), _r("b", 9)]
    merged, from_table = consistent(stored, iter(changelog), MODELS)
    assert {k: r.version for k, r in merged.items()} == {MODELS: 10, "a": 10, "b": 9}
    assert from_table == 1


def test_without_a_models_record_the_changelog_adds_nothing() -> None:
    stored = {"a": _r("a", 3)}
    merged, from_table = consistent(stored, iter([_r("a", 4), _r("z", 4)]), MODELS)
    assert merged == stored and from_table == 0
