"""A purchase log (CSV) as purchase events: the mapping, and clear errors for bad files."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.errors import PulseError
from schemas.registry import EVENT_MODELS
from streams.transactions import (
    BadRow,
    ColumnSpec,
    EmptyLog,
    MissingColumn,
    TransactionLogError,
    parse_transactions,
    purchase_events,
    read_transactions,
)

pytestmark = pytest.mark.unit

SPEC = ColumnSpec(customer="customer", date="day", amount="paid")


def _parse(text: str, spec: ColumnSpec = SPEC):
    return parse_transactions(io.StringIO(text), spec, "log.csv")


def test_first_purchase_is_bought_later_ones_renew_the_same_policy() -> None:
    log = _parse(
        "customer,day,paid\n"
        "c1,1997-01-01,11.77\n"
        "c2,1997-01-02,5\n"
        "c1,1997-02-10,20.50\n"
        "c1,1997-01-01,3.00\n"  # same day as the first: one second later, file order
    )
    events = purchase_events(log.transactions, currency="USD", product_line="property")
    c1 = [e for e in events if e["member_id"] == "c1"]
    assert [e["event_type"] for e in c1] == ["policy_purchased", "policy_renewed", "policy_renewed"]
    assert [e["occurred_at"] for e in c1] == [
        "1997-01-01T12:00:00+00:00",
        "1997-01-01T12:00:01+00:00",
        "1997-02-10T12:00:00+00:00",
    ]
    assert [e["properties"]["premium"] for e in c1] == [11.77, 3.0, 20.5]
    assert len({e["properties"]["policy_id"] for e in c1}) == 1
    assert [e["occurred_at"] for e in events] == sorted(e["occurred_at"] for e in events)
    for event in events:  # every event is valid for the schemas, as the pipeline checks
        typed = EVENT_MODELS[event["event_type"]].model_validate(event)
        assert typed.properties.currency == "USD"  # type: ignore[attr-defined]
    # the same file gives the same event ids: a replay is idempotent
    again = purchase_events(_parse("customer,day,paid\nc1,1997-01-01,11.77\n").transactions)
    assert again[0]["event_id"] == events[0]["event_id"]


def test_dates_formats_delimiters_and_ids() -> None:
    spec = ColumnSpec(customer="id", date="when", amount="eur", date_format="%d/%m/%Y %H:%M")
    log = _parse("id;when;eur\nJane Doe;31/12/2020 18:30;9,5\n".replace("9,5", "9.5"), spec)
    (t,) = log.transactions
    assert t.at == datetime(2020, 12, 31, 18, 30, tzinfo=UTC)  # a time is kept, UTC
    assert t.member_id.startswith("c-") and "Jane" not in t.member_id  # not an identifier
    iso = _parse("customer\tday\tpaid\nk-1\t19970101\t1\nk-1\t1997-01-03T08:00:00+08:00\t2\n")
    assert [x.at.isoformat() for x in iso.transactions] == [
        "1997-01-01T12:00:00+00:00",
        "1997-01-03T00:00:00+00:00",
    ]


def test_zero_and_negative_amounts_are_skipped_and_counted() -> None:
    log = _parse("customer,day,paid\na,1997-01-01,0\na,1997-01-02,-4\na,1997-01-03,2\n")
    assert log.skipped_amounts == 2 and len(log.transactions) == 1


def test_a_real_log_reads_whole(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    spec = ColumnSpec(amount="dollar_value")
    log = read_transactions(root / "data" / "cdnow" / "CDNOW_sample.csv", spec)
    assert len(log.transactions) + log.skipped_amounts == 6919
    assert log.skipped_amounts == 8 and log.customers == 2349


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", EmptyLog, "empty file"),
        ("customer,day,paid\n", EmptyLog, "no purchase rows"),
        ("customer,day,paid\na,1997-01-01,0\n", EmptyLog, "no purchase rows"),
        ("customer,date,paid\na,1997-01-01,1\n", MissingColumn, "no date column 'day'"),
        ("customer,day,paid\na,1997-13-01,1\n", BadRow, "row 2: 'day' value '1997-13-01'"),
        ("customer,day,paid\na,1997-01-01,1\na,yesterday,1\n", BadRow, "row 3"),
        ("customer,day,paid\nsecret-id,1997-01-01,ten\n", BadRow, "'paid' value 'ten'"),
        ("customer,day,paid\nsecret-id,1997-01-01,nan\n", BadRow, "is not a number"),
        ("customer,day,paid\nsecret-id,1997-01-01\n", BadRow, "2 columns, expected 3"),
        ("customer,day,paid\n ,1997-01-01,1\n", BadRow, "empty 'customer'"),
    ],
)
def test_bad_files_get_clear_typed_errors(
    text: str, error: type[TransactionLogError], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")) as info:
        _parse(text)
    assert isinstance(info.value, PulseError)
    assert "secret-id" not in str(info.value)  # a customer id is personal data
    assert "log.csv" in str(info.value)


def test_missing_column_names_the_header_and_the_option() -> None:
    with pytest.raises(MissingColumn) as info:
        _parse("id,day,paid\na,1997-01-01,1\n")
    assert "['id', 'day', 'paid']" in str(info.value) and "--customer-column" in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TransactionLogError, match="no such file"):
        read_transactions(tmp_path / "missing.csv", SPEC)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"customer,day,paid\n\xff\xfe,1997-01-01,1\n")
    with pytest.raises(TransactionLogError, match="not UTF-8"):
        read_transactions(binary, SPEC)
    wrong_format = ColumnSpec(
        customer="customer", date="day", amount="paid", date_format="%d.%m.%Y"
    )
    with pytest.raises(BadRow, match=r"not a date in %d\.%m\.%Y"):
        _parse("customer,day,paid\na,1997-01-01,1\n", wrong_format)


def test_pulse_evaluate_transactions_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI end to end on a small real log: the report and a typed error."""
    from streams.cli import main

    root = Path(__file__).resolve().parents[3]
    sample = root / "data" / "cdnow" / "CDNOW_sample.csv"
    small = tmp_path / "small.csv"
    lines = sample.read_text().splitlines()
    small.write_text("\n".join(lines[:1] + [x for x in lines[1:] if x.split(",")[1] < "0700"]))
    code = main(
        [
            "evaluate",
            "--no-pipeline",
            "--transactions",
            str(small),
            "--amount-column",
            "dollar_value",
            "--cutoff",
            "1997-09-30",
            "--holdout-days",
            "273",
            "--churn-window-days",
            "90",
            "--partitions",
            "2",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out[out.index("{") :])
    assert report["partitions"] == 2 and report["members"] > 500
    assert report["holdout_days"] == 273.0 and report["churn_window_days"] == 90.0
    assert report["bgnbd"]["auc"] > 0.6 and report["recency"]["auc"] > 0.6
    code = main(["evaluate", "--no-pipeline", "--transactions", str(small)])
    assert code == 1
    assert "no amount column 'amount'" in capsys.readouterr().err
