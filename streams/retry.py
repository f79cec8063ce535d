"""Retrying a step that needs a component which may be away (ClickHouse, the broker)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["retrying"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retrying(
    failing: dict[str, float], what: str, call: Callable[..., Awaitable[T]], *args: Any
) -> T:
    """``await call(*args)``, retried with back-off (0.2 s doubling, at most 10 s) while
    it fails: a component that is away holds the task instead of crashing the worker.
    ``failing`` names it while it fails (for /healthz)."""
    attempt = 0
    while True:
        try:
            result = await call(*args)
            failing.pop(what, None)
            return result
        except Exception as exc:
            attempt += 1
            failing.setdefault(what, time.time())
            delay = min(10.0, 0.2 * 2.0 ** min(attempt, 6))
            log.warning(
                "%s failed (%s: %s); retrying in %.1fs",
                what,
                type(exc).__name__,
                str(exc).splitlines()[0][:160] if str(exc) else "",
                delay,
            )
            await asyncio.sleep(delay)
