"""What the web app needs from the worker, passed in explicitly (no reaching into a runtime).

The web app never imports the streaming core: the worker hands it a :class:`WebDeps`
of plain values and callables (see :func:`streams.web.wiring.web_deps` for the
current runtime). Every callable may be called from the web server's own thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from streams.config import Settings

__all__ = ["Health", "WebDeps", "Select", "no_local_member", "never_suppressed"]

#: A parametrised read-only SELECT on Pulse's ClickHouse database: ``select(sql,
#: parameters)`` with ``{name:Type}`` placeholders, returning rows as dicts.
Select = Callable[[str, Mapping[str, Any]], Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class Health:
    """Whether the worker does its job; ``reasons`` say why not (never a secret)."""

    reasons: tuple[str, ...] = ()
    checks: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reasons


def no_local_member(member_id: str) -> dict[str, Any] | None:
    """The default ``local_member``: the worker serves nothing from its own state."""
    return None


def never_suppressed(pseudonym: str) -> bool:
    """The default ``suppressed``: no member is suppressed beyond what ClickHouse lacks."""
    return False


@dataclass(frozen=True)
class WebDeps:
    """Everything the web app uses, provided by the worker.

    * ``settings``: the worker's settings (token, limits, CORS, topic prefix...).
    * ``registry``: the Prometheus registry ``/metrics`` exposes; the web app
      registers its own families there (:class:`streams.metrics.HttpMetrics`).
    * ``status()``: the worker's status document for ``/status``.
    * ``health()``: a :class:`Health` for ``/healthz``.
    * ``query(sql, clickhouse_format) -> bytes``: user SQL for ``POST /query``, on a
      read-only client whose settings carry the ``PULSE_QUERY_MAX_*`` limits.
    * ``select``: Pulse's own parametrised reads (member API, live page).
    * ``pseudonym(member_id) -> str``: the worker's keyed pseudonym.
    * ``local_member(member_id)``: the member's latest score from the worker's own
      state when it owns the member's partition (``ScoreRecord.to_row()``), else None.
    * ``suppressed(pseudonym)``: True for a member that must never be served
      (erased, analytics opted out), by pseudonym: erasure records keep only that.
      ``local_member`` and ``suppressed`` run on the web server's event loop: they must
      be quick and never block (no I/O).
    * ``producer_config``: confluent-kafka settings of the collector's producer
      (``bootstrap.servers`` and any security settings).
    """

    settings: Settings
    registry: CollectorRegistry
    status: Callable[[], dict[str, Any]]
    health: Callable[[], Health]
    query: Callable[[str, str], bytes]
    select: Select
    pseudonym: Callable[[str], str]
    producer_config: Mapping[str, Any]
    local_member: Callable[[str], dict[str, Any] | None] = no_local_member
    suppressed: Callable[[str], bool] = never_suppressed
