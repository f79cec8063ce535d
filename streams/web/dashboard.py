"""The live community page at ``/`` and the document it polls, ``/v1/dashboard``.

Rates and freshness come from the worker's Prometheus registry, sampled once a
second by :class:`RegistrySampler` (ten minutes kept); scores, the lifecycle
funnel, model quality and alerts come from ClickHouse. The document is computed
at most once per second whatever the number of open pages. The page is static
HTML with Chart.js vendored under ``static/`` (no internet at run time).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CollectorRegistry

from streams.web.deps import Select, WebDeps
from streams.web.models import (
    AlertItem,
    AucPoint,
    Conversion,
    Dashboard,
    FreshnessPoint,
    Problem,
    RatePoint,
    StageCount,
)

__all__ = ["RegistrySampler", "Sample", "DashboardSource", "dashboard_router", "quantile"]

FUNNEL = ("potential", "intent", "decision", "loyal", "at_risk", "lapsed", "reactivated")
STATIC_FILES = {
    "chart.umd.min.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


# --- Prometheus side ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sample:
    """Registry totals at one wall-clock instant."""

    t: float
    received: float
    rejected: float
    freshness: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` of cumulative ``(le, count)`` buckets (None without data).

    >>> quantile(0.5, [(1.0, 2.0), (2.0, 4.0), (math.inf, 4.0)])
    1.0
    >>> quantile(0.95, [(1.0, 0.0), (2.0, 10.0), (math.inf, 10.0)])
    1.95
    >>> quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    True
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return round(lower + (bound - lower) * (rank - below) / (count - below), 6)
        lower, below = bound, count
    return lower


def _read(registry: CollectorRegistry, now: float) -> Sample:
    received = rejected = 0.0
    freshness: dict[float, float] = {}
    for family in registry.collect():
        if family.name == "pulse_events_received":
            received += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "pulse_events_rejected":
            rejected += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "pulse_freshness_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    bound = float(s.labels["le"])
                    freshness[bound] = freshness.get(bound, 0.0) + s.value
    return Sample(now, received, rejected, tuple(sorted(freshness.items())))


class RegistrySampler:
    """Samples the registry every ``interval`` seconds, keeping ``keep`` samples."""

    def __init__(self, registry: CollectorRegistry, interval: float = 1.0, keep: int = 600) -> None:
        self.registry = registry
        self.interval = interval
        self._samples: deque[Sample] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def sample(self, now: float | None = None) -> Sample:
        taken = _read(self.registry, time.time() if now is None else now)
        with self._lock:
            self._samples.append(taken)
        return taken

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def series(self, window: int = 5) -> tuple[list[RatePoint], list[FreshnessPoint]]:
        """Events/s between consecutive samples; freshness quantiles over ``window`` samples."""
        samples = self.samples()
        rates: list[RatePoint] = []
        fresh: list[FreshnessPoint] = []
        for i in range(1, len(samples)):
            before, after = samples[i - 1], samples[i]
            dt = max(after.t - before.t, 1e-6)
            rates.append(
                RatePoint(
                    t=after.t,
                    events_per_second=round(max(0.0, after.received - before.received) / dt, 2),
                    rejected_per_second=round(max(0.0, after.rejected - before.rejected) / dt, 2),
                )
            )
            start = samples[max(0, i - window)]
            old = dict(start.freshness)
            delta = [(le, count - old.get(le, 0.0)) for le, count in after.freshness]
            fresh.append(
                FreshnessPoint(t=after.t, p50=quantile(0.5, delta), p95=quantile(0.95, delta))
            )
        return rates, fresh


# --- ClickHouse side ------------------------------------------------------------------
def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {str(r["k"]): int(r["n"]) for r in rows}


class DashboardSource:
    """Builds the :class:`Dashboard` document, at most once per ``ttl`` seconds."""

    def __init__(
        self, select: Select, database: str, sampler: RegistrySampler, ttl: float = 1.0
    ) -> None:
        self.select = select
        self.db = database
        self.sampler = sampler
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, Dashboard] | None = None

    def document(self) -> Dashboard:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            document = self._build()
            self._cached = (now, document)
            return document

    def _build(self) -> Dashboard:
        db, q = self.db, self.select
        latest = self.sampler.sample()
        rates, fresh = self.sampler.series()
        scores = f"{db}.member_scores FINAL"
        tiers = _counts(
            q(f"SELECT engagement_tier AS k, count() AS n FROM {scores} GROUP BY k", {})
        )
        risk = _counts(q(f"SELECT churn_risk AS k, count() AS n FROM {scores} GROUP BY k", {}))
        stages = _counts(q(f"SELECT stage AS k, members AS n FROM {db}.lifecycle_funnel", {}))
        lifecycle = [StageCount(stage=s, members=stages.get(s, 0)) for s in FUNNEL]
        lifecycle += [StageCount(stage=s, members=n) for s, n in stages.items() if s not in FUNNEL]
        conversion = q(
            "SELECT countIf(conversion_probability IS NOT NULL) AS open, "
            "countIf(conversion_probability IS NULL) AS covered, "
            "avgIf(conversion_probability, conversion_probability IS NOT NULL) AS mean "
            f"FROM {db}.member_scores FINAL",
            {},
        )[0]
        histogram = [0] * 10
        if conversion["open"]:
            bins = q(
                "SELECT least(toUInt8(floor(conversion_probability * 10)), 9) AS k, count() AS n "
                f"FROM {db}.member_scores FINAL WHERE conversion_probability IS NOT NULL "
                "GROUP BY k",
                {},
            )
            for row in bins:
                histogram[int(row["k"])] = int(row["n"])
        mean = conversion["mean"]
        auc = q(
            f"SELECT model, at, roc_auc FROM {db}.model_metrics "
            "WHERE roc_auc IS NOT NULL ORDER BY at DESC LIMIT 600",
            {},
        )
        alerts = q(
            "SELECT raised_at, rule, severity, status, subject_type, subject_id, value, threshold "
            f"FROM {db}.alerts ORDER BY emitted_at DESC, raised_at DESC LIMIT 15",
            {},
        )
        last_fresh = next((p.p95 for p in reversed(fresh) if p.p95 is not None), None)
        return Dashboard(
            generated_at=latest.t,
            events_total=latest.received,
            events_per_second=rates[-1].events_per_second if rates else 0.0,
            freshness_p95_seconds=last_fresh,
            members_scored=sum(tiers.values()),
            rate=rates,
            freshness=fresh,
            engagement_tiers=tiers,
            churn_risk=risk,
            lifecycle=lifecycle,
            conversion=Conversion(
                members_without_policy=int(conversion["open"]),
                members_with_policy=int(conversion["covered"]),
                mean_probability=None
                if mean is None or (isinstance(mean, float) and math.isnan(mean))
                else round(float(mean), 4),
                histogram=histogram,
            ),
            model_auc=[
                AucPoint(model=r["model"], at=r["at"], roc_auc=r["roc_auc"]) for r in reversed(auc)
            ],
            alerts=[AlertItem(**r) for r in alerts],
        )


# --- routes -----------------------------------------------------------------------------
def _static(name: str) -> bytes:
    return resources.files("streams.web").joinpath("static", name).read_bytes()


def dashboard_router(
    deps: WebDeps,
    source: DashboardSource,
    page_guard: Callable[[Request], Awaitable[None]],
    api_guard: Callable[[Request], Awaitable[None]],
) -> APIRouter:
    router = APIRouter(tags=["live page"])
    denied: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 403: {"model": Problem}}
    page = _static("index.html")

    @router.get(
        "/",
        summary="The live community page (HTML; refreshes itself from /v1/dashboard)",
        dependencies=[Depends(page_guard)],
        response_class=HTMLResponse,
        responses=denied,
    )
    def index() -> Response:
        return HTMLResponse(
            page,
            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"},
        )

    @router.get(
        "/static/{name}",
        summary="The page's script, style and the vendored Chart.js",
        dependencies=[Depends(page_guard)],
        responses={**denied, 404: {"model": Problem}},
    )
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, "no such file")
        return Response(
            _static(name),
            media_type=STATIC_FILES[name],
            headers={"Cache-Control": "max-age=300"},
        )

    @router.get(
        "/v1/dashboard",
        summary="What the live page shows: rates, scores, funnel, model AUC, alerts",
        dependencies=[Depends(api_guard)],
        response_model=Dashboard,
        responses=denied,
    )
    def dashboard() -> Dashboard:
        try:
            return source.document()
        except Exception as exc:
            raise HTTPException(
                503, f"ClickHouse did not answer the page's queries ({type(exc).__name__})"
            ) from exc

    return router
