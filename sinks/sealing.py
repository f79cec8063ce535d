"""Sealed blobs: member state checkpoints are encrypted before they reach ClickHouse.

A state holds the member id (needed to resume scoring), so it is sealed with
AES-256-GCM under a key derived from the pseudonym key; ClickHouse stores
only ciphertext.

>>> sealer = Sealer.from_key(b"k" * 32)
>>> sealed = sealer.seal(b'{"member_id": "m-1"}')
>>> b"m-1" in sealed.encode(), sealer.open(sealed)
(False, b'{"member_id": "m-1"}')
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Sealer"]


class Sealer:
    """Encrypts and authenticates small blobs (AES-256-GCM, random 96-bit nonce)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a sealing key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_key(cls, secret: bytes) -> Sealer:
        """Derive the sealing key from the pseudonym secret (a separate, labelled key)."""
        return cls(hmac.new(secret, b"pulse/state-sealing/v1", hashlib.sha256).digest())

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, None)).decode()

    def open(self, sealed: str) -> bytes:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], None)

    def __repr__(self) -> str:
        return "Sealer(<key hidden>)"
