"""Pseudonyms: what stands for a member in ClickHouse, metrics and logs.

A member id never reaches ClickHouse in clear. It is replaced by a keyed hash
(HMAC-SHA256, first 128 bits, hex). The same key gives the same pseudonym, so
BI joins work, and a CRM holding the key can compute the pseudonym of its own
member ids to act on a score; without the key the id cannot be recovered.

>>> p = Pseudonymizer(b"k" * 32)
>>> p("m-000123") == p("m-000123"), len(p("m-000123"))
(True, 32)
>>> p("m-000123") != Pseudonymizer(b"x" * 32)("m-000123")
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache
from pathlib import Path

__all__ = ["Pseudonymizer", "load_or_create_key"]


class Pseudonymizer:
    """Maps identifiers to stable keyed pseudonyms."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonym key must be at least 16 bytes")
        self._key = key
        self._cached = lru_cache(maxsize=200_000)(self._compute)

    def _compute(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:32]

    def __call__(self, value: str) -> str:
        return self._cached(value)

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymizer(<key hidden>)"


def load_or_create_key(configured: str, data_dir: Path) -> bytes:
    """The configured key, or one generated once and kept (mode 0600) in ``data_dir``."""
    if configured:
        return configured.encode()
    path = data_dir / "pseudonym.key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    path.write_bytes(key)
    path.chmod(0o600)
    return key
