"""Sealed state records: compressed, still secret, and older uncompressed seals still open."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.registry import EVENT_MODELS
from scoring.engine import ScoringEngine
from sinks.sealing import COMPRESS_FROM, LZ4_MAGIC, ZSTD_FROM, ZSTD_MAGIC, Sealer
from streams.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.unit

KEY = b"s" * 32


def _member_records(n: int, days: int = 30) -> list[bytes]:
    engine = ScoringEngine()
    raw = simulate(SimulationConfig(members=n, days=days, seed=3))
    events = [EVENT_MODELS[str(e["event_type"])].model_validate(e) for e in raw]
    for event in sorted(events, key=lambda e: e.occurred_at):
        engine.process(event)
    return [json.dumps(s.to_dict(), separators=(",", ":")).encode() for s in engine.states.values()]


def test_a_member_record_seals_at_under_half_its_uncompressed_seal_and_opens_equal() -> None:
    sealer = Sealer(KEY)
    records = _member_records(40)
    sealed = [sealer.seal(r) for r in records]
    assert [sealer.open(s) for s in sealed] == records
    uncompressed = sum(len(base64.b64encode(bytes(12 + len(r) + 16))) for r in records)
    assert sum(map(len, sealed)) < uncompressed / 2, (uncompressed, sum(map(len, sealed)))
    for record, blob in zip(records, sealed, strict=True):  # no member id in clear
        member_id = json.loads(record)["member_id"].encode()
        assert member_id not in base64.b64decode(blob) and member_id.decode() not in blob


def test_a_record_sealed_before_compression_still_opens() -> None:
    record = _member_records(1)[0]
    assert len(record) >= COMPRESS_FROM
    nonce = os.urandom(12)  # the format of every seal before compression: nonce + AES-GCM
    old = base64.b64encode(nonce + AESGCM(KEY).encrypt(nonce, record, None)).decode()
    assert Sealer(KEY).open(old) == record


def test_a_short_blob_is_not_compressed_and_a_wrong_key_fails() -> None:
    sealed = Sealer(KEY).seal(b"m-1")
    raw = base64.b64decode(sealed)
    assert AESGCM(KEY).decrypt(raw[:12], raw[12:], None) == b"m-1"
    with pytest.raises(InvalidTag):
        Sealer(b"t" * 32).open(Sealer(KEY).seal(b"x" * 1000))


def test_short_records_are_lz4_frames_and_long_ones_zstd_frames() -> None:
    """Issue 9 (restore): LZ4 below ZSTD_FROM bytes (a zstd frame costs ~10 us of
    context to open, whatever its size), zstd from there on (smaller sealed records)."""
    records = _member_records(40) + _member_records(40, days=1)
    assert any(len(r) < ZSTD_FROM for r in records) and any(len(r) >= ZSTD_FROM for r in records)
    sealer = Sealer(KEY)
    for record in records:
        raw = base64.b64decode(sealer.seal(record))
        inner = AESGCM(KEY).decrypt(raw[:12], raw[12:], None)
        assert inner[:4] == (ZSTD_MAGIC if len(record) >= ZSTD_FROM else LZ4_MAGIC)
        assert sealer.open(sealer.seal(record)) == record
