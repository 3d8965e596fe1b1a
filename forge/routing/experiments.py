"""A/B experiments: which arm a caller is in, and what each arm has shown so far.

Assignment hashes the experiment's name with the caller (its key, or the request's
``user``) into [0, 100) and walks the arms' percents: the same caller always lands in
the same arm, callers spread by the percents, and two experiments split independently.

The report reads per-arm sums from the usage records (count, errors, and the sums and
sums of squares of latency, cost, feedback and judge scores), so an experiment of any
size is one grouped query; scipy turns them into means with 95% confidence intervals
and tests each arm against the first (the control): Welch's t-test for latency, cost,
feedback and judge scores, Fisher's exact test for the error rate.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from pydantic import BaseModel
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.config import Experiment, ExperimentArm
from forge.db.schema import UsageRecord


def _stats() -> ModuleType:
    """scipy.stats, imported on the first report: at module level it cost every gateway
    replica and the `forge up` driver ~0.9 s of start-up and ~40 MiB each (this module
    sits on the relay's import path for the arm assignment)."""
    return importlib.import_module("scipy.stats")


CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


def assign(experiment: Experiment, caller: str) -> ExperimentArm:
    """The arm ``caller`` is in (stable for the same experiment and caller)."""
    digest = hashlib.sha256(f"{experiment.name}\0{caller}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * 100
    edge = 0.0
    for arm in experiment.arms:
        edge += arm.percent
        if point < edge:
            return arm
    return experiment.arms[-1]


def arm_label(experiment: Experiment, arm: ExperimentArm) -> str:
    """How the usage record names the arm."""
    return f"{experiment.name}/{arm.name}"


class Estimate(BaseModel):
    n: int
    mean: float | None
    low: float | None  # the 95% confidence interval
    high: float | None


class Comparison(BaseModel):
    """An arm against the control: the p-value of the difference, and whether it is
    significant at 5%."""

    p_value: float | None
    significant: bool


class ArmReport(BaseModel):
    arm: str
    model: str
    percent: float
    requests: int
    error_rate: Estimate
    latency_ms: Estimate
    cost_usd: Estimate
    feedback: Estimate
    quality: Estimate  # the judge model's scores (forge.quality.judge)
    versus_control: dict[str, Comparison]


class ExperimentReport(BaseModel):
    experiment: str
    since: datetime | None
    control: str
    arms: list[ArmReport]


class _Moments:
    def __init__(self, n: int, total: float, squares: float) -> None:
        self.n, self.total, self.squares = n, total, squares

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        mean = self.total / self.n
        return math.sqrt(max(self.squares - self.n * mean * mean, 0.0) / (self.n - 1))

    def estimate(self) -> Estimate:
        mean, std = self.mean, self.std
        if mean is None:
            return Estimate(n=self.n, mean=None, low=None, high=None)
        if std is None or std == 0:
            return Estimate(n=self.n, mean=mean, low=mean, high=mean)
        low, high = _stats().t.interval(
            CONFIDENCE, self.n - 1, loc=mean, scale=std / math.sqrt(self.n)
        )
        return Estimate(n=self.n, mean=mean, low=float(low), high=float(high))


def _welch(a: _Moments, b: _Moments) -> Comparison:
    if a.std is None or b.std is None or a.mean is None or b.mean is None:
        return Comparison(p_value=None, significant=False)
    if a.std == 0 and b.std == 0:
        p = 1.0 if a.mean == b.mean else 0.0
        return Comparison(p_value=p, significant=p < ALPHA)
    result = _stats().ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n, equal_var=False)
    p = float(result.pvalue)
    return Comparison(p_value=p, significant=p < ALPHA)


def _error_rate(errors: int, n: int) -> Estimate:
    if n == 0:
        return Estimate(n=0, mean=None, low=None, high=None)
    ci = _stats().binomtest(errors, n).proportion_ci(CONFIDENCE, method="wilson")
    return Estimate(n=n, mean=errors / n, low=float(ci.low), high=float(ci.high))


def _fisher(e1: int, n1: int, e2: int, n2: int) -> Comparison:
    if not n1 or not n2:
        return Comparison(p_value=None, significant=False)
    p = float(_stats().fisher_exact([[e1, n1 - e1], [e2, n2 - e2]]).pvalue)
    return Comparison(p_value=p, significant=p < ALPHA)


@dataclass(frozen=True)
class _ArmFigures:
    n: int
    errors: int
    latency: _Moments
    cost: _Moments
    feedback: _Moments
    quality: _Moments

    @classmethod
    def of(cls, row: Sequence[Any] | None) -> _ArmFigures:
        """From a row of the report's query (None: an arm with no requests yet)."""
        n, errors, *sums = row if row is not None else (0,) * 14
        latency, cost, feedback, quality = (
            _Moments(int(sums[i] or 0), float(sums[i + 1] or 0), float(sums[i + 2] or 0))
            for i in (0, 3, 6, 9)
        )
        return cls(int(n or 0), int(errors or 0), latency, cost, feedback, quality)


def _sums(column: Any) -> list[Any]:
    return [func.count(column), func.sum(column), func.sum(column * column)]


async def report(
    sessions: async_sessionmaker[AsyncSession], experiment: Experiment, since: datetime | None
) -> ExperimentReport:
    labels = {arm_label(experiment, a): a for a in experiment.arms}
    failed = case((UsageRecord.status == "ok", 0), else_=1)
    query = (
        select(
            UsageRecord.arm,
            func.count(),
            func.sum(failed),
            *_sums(UsageRecord.latency_ms),
            *_sums(UsageRecord.cost_usd),
            *_sums(UsageRecord.feedback_score),
            *_sums(UsageRecord.quality_score),
        )
        .where(UsageRecord.arm.in_(list(labels)))
        .group_by(UsageRecord.arm)
    )
    if since is not None:
        query = query.where(UsageRecord.created_at >= since)
    async with sessions() as s:
        rows = {r[0]: r[1:] for r in (await s.execute(query)).all()}
    figures = {label: _ArmFigures.of(rows.get(label)) for label in labels}
    control = figures[arm_label(experiment, experiment.arms[0])]
    arms = []
    for label, arm in labels.items():
        f = figures[label]
        versus = (
            {}
            if f is control
            else {
                "error_rate": _fisher(control.errors, control.n, f.errors, f.n),
                "latency_ms": _welch(control.latency, f.latency),
                "cost_usd": _welch(control.cost, f.cost),
                "feedback": _welch(control.feedback, f.feedback),
                "quality": _welch(control.quality, f.quality),
            }
        )
        arms.append(
            ArmReport(
                arm=arm.name,
                model=arm.model,
                percent=arm.percent,
                requests=f.n,
                error_rate=_error_rate(f.errors, f.n),
                latency_ms=f.latency.estimate(),
                cost_usd=f.cost.estimate(),
                feedback=f.feedback.estimate(),
                quality=f.quality.estimate(),
                versus_control=versus,
            )
        )
    return ExperimentReport(
        experiment=experiment.name, since=since, control=experiment.arms[0].name, arms=arms
    )
