"""Python's cyclic garbage collector, paused while a restore builds member states.

A restore builds tens of containers per member (the state, its lists, dicts and
pending snapshots) and keeps every one of them. The collector, counting allocations,
runs all the while, and each of its full collections walks every object built so
far: at 100,000 members that doubled the time to build the states (60 us per member
against 24 us paused, ``make bench``). None of these objects is garbage, so pausing
the collector for the few seconds of a restore loses nothing; it runs again after.

>>> import gc
>>> with gc_paused():
...     with gc_paused():  # nested, or in another thread: resumed by the last
...         inner = gc.isenabled()
...     middle = gc.isenabled()
>>> inner, middle, gc.isenabled()
(False, False, True)
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]

_lock = threading.Lock()
_pauses = 0
_resume = False  # whether the collector was on when the first pause began


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (reentrant and thread-safe: the collector
    runs again when the last pause ends, if it ran before the first began)."""
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
