"""Erasure: delete a member's rows from every ClickHouse table that holds member data.

Called by the core once the ``erasure_requested`` event is applied and
checkpointed (the engine has forgotten the member, the state tombstone is
written), with the member's pseudonym: Pulse never needs the member id to
erase, and ClickHouse never held it. Each table is cleaned with a lightweight
``DELETE`` (synchronous: when the call returns, the rows are gone from every
query). Kept on purpose, because they hold nothing but the pseudonym:

* the ``erasure_requested`` event itself in ``events`` (the record that the
  request was received and honoured), and
* the ``task_state`` tombstone (an empty state whose sequence stops an older
  record from bringing the member back on a restore).

Kafka still holds the member's events for the topics' retention (see the
README, "Erasure and consent").

>>> list(MEMBER_TABLES)[-2:], MEMBER_TABLES["member_scores"]
(['task_state', 'events'], 'member_id IN {p:Array(String)}')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from sinks.errors import ErasureError

__all__ = ["erase_member", "erase_members", "retract_scores", "MEMBER_TABLES"]

_P = "{p:Array(String)}"  # the pseudonyms of a batch: one statement per table for all
_MEMBER_ALERTS = f"subject_type = 'member' AND subject_id IN {_P}"

#: Every table with member data -> the condition selecting one member's rows, in the
#: order they are deleted (webhook deliveries are found through the outbox and the
#: alerts, so they go first). ``{db}`` is the database, ``{p:Array(String)}`` the
#: pseudonyms.
MEMBER_TABLES: dict[str, str] = {
    "webhook_deliveries": (
        f"alert_id IN (SELECT alert_id FROM {{db}}.webhook_outbox WHERE {_MEMBER_ALERTS}) "
        f"OR alert_id IN (SELECT alert_id FROM {{db}}.alerts WHERE {_MEMBER_ALERTS})"
    ),
    "webhook_outbox": _MEMBER_ALERTS,
    "alerts": _MEMBER_ALERTS,
    "member_scores": f"member_id IN {_P}",
    "score_history": f"member_id IN {_P}",
    "lifecycle_transitions": f"member_id IN {_P}",
    "failed_events": f"key_pseudonym IN {_P}",
    "task_state": f"key IN {_P} AND state != ''",  # the tombstone stays
    "events": f"member_id IN {_P} AND event_type != 'erasure_requested'",
}

_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")


class _Client(Protocol):
    def query(self, query: str, parameters: dict[str, Any] | None = None) -> Any: ...
    def command(
        self,
        cmd: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Any: ...


def _check(name: str, database: str, pseudonym: str) -> None:
    if not database.isidentifier():
        raise ErasureError(f"not a database name: {database!r}")
    if not isinstance(pseudonym, str) or not _PSEUDONYM.match(pseudonym):
        raise ErasureError(f"{name} takes a member pseudonym (32 hex digits), not an id")


def _delete(
    client: _Client, database: str, table: str, where: str, parameters: dict[str, Any], doing: str
) -> int:
    """Count, then delete (synchronously) the rows of ``table`` matching ``where``."""
    try:
        count = int(
            client.query(
                f"SELECT count() FROM {database}.{table} WHERE {where}", parameters=parameters
            ).result_rows[0][0]
        )
        if count:
            client.command(
                f"DELETE FROM {database}.{table} WHERE {where}",
                parameters=parameters,
                settings={"mutations_sync": 2},
            )
    except Exception as exc:
        raise ErasureError(
            f"{doing} {table} failed ({type(exc).__name__}): "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from exc
    return count


def erase_member(client: _Client, database: str, pseudonym: str) -> dict[str, int]:
    """Delete the member's rows from every table of :data:`MEMBER_TABLES`.

    Returns the number of rows deleted per table. Idempotent: a second call deletes
    nothing. Raises :class:`~sinks.errors.ErasureError` for a value that is not a
    pseudonym (32 hex digits) or when ClickHouse refuses a statement (the caller
    retries: what was deleted stays deleted).
    """
    return erase_members(client, database, [pseudonym], name="erase_member")


def erase_members(
    client: _Client, database: str, pseudonyms: list[str], *, name: str = "erase_members"
) -> dict[str, int]:
    """:func:`erase_member` for a batch of members: one count and one ``DELETE`` per
    table for all of them (each ``DELETE`` is a mutation of the whole table: a batch
    costs about what one member does)."""
    for pseudonym in pseudonyms:
        _check(name, database, pseudonym)
    if not pseudonyms:
        return dict.fromkeys(MEMBER_TABLES, 0)
    return {
        table: _delete(
            client,
            database,
            table,
            condition.replace("{db}", database),
            {"p": list(pseudonyms)},
            "erasing from",
        )
        for table, condition in MEMBER_TABLES.items()
    }


def retract_scores(client: _Client, database: str, retractions: Mapping[str, int]) -> int:
    """Delete each member's ``member_scores`` rows scored at or before their time
    (``retractions``: pseudonym -> milliseconds since the epoch, event time): a member
    who withdrew analytics consent is no longer scored, so no latest score may rank them
    (``score_history`` keeps what was scored with consent; an erasure removes that too).
    Rows scored later, after consent was given again, stay. One count and one ``DELETE``
    for all of them (each ``DELETE`` is a mutation of the whole table). Returns the rows
    deleted; idempotent."""
    for pseudonym in retractions:
        _check("retract_scores", database, pseudonym)
    if not retractions:
        return 0
    # each row against its own member's time: the time at the member's place in the list
    where = (
        "member_id IN {p:Array(String)} AND scored_at <= "
        "fromUnixTimestamp64Milli({t:Array(Int64)}[indexOf({p:Array(String)}, member_id)])"
    )
    parameters = {"p": list(retractions), "t": [int(t) for t in retractions.values()]}
    return _delete(client, database, "member_scores", where, parameters, "retracting")
