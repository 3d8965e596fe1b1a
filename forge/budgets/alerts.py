"""Spend alerts (OpenAI's ``/spend_alerts`` of an organisation and of a project): when a
month's spend reaches the threshold, an event, once per alert and month.

The usage recorder fires them in the transaction that writes the records and counts the
spend (``fire_statement``): one INSERT ... SELECT over the alerts of the subjects the batch
touched, whose month's spend now reaches their threshold, keyed by (alert, month), so a
crossing is recorded exactly once however the records arrive (twice, out of order, from
several recorders). The events table is an outbox: a webhook system will deliver them
(``delivered_at``); until then admins read them (``GET /admin/budgets/alert_events``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, and_, bindparam, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import Spend, SpendAlert, SpendAlertEvent, utcnow
from forge.errors import NotFound
from forge.spend import SpendDelta
from forge.tenancy.objects import Page, unix
from forge.tenancy.paging import Order, as_page, page_rows
from forge.tenancy.store import project_of

AlertScope = Literal["organization", "project"]
MAX_RECIPIENTS = 20


class NotificationChannel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["email"] = "email"
    recipients: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    subject_prefix: str | None = Field(None, max_length=200)


class SpendAlertBody(BaseModel):
    """OpenAI's ``CreateSpendAlertBody``: a threshold in cents, for a month."""

    model_config = ConfigDict(extra="forbid")
    threshold_amount: int = Field(ge=0, le=10**12)
    currency: Literal["USD"]
    interval: Literal["month"]
    notification_channel: NotificationChannel


class SpendAlertObject(BaseModel):
    id: str
    object: Literal["organization.spend_alert", "project.spend_alert"]
    threshold_amount: int
    currency: Literal["USD"]
    interval: Literal["month"]
    notification_channel: NotificationChannel


class SpendAlertDeleted(BaseModel):
    id: str
    object: Literal["organization.spend_alert.deleted", "project.spend_alert.deleted"]
    deleted: bool = True


class SpendAlertFired(BaseModel):
    """An event in the outbox."""

    object: Literal["spend_alert.event"] = "spend_alert.event"
    alert_id: str
    org_id: str
    scope: str
    subject_id: str
    month: str
    threshold_amount: int
    spent_usd: float
    created_at: int
    delivered_at: int | None


def _alert(row: SpendAlert) -> SpendAlertObject:
    return SpendAlertObject(
        id=row.id,
        object=f"{row.scope}.spend_alert",
        threshold_amount=row.threshold_cents,
        currency=row.currency,
        interval=row.interval,
        notification_channel=NotificationChannel.model_validate_json(row.channel),
    )


def fire_statement(insert: Callable[[Any], Any]) -> Any:
    """The statement that records the alerts a batch made cross, built once per store
    and run with ``fire_params`` after the counters are updated, in their transaction
    (rebuilding it per batch cost the recorder more than running it)."""
    crossed = (
        select(
            SpendAlert.id,
            Spend.period_start,
            SpendAlert.org_id,
            SpendAlert.scope,
            SpendAlert.subject_id,
            SpendAlert.threshold_cents,
            Spend.cost_usd,
            bindparam("now", type_=DateTime(timezone=True)),
        )
        .join(
            Spend,
            and_(
                Spend.scope == SpendAlert.scope,
                Spend.subject_id == SpendAlert.subject_id,
                Spend.period == "month",
            ),
        )
        .where(
            tuple_(Spend.scope, Spend.subject_id, Spend.period_start).in_(
                bindparam("touched", expanding=True)
            ),
            Spend.cost_usd * 100 >= SpendAlert.threshold_cents,
        )
    )
    columns = [
        "alert_id",
        "period_start",
        "org_id",
        "scope",
        "subject_id",
        "threshold_cents",
        "spent_usd",
        "created_at",
    ]
    stmt = insert(SpendAlertEvent).from_select(columns, crossed)
    return stmt.on_conflict_do_nothing(
        index_elements=[SpendAlertEvent.alert_id, SpendAlertEvent.period_start]
    )


def fire_params(deltas: Sequence[SpendDelta]) -> dict[str, Any] | None:
    """``fire_statement``'s parameters for a batch (None: it touched no month of an
    organisation or a project, so no alert can have been crossed)."""
    touched = {
        (d.scope, d.subject_id, d.period_start)
        for d in deltas
        if d.period == "month" and d.scope in ("organization", "project")
    }
    return {"touched": sorted(touched), "now": utcnow()} if touched else None


class SpendAlertStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_alerts(
        self,
        org_id: str,
        subject: tuple[AlertScope, str],
        limit: int = 20,
        after: str | None = None,
        order: Order = "asc",
    ) -> Page[SpendAlertObject]:
        async with self._sessions() as s:
            await self._subject(s, org_id, subject)
            rows, more = await page_rows(
                s, SpendAlert, self._where(org_id, subject), limit, after, order
            )
        return as_page([_alert(r) for r in rows], more)

    async def create(
        self, org_id: str, subject: tuple[AlertScope, str], body: SpendAlertBody
    ) -> SpendAlertObject:
        scope, subject_id = subject
        row = SpendAlert(
            id="spend_alert_" + secrets.token_hex(12),
            org_id=org_id,
            scope=scope,
            subject_id=subject_id,
            threshold_cents=body.threshold_amount,
            currency=body.currency,
            interval=body.interval,
            channel=body.notification_channel.model_dump_json(),
            created_at=utcnow(),
        )
        async with self._sessions() as s, s.begin():
            await self._subject(s, org_id, subject, active=True)
            s.add(row)
        return _alert(row)

    async def get(
        self, org_id: str, subject: tuple[AlertScope, str], alert_id: str
    ) -> SpendAlertObject:
        async with self._sessions() as s:
            return _alert(await self._row(s, org_id, subject, alert_id))

    async def update(
        self, org_id: str, subject: tuple[AlertScope, str], alert_id: str, body: SpendAlertBody
    ) -> SpendAlertObject:
        """A new threshold may fire again this month (its old event stays)."""
        async with self._sessions() as s, s.begin():
            row = await self._row(s, org_id, subject, alert_id)
            row.threshold_cents = body.threshold_amount
            row.channel = body.notification_channel.model_dump_json()
            return _alert(row)

    async def delete(self, org_id: str, subject: tuple[AlertScope, str], alert_id: str) -> None:
        async with self._sessions() as s, s.begin():
            await s.delete(await self._row(s, org_id, subject, alert_id))

    async def events(self, org_id: str | None, limit: int = 100) -> list[SpendAlertFired]:
        """The newest fired alerts of ``org_id`` (None: of every organisation)."""
        query = select(SpendAlertEvent).order_by(SpendAlertEvent.created_at.desc()).limit(limit)
        if org_id is not None:
            query = query.where(SpendAlertEvent.org_id == org_id)
        async with self._sessions() as s:
            rows = list(await s.scalars(query))
        return [
            SpendAlertFired(
                alert_id=r.alert_id,
                org_id=r.org_id,
                scope=r.scope,
                subject_id=r.subject_id,
                month=r.period_start[:7],
                threshold_amount=r.threshold_cents,
                spent_usd=r.spent_usd,
                created_at=unix(r.created_at) or 0,
                delivered_at=unix(r.delivered_at),
            )
            for r in rows
        ]

    @staticmethod
    def _where(org_id: str, subject: tuple[AlertScope, str]) -> list[Any]:
        scope, subject_id = subject
        return [
            SpendAlert.org_id == org_id,
            SpendAlert.scope == scope,
            SpendAlert.subject_id == subject_id,
        ]

    async def _subject(
        self,
        s: AsyncSession,
        org_id: str,
        subject: tuple[AlertScope, str],
        active: bool = False,
    ) -> None:
        if subject[0] == "project":
            await project_of(s, org_id, subject[1], active)

    async def _row(
        self, s: AsyncSession, org_id: str, subject: tuple[AlertScope, str], alert_id: str
    ) -> SpendAlert:
        await self._subject(s, org_id, subject)
        row = await s.scalar(
            select(SpendAlert).where(*self._where(org_id, subject), SpendAlert.id == alert_id)
        )
        if row is None:
            raise NotFound(f"No spend alert with id {alert_id!r}.", param="alert_id")
        return row
