"""The member score API: one member's latest scores, and call lists for retention teams.

``GET /v1/members/{member_id}`` takes the member id the caller knows; the worker
computes its pseudonym (the caller never needs the key). The score comes from the
worker's own state when it owns the member's partition (``local_member``), else
from ClickHouse ``member_scores`` (the row with the highest version). Suppressed
members (erased, analytics opted out) are answered 404 like unknown ones.

``GET /v1/members?churn_risk=high&limit=N`` lists members by churn probability,
then annual premium, from ClickHouse; they are named by pseudonym, because
ClickHouse never holds member ids (a CRM holding the key maps them back).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from streams.web.deps import WebDeps
from streams.web.models import MemberList, MemberListItem, MemberScore, Problem

__all__ = ["members_router", "latest_score_sql", "call_list_sql", "scores_of"]

_COLUMNS = (
    "engagement_score, engagement_tier, churn_probability, churn_risk, "
    "conversion_probability, lifecycle_stage, top_drivers, model_version, scored_at, "
    "last_event_at, community_id, annual_premium, active_policies"
)
MAX_LIST = 1000


def latest_score_sql(database: str) -> str:
    """A member's latest ``member_scores`` row by pseudonym (the table's sort key)."""
    return (
        f"SELECT {_COLUMNS} FROM {database}.member_scores "
        "WHERE member_id = {pseudonym:String} ORDER BY version DESC LIMIT 1"
    )


def call_list_sql(database: str, by_risk: bool) -> str:
    """Latest scores of every member (``FINAL``), highest churn probability and premium first."""
    where = "WHERE churn_risk = {risk:String} " if by_risk else ""
    return (
        f"SELECT member_id AS pseudonym, {_COLUMNS} FROM {database}.member_scores FINAL "
        f"{where}ORDER BY churn_probability DESC, annual_premium DESC, pseudonym "
        "LIMIT {limit:UInt32}"
    )


def _aware(moment: Any) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def scores_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The score fields of a ``member_scores`` row or of ``ScoreRecord.to_row()``.

    >>> row = {"engagement_score": 61.5, "engagement_tier": "engaged",
    ...        "churn_probability": 0.2, "churn_risk": "low", "conversion_probability": None,
    ...        "lifecycle_stage": "loyal", "top_drivers": [("recency_days", -0.4)],
    ...        "model_version": "churn-logreg-v1", "scored_at": datetime(2026, 3, 1),
    ...        "last_event_at": datetime(2026, 3, 1), "community_id": "",
    ...        "annual_premium": 3200.0, "active_policies": 1}
    >>> scores = scores_of(row)
    >>> scores["as_of"].isoformat(), scores["top_drivers"], scores["community_id"]
    ('2026-03-01T00:00:00+00:00', [{'feature': 'recency_days', 'contribution': -0.4}], None)
    """
    drivers = []
    for driver in row["top_drivers"]:
        if isinstance(driver, Mapping):
            drivers.append({"feature": driver["feature"], "contribution": driver["contribution"]})
        else:
            feature, contribution = driver
            drivers.append({"feature": feature, "contribution": round(float(contribution), 6)})
    probability = row.get("conversion_probability")
    return {  # ClickHouse keeps scores as Float32: round away its noise digits
        "engagement_score": round(float(row["engagement_score"]), 4),
        "engagement_tier": row["engagement_tier"],
        "churn_probability": round(float(row["churn_probability"]), 6),
        "churn_risk": row["churn_risk"],
        "conversion_probability": None if probability is None else round(float(probability), 6),
        "lifecycle_stage": row["lifecycle_stage"],
        "top_drivers": drivers,
        "model_version": row["model_version"],
        "as_of": _aware(row["scored_at"]),
        "last_event_at": _aware(row["last_event_at"]),
        "community_id": row.get("community_id") or None,
        "annual_premium": float(row["annual_premium"]),
        "active_policies": int(row["active_policies"]),
    }


def _select(deps: WebDeps, sql: str, parameters: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    try:
        return deps.select(sql, parameters)
    except Exception as exc:  # ClickHouse away or overloaded: the caller may retry
        raise HTTPException(
            503, f"ClickHouse did not answer ({type(exc).__name__})", headers={"Retry-After": "1"}
        ) from exc


def _answer(
    member_id: str, pseudonym: str, source: Literal["worker", "clickhouse"], row: Mapping[str, Any]
) -> Response:
    """The ``MemberScore`` document, validated by its model and serialised once (returning
    the model itself would have FastAPI validate and serialise it a second time)."""
    score = MemberScore(member_id=member_id, pseudonym=pseudonym, source=source, **scores_of(row))
    return Response(score.model_dump_json(), media_type="application/json")


def members_router(deps: WebDeps, guard: Callable[[Request], Awaitable[None]]) -> APIRouter:
    router = APIRouter(tags=["members"], dependencies=[Depends(guard)])
    database = deps.settings.clickhouse_database
    latest_sql = latest_score_sql(database)
    denied: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem},
        403: {"model": Problem},
        503: {"model": Problem, "description": "ClickHouse did not answer"},
    }

    @router.get(
        "/v1/members/{member_id}",
        summary="A member's latest engagement, churn, conversion and lifecycle scores",
        response_model=MemberScore,
        responses={**denied, 404: {"model": Problem, "description": "unknown member"}},
    )
    async def member(
        member_id: str = Path(min_length=1, max_length=256, description="the member's id"),
    ) -> Response:
        # On the event loop, not in the thread pool: the worker's own state answers in a
        # fraction of a millisecond, and each hop to a pool thread and back costs the
        # web thread two more waits for the GIL, which the Faust thread holds while it
        # scores and checkpoints (the latency tail of issue 12). Only ClickHouse, which
        # blocks, goes to the pool.
        pseudonym = deps.pseudonym(member_id)
        if deps.suppressed(pseudonym):
            raise HTTPException(404, "no scores for this member")
        local = deps.local_member(member_id)
        if local is not None:
            return _answer(member_id, pseudonym, "worker", local)
        rows = await run_in_threadpool(_select, deps, latest_sql, {"pseudonym": pseudonym})
        if not rows:
            raise HTTPException(404, "no scores for this member")
        return _answer(member_id, pseudonym, "clickhouse", rows[0])

    @router.get(
        "/v1/members",
        summary="Members to call first: by churn probability, then annual premium",
        response_model=MemberList,
        responses=denied,
    )
    def call_list(
        churn_risk: Literal["low", "medium", "high"] | None = Query(
            None, description="only members in this churn risk band"
        ),
        limit: int = Query(50, ge=1, le=MAX_LIST),
    ) -> MemberList:
        sql = call_list_sql(database, churn_risk is not None)
        parameters: dict[str, Any] = {"limit": limit}
        if churn_risk is not None:
            parameters["risk"] = churn_risk
        rows = _select(deps, sql, parameters)
        members = [
            MemberListItem(pseudonym=row["pseudonym"], **scores_of(row))
            for row in rows
            if not deps.suppressed(row["pseudonym"])
        ]
        return MemberList(churn_risk=churn_risk, limit=limit, members=members)

    return router
