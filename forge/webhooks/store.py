"""Webhook endpoints and the delivery outbox, on the platform's database.

An endpoint's URL and signing secret are sealed at rest with the platform's keyring (a
chat tool's incoming-webhook URL is itself a secret: whoever holds it can post). An
event is written as one delivery row per subscribed endpoint; senders claim due rows
with a lease, so any number of gateway replicas can send without sending one twice at
once, and a sender that dies mid-send leaves its claim to expire, not a lost event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.credentials.sealing import Keyring
from forge.db.schema import (
    DEFAULT_ORG_ID,
    BudgetThresholdEvent,
    SpendAlertEvent,
    WebhookDelivery,
    WebhookEndpoint,
    aware,
)
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.tenancy.objects import Deleted, Page, unix
from forge.tenancy.paging import as_page, page_rows
from forge.webhooks.events import PLATFORM_EVENTS, Event, EventType
from forge.webhooks.formats import Kind
from forge.webhooks.signing import new_secret

MAX_ENDPOINTS_PER_ORG = 20
ERROR_MAX = 500


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="Where events are POSTed (http or https).")
    kind: Kind = Field(
        "standard",
        description="standard: the event as JSON, signed per Standard Webhooks; slack, "
        "discord, teams: a message for that tool's incoming webhook.",
    )
    events: list[EventType] = Field(min_length=1, description="Event types it hears.")
    description: str = Field("", max_length=300)


class WebhookUpdate(BaseModel):
    """What may change on an endpoint (its kind and signing secret stay: re-create it)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=2000, description="A new URL (http or https).")
    events: list[EventType] | None = Field(None, min_length=1, description="The event types.")
    description: str | None = Field(None, max_length=300)


class WebhookObject(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    kind: Kind
    url: str = Field(description="Scheme and host only: the whole URL is kept sealed.")
    events: list[str]
    description: str
    created_at: int


class WebhookCreated(WebhookObject):
    secret: str | None = Field(
        None, description="standard: the signing secret (whsec_…), shown this once."
    )


class DeliveryObject(BaseModel):
    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str
    endpoint_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: int
    next_attempt_at: int | None
    delivered_at: int | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A claimed delivery, opened for sending."""

    id: str
    kind: Kind
    url: str
    secret: str | None
    event: Event
    attempts: int
    claimed_until: datetime  # the claim this sender holds: settling needs it still held


def _hint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"[:300]


def _endpoint(row: WebhookEndpoint) -> WebhookObject:
    return WebhookObject(
        id=row.id,
        kind=row.kind,
        url=row.url_hint,
        events=json.loads(row.events),
        description=row.description,
        created_at=unix(row.created_at) or 0,
    )


def _delivery(row: WebhookDelivery) -> DeliveryObject:
    return DeliveryObject(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=unix(row.created_at) or 0,
        next_attempt_at=unix(row.next_attempt_at) if row.status == "pending" else None,
        delivered_at=unix(row.delivered_at),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _pending(endpoint_id: str, org_id: str, event: Event) -> WebhookDelivery:
    """A delivery of ``event`` to one endpoint, due now; its id is the webhook-id."""
    now = _now()
    return WebhookDelivery(
        id="msg_" + uuid.uuid4().hex[:24],
        endpoint_id=endpoint_id,
        org_id=org_id,
        event_type=event.type,
        payload=event.model_dump_json(),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )


def _check_events(org_id: str, events: list[EventType]) -> None:
    """Platform events (breakers) are the operator's organisation's to hear."""
    platform = sorted(set(events) & PLATFORM_EVENTS)
    if platform and org_id != DEFAULT_ORG_ID:
        raise InvalidRequest(
            f"Events {', '.join(platform)} are about the platform itself; only its "
            "operator's organization may subscribe to them.",
            param="events",
            code="invalid_value",
        )


Outbox = SpendAlertEvent | BudgetThresholdEvent


def _spend_alert_event(alert: SpendAlertEvent) -> Event:
    return Event(
        type="spend_alert.fired",
        timestamp=aware(alert.created_at) or _now(),
        data={
            "alert_id": alert.alert_id,
            "scope": alert.scope,
            "subject_id": alert.subject_id,
            "period_start": alert.period_start,
            "threshold_cents": alert.threshold_cents,
            "spent_usd": round(alert.spent_usd, 6),
        },
    )


def _budget_threshold_event(row: BudgetThresholdEvent) -> Event:
    return Event(
        type="budget.threshold_reached",
        timestamp=aware(row.created_at) or _now(),
        data={
            "budget_id": row.budget_id,
            "scope": row.scope,
            "subject_id": row.subject_id,
            "period": row.period,
            "period_start": row.period_start,
            "unit": row.unit,
            "limit": row.limit,
            "used": round(row.used, 6),
            "percent": row.percent,
        },
    )


class WebhookStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: Keyring) -> None:
        self.sessions = sessions
        self._keyring = keyring

    @staticmethod
    def _context(endpoint_id: str, what: str) -> str:
        return f"webhook:{endpoint_id}:{what}"

    # ------------------------------------------------------------------ endpoints
    async def create(self, org_id: str, body: WebhookCreate) -> WebhookCreated:
        """The endpoint, with its signing secret (standard) shown this once. Platform
        events (breakers) are the operator's organisation's to hear."""
        _check_events(org_id, body.events)
        endpoint_id = "whep_" + uuid.uuid4().hex[:24]
        secret = new_secret() if body.kind == "standard" else None
        row = WebhookEndpoint(
            id=endpoint_id,
            org_id=org_id,
            kind=body.kind,
            url_sealed=self._keyring.seal(body.url, self._context(endpoint_id, "url")),
            url_hint=_hint(body.url),
            secret_sealed=(
                None
                if secret is None
                else self._keyring.seal(secret, self._context(endpoint_id, "secret"))
            ),
            events=json.dumps(sorted(set(body.events))),
            description=body.description,
            created_at=_now(),
        )
        async with self.sessions.begin() as s:
            count = len(
                (
                    await s.scalars(
                        select(WebhookEndpoint.id).where(WebhookEndpoint.org_id == org_id)
                    )
                ).all()
            )
            if count >= MAX_ENDPOINTS_PER_ORG:
                raise InvalidRequest(
                    f"An organization has at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints.",
                    param="url",
                    code="limit_reached",
                )
            s.add(row)
        return WebhookCreated(**_endpoint(row).model_dump(), secret=secret)

    async def _row(self, s: AsyncSession, org_id: str, endpoint_id: str) -> WebhookEndpoint:
        row = await s.get(WebhookEndpoint, endpoint_id)
        if row is None or row.org_id != org_id:
            raise NotFound(f"No webhook endpoint {endpoint_id!r}.", param="webhook_id")
        return row

    async def list_endpoints(
        self, org_id: str, limit: int, after: str | None
    ) -> Page[WebhookObject]:
        async with self.sessions() as s:
            rows, more = await page_rows(
                s, WebhookEndpoint, [WebhookEndpoint.org_id == org_id], limit, after
            )
        return as_page([_endpoint(r) for r in rows], more)

    async def get(self, org_id: str, endpoint_id: str) -> WebhookObject:
        async with self.sessions() as s:
            return _endpoint(await self._row(s, org_id, endpoint_id))

    async def update(self, org_id: str, endpoint_id: str, body: WebhookUpdate) -> WebhookObject:
        """Change the URL, events or description; deliveries already queued keep going
        to the endpoint (to its new URL, if changed: the URL is read at sending)."""
        if body.events is not None:
            _check_events(org_id, body.events)
        async with self.sessions.begin() as s:
            row = await self._row(s, org_id, endpoint_id)
            if body.url is not None:
                row.url_sealed = self._keyring.seal(body.url, self._context(endpoint_id, "url"))
                row.url_hint = _hint(body.url)
            if body.events is not None:
                row.events = json.dumps(sorted(set(body.events)))
            if body.description is not None:
                row.description = body.description
            return _endpoint(row)

    async def delete(self, org_id: str, endpoint_id: str) -> Deleted:
        """The endpoint and its pending deliveries (delivered ones stay, as a record)."""
        async with self.sessions.begin() as s:
            row = await self._row(s, org_id, endpoint_id)
            await s.delete(row)
            await s.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.endpoint_id == endpoint_id,
                    WebhookDelivery.status == "pending",
                )
                .values(status="failed", last_error="endpoint deleted")
            )
        return Deleted(object="webhook_endpoint.deleted", id=endpoint_id)

    # ------------------------------------------------------------------ events
    async def emit(self, org_id: str, event: Event, session: AsyncSession | None = None) -> int:
        """One pending delivery per endpoint of ``org_id`` that hears ``event.type``; in
        ``session``'s transaction when given (so the event and what caused it commit
        together). Returns how many."""
        if session is None:
            async with self.sessions.begin() as s:
                return await self.emit(org_id, event, s)
        rows = (
            await session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id))
        ).all()
        n = 0
        for endpoint in rows:
            if event.type in json.loads(endpoint.events):
                session.add(_pending(endpoint.id, org_id, event))
                n += 1
        return n

    async def test(self, org_id: str, endpoint_id: str) -> DeliveryObject:
        """A ``webhook.test`` event to this one endpoint, whatever it subscribed to."""
        event = Event(type="webhook.test", timestamp=_now(), data={"endpoint_id": endpoint_id})
        async with self.sessions.begin() as s:
            await self._row(s, org_id, endpoint_id)
            row = _pending(endpoint_id, org_id, event)
            s.add(row)
        return _delivery(row)

    async def collect_spend_alerts(self) -> int:
        """Turn fired spend alerts (the usage recorder's outbox) into events, each once."""
        t = SpendAlertEvent
        return await self._collect(t, (t.alert_id, t.period_start), _spend_alert_event)

    async def collect_budget_thresholds(self) -> int:
        """Turn reached budget thresholds (the usage recorder's outbox) into events."""
        t = BudgetThresholdEvent
        keys = (t.budget_id, t.period_start, t.percent)
        return await self._collect(t, keys, _budget_threshold_event)

    async def _collect(
        self, table: type[Outbox], keys: tuple[Any, ...], to_event: Callable[[Any], Event]
    ) -> int:
        """Emit an outbox's undelivered rows, each once: marking one delivered and
        emitting its event share a transaction (another sender's claim loses)."""
        async with self.sessions() as s:
            pending: list[Any] = list(
                await s.scalars(select(table).where(table.delivered_at.is_(None)).limit(100))
            )
        n = 0
        for row in pending:
            async with self.sessions.begin() as s:
                same = [column == getattr(row, column.key) for column in keys]
                taken = await s.execute(
                    update(table)
                    .where(*same, table.delivered_at.is_(None))
                    .values(delivered_at=_now())
                )
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another sender took it
                n += await self.emit(row.org_id, to_event(row), s)
        return n

    # ------------------------------------------------------------------ deliveries
    async def deliveries(
        self, org_id: str, endpoint_id: str, limit: int, after: str | None
    ) -> Page[DeliveryObject]:
        async with self.sessions() as s:
            await self._row(s, org_id, endpoint_id)
            rows, more = await page_rows(
                s,
                WebhookDelivery,
                [WebhookDelivery.endpoint_id == endpoint_id],
                limit,
                after,
                order="desc",
            )
        return as_page([_delivery(r) for r in rows], more)

    async def replay(self, org_id: str, endpoint_id: str, delivery_id: str) -> DeliveryObject:
        """Send a delivery again (delivered or failed): due now, its attempts kept."""
        async with self.sessions.begin() as s:
            await self._row(s, org_id, endpoint_id)
            row = await s.get(WebhookDelivery, delivery_id)
            if row is None or row.endpoint_id != endpoint_id:
                raise NotFound(f"No delivery {delivery_id!r}.", param="delivery_id")
            held = aware(row.claimed_until)
            if row.status == "pending" and held is not None and held > _now():
                raise Conflict(
                    f"Delivery {delivery_id!r} is being sent now; replay it once it settles.",
                    param="delivery_id",
                )
            row.status, row.next_attempt_at, row.claimed_until = "pending", _now(), None
            await s.flush()
            return _delivery(row)

    async def claim_due(self, limit: int, lease_s: float) -> list[Outgoing]:
        """Due deliveries nobody holds, each claimed for ``lease_s`` (an update that only
        one sender's can win), opened for sending."""
        now = _now()
        due = and_(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
        )
        async with self.sessions() as s:
            ids = (
                await s.scalars(
                    select(WebhookDelivery.id)
                    .where(due)
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(limit)
                )
            ).all()
        out: list[Outgoing] = []
        claim = now + timedelta(seconds=lease_s)
        for delivery_id in ids:
            async with self.sessions.begin() as s:
                won = await s.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, due)
                    .values(claimed_until=claim)
                )
                if won.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                row = await s.get(WebhookDelivery, delivery_id)
                endpoint = None if row is None else await s.get(WebhookEndpoint, row.endpoint_id)
                if row is None:
                    continue
                if endpoint is None:
                    row.status, row.last_error = "failed", "endpoint deleted"
                    continue
                out.append(self._open(endpoint, row, claim))
        return out

    def _open(self, endpoint: WebhookEndpoint, row: WebhookDelivery, claim: datetime) -> Outgoing:
        url = self._keyring.open(endpoint.url_sealed, self._context(endpoint.id, "url"))
        secret = (
            None
            if endpoint.secret_sealed is None
            else self._keyring.open(endpoint.secret_sealed, self._context(endpoint.id, "secret"))
        )
        return Outgoing(
            row.id,
            endpoint.kind,  # type: ignore[arg-type]
            url,
            secret,
            Event.model_validate(orjson.loads(row.payload)),
            row.attempts,
            claim,
        )

    async def settle(
        self,
        outgoing: Outgoing,
        status_code: int | None,
        error: str | None,
        retry_at: datetime | None,
    ) -> None:
        """Record a try: delivered (no ``error``), due again at ``retry_at``, or failed;
        only while this sender's claim holds (a replay may have handed it on)."""
        values: dict[str, object] = {
            "attempts": WebhookDelivery.attempts + 1,
            "last_status_code": status_code,
            "last_error": None if error is None else error[:ERROR_MAX],
            "claimed_until": None,
        }
        if error is None:
            values.update(status="delivered", delivered_at=_now())
        elif retry_at is not None:
            values.update(next_attempt_at=retry_at)
        else:
            values.update(status="failed")
        async with self.sessions.begin() as s:
            await s.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == outgoing.id,
                    WebhookDelivery.claimed_until == outgoing.claimed_until,
                )
                .values(**values)
            )
