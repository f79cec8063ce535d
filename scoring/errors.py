"""Errors raised by the scoring package, all under :class:`schemas.errors.PulseError`."""

from __future__ import annotations

from schemas.errors import PulseError

__all__ = ["ScoringError", "ConfigError", "CheckpointError", "UnknownMember"]


class ScoringError(PulseError):
    """Root of the scoring package's errors."""


class ConfigError(ScoringError, ValueError):
    """A :class:`~scoring.config.ScoringConfig` field is out of range or inconsistent."""


class CheckpointError(ScoringError):
    """A model checkpoint cannot be restored (not ours, corrupt, or another format version)."""


class UnknownMember(ScoringError, KeyError):
    """A member was asked for that this engine holds no state for."""
