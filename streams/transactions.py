"""A real purchase log (CSV) as Pulse purchase events, for ``pulse evaluate --transactions``.

Each row is one purchase: a customer, a date (or date and time) and an amount. A
customer's first purchase becomes ``policy_purchased`` and every later one
``policy_renewed`` of the same policy (the amount is the premium), so a purchase log
replays through the same schemas, pipeline and models as an insurer's events.

* Dates: ISO 8601 by default (``1997-01-01``, ``19970101``, ``1997-01-01T10:30:00+08:00``)
  or any ``strptime`` format (``--date-format %d/%m/%Y``). Times without an offset are
  UTC. A date without a time is placed at 12:00 UTC; several purchases of one customer
  on one day one second apart, in file order.
* Amounts: a decimal number. Rows with an amount of zero or less (free items,
  returns) are skipped and counted, never guessed into a premium.
* Customer ids that are valid Pulse identifiers (``[A-Za-z0-9_.:@-]``, at most 128
  characters) are kept; others become ``c-`` and 24 hex digits of their SHA-256.
* Event ids are UUIDv5 of the member and the row number: the same file gives the same
  events, so a replay of it is idempotent.

Errors are :class:`TransactionLogError` subclasses naming the file, the row and the
column; they never repeat a customer id (personal data).

>>> import io
>>> log = parse_transactions(io.StringIO("id,day,paid\\nA1,1997-01-01,11.77\\nA1,19970301,0\\n"),
...     ColumnSpec(customer="id", date="day", amount="paid"))
>>> [(t.member_id, t.at.isoformat(), t.amount) for t in log.transactions], log.skipped_amounts
([('A1', '1997-01-01T12:00:00+00:00', 11.77)], 1)
>>> [e["event_type"] for e in purchase_events(log.transactions)]
['policy_purchased']
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from schemas.errors import PulseError

__all__ = [
    "TransactionLogError",
    "MissingColumn",
    "BadRow",
    "EmptyLog",
    "ColumnSpec",
    "Transaction",
    "TransactionLog",
    "parse_transactions",
    "read_transactions",
    "purchase_events",
    "member_id_of",
]

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
_NAMESPACE = uuid.UUID("5b1f0e52-3c1e-4d55-9a43-2f6f1c0de001")
_NOON = timedelta(hours=12)


class TransactionLogError(PulseError):
    """A purchase log Pulse cannot read."""


class MissingColumn(TransactionLogError):
    """A column named on the command line is not in the file's header."""


class BadRow(TransactionLogError):
    """A row whose date or amount cannot be read (row number and column in the message)."""


class EmptyLog(TransactionLogError):
    """The file has a header but no purchase rows (or no header at all)."""


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """Which columns hold what, how dates are written and what separates columns."""

    customer: str = "customer_id"
    date: str = "date"
    amount: str = "amount"
    date_format: str | None = None
    """A ``strptime`` format; None: ISO 8601 (``YYYY-MM-DD``, ``YYYYMMDD``, date-times)."""
    delimiter: str | None = None
    """None: guessed from the header (comma, semicolon, tab or pipe)."""


@dataclass(frozen=True, slots=True)
class Transaction:
    """One purchase: who (a valid member id), when (aware UTC), how much, which row."""

    member_id: str
    at: datetime
    amount: float
    row: int


@dataclass(slots=True)
class TransactionLog:
    """The purchases read from a file, oldest first, and what was skipped."""

    transactions: list[Transaction] = field(default_factory=list)
    skipped_amounts: int = 0
    """Rows with an amount of zero or less."""

    @property
    def customers(self) -> int:
        """Distinct customers."""
        return len({t.member_id for t in self.transactions})


def member_id_of(customer: str) -> str:
    """A valid member id for a customer id (kept when valid, else a SHA-256 digest).

    >>> member_id_of("00042"), member_id_of("Jane Doe")
    ('00042', 'c-01332c876518a793b7c1b8df')
    """
    if _IDENTIFIER.match(customer):
        return customer
    return "c-" + hashlib.sha256(customer.encode()).hexdigest()[:24]


def _parse_when(raw: str, date_format: str | None) -> datetime:
    value = raw.strip()
    if date_format is not None:
        parsed = datetime.strptime(value, date_format)
        has_time = any(code in date_format for code in ("%H", "%I", "%M", "%S", "%X", "%c"))
    else:
        has_time = len(value) > 8 and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
        parsed = datetime.fromisoformat(value) if has_time else _iso_date(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    return parsed if has_time else parsed + _NOON


def _iso_date(value: str) -> datetime:
    day = date.fromisoformat(value)
    return datetime(day.year, day.month, day.day)


def _amount(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _delimiter(header: str, spec: ColumnSpec) -> str:
    if spec.delimiter is not None:
        return spec.delimiter
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def parse_transactions(stream: IO[str], spec: ColumnSpec, name: str = "<input>") -> TransactionLog:
    """Read purchases from an open text stream with a header row (see the module docstring)."""
    header = stream.readline()
    if not header.strip():
        raise EmptyLog(f"{name}: empty file (a header row naming the columns is needed)")
    delimiter = _delimiter(header, spec)
    columns = next(csv.reader([header.lstrip("\ufeff")], delimiter=delimiter))
    columns = [c.strip() for c in columns]
    wanted = {"customer": spec.customer, "date": spec.date, "amount": spec.amount}
    index: dict[str, int] = {}
    for role, column in wanted.items():
        if column not in columns:
            raise MissingColumn(
                f"{name}: no {role} column {column!r}; the header has {columns} "
                f"(set it with --{role}-column)"
            )
        index[role] = columns.index(column)
    width = max(index.values()) + 1
    log = TransactionLog()
    rows: list[Transaction] = []
    for number, row in enumerate(csv.reader(stream, delimiter=delimiter), start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise BadRow(f"{name}, row {number}: {len(row)} columns, expected {len(columns)}")
        customer = row[index["customer"]].strip()
        if not customer:
            raise BadRow(f"{name}, row {number}: empty {spec.customer!r}")
        raw_date = row[index["date"]]
        try:
            at = _parse_when(raw_date, spec.date_format)
        except ValueError:
            expected = spec.date_format or "ISO 8601 (e.g. 1997-01-31 or 19970131)"
            raise BadRow(
                f"{name}, row {number}: {spec.date!r} value {raw_date.strip()[:40]!r} "
                f"is not a date in {expected} (set --date-format)"
            ) from None
        raw_amount = row[index["amount"]]
        try:
            amount = _amount(raw_amount)
        except ValueError:
            raise BadRow(
                f"{name}, row {number}: {spec.amount!r} value {raw_amount.strip()[:40]!r} "
                "is not a number"
            ) from None
        if amount <= 0.0:
            log.skipped_amounts += 1
            continue
        rows.append(Transaction(member_id_of(customer), at, amount, number))
    if not rows:
        raise EmptyLog(f"{name}: no purchase rows with an amount above zero")
    log.transactions = _spread_same_instant(rows)
    return log


def _spread_same_instant(rows: list[Transaction]) -> list[Transaction]:
    """Oldest first; a customer's purchases at one instant one second apart, in file order."""
    rows.sort(key=lambda t: (t.at, t.member_id, t.row))
    out: list[Transaction] = []
    last: dict[str, datetime] = {}
    for t in rows:
        previous = last.get(t.member_id)
        at = t.at
        if previous is not None and at <= previous:
            at = previous + timedelta(seconds=1)
        last[t.member_id] = at
        out.append(t if at == t.at else Transaction(t.member_id, at, t.amount, t.row))
    out.sort(key=lambda t: (t.at, t.member_id, t.row))
    return out


def read_transactions(path: Path, spec: ColumnSpec) -> TransactionLog:
    """:func:`parse_transactions` on a file (UTF-8, a BOM is allowed)."""
    if not path.is_file():
        raise TransactionLogError(f"no such file: {path}")
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            return parse_transactions(stream, spec, str(path))
    except UnicodeDecodeError as exc:
        raise TransactionLogError(f"{path}: not UTF-8 text ({exc.reason})") from None


def purchase_events(
    transactions: Iterable[Transaction],
    currency: str = "USD",
    product_line: str = "property",
    channel: str = "web",
    term_months: int = 12,
) -> list[dict[str, Any]]:
    """JSON-ready purchase events, in the order of ``transactions`` (oldest first).

    A member's first purchase is ``policy_purchased``, later ones ``policy_renewed``
    of the same policy. Validation is left to the schemas (``decode_event``).
    """
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for t in transactions:
        first = t.member_id not in seen
        seen.add(t.member_id)
        policy = "p-" + hashlib.sha256(t.member_id.encode()).hexdigest()[:16]
        out.append(
            {
                "event_id": str(uuid.uuid5(_NAMESPACE, f"{t.member_id}|{t.row}")),
                "event_type": "policy_purchased" if first else "policy_renewed",
                "occurred_at": t.at.isoformat(),
                "member_id": t.member_id,
                "channel": channel,
                "properties": {
                    "policy_id": policy,
                    "product_line": product_line,
                    "premium": round(t.amount, 2) or 0.01,
                    "currency": currency,
                    "term_months": term_months,
                },
            }
        )
    return out
