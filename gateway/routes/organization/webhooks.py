"""``/v1/organization/webhooks``: an organisation's webhook endpoints (our path: OpenAI
has none), their deliveries, a test event and replays. Creating one shows a Standard
Webhooks endpoint's signing secret once; the URL is refused when it is not http(s) or
points at the platform itself."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from forge.errors import ServiceUnavailable
from forge.tenancy.objects import Deleted, Page
from forge.webhooks.store import (
    DeliveryObject,
    WebhookCreate,
    WebhookCreated,
    WebhookObject,
    WebhookStore,
    WebhookUpdate,
)
from forge.webhooks.targets import check_url
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(prefix="/webhooks", tags=["organization"], route_class=AuditedRoute)


def _store(call: OrgCall) -> WebhookStore:
    store = call.runtime.webhooks
    if store is None:
        raise ServiceUnavailable("Webhooks are not configured on this gateway.", retry_after=5)
    return store


@router.post("", response_model=WebhookCreated, openapi_extra=audited("organization.updated"))
async def create_webhook(body: WebhookCreate, call: OrgCall = Depends(org_call)) -> WebhookCreated:
    server = call.runtime.config.server
    await check_url(body.url, server.host, server.port)
    return await _store(call).create(call.org_id, body)


@router.get("", response_model=Page[WebhookObject])
async def list_webhooks(
    paging: Paging = Depends(), call: OrgCall = Depends(org_call)
) -> Page[WebhookObject]:
    return await _store(call).list_endpoints(call.org_id, paging.limit, paging.after)


@router.get("/{webhook_id}", response_model=WebhookObject)
async def get_webhook(webhook_id: str, call: OrgCall = Depends(org_call)) -> WebhookObject:
    return await _store(call).get(call.org_id, webhook_id)


@router.post(
    "/{webhook_id}", response_model=WebhookObject, openapi_extra=audited("organization.updated")
)
async def update_webhook(
    webhook_id: str, body: WebhookUpdate, call: OrgCall = Depends(org_call)
) -> WebhookObject:
    if body.url is not None:
        server = call.runtime.config.server
        await check_url(body.url, server.host, server.port)
    return await _store(call).update(call.org_id, webhook_id, body)


@router.delete(
    "/{webhook_id}", response_model=Deleted, openapi_extra=audited("organization.updated")
)
async def delete_webhook(webhook_id: str, call: OrgCall = Depends(org_call)) -> Deleted:
    return await _store(call).delete(call.org_id, webhook_id)


@router.post(
    "/{webhook_id}/test",
    response_model=DeliveryObject,
    openapi_extra=audited("organization.updated"),
)
async def test_webhook(webhook_id: str, call: OrgCall = Depends(org_call)) -> DeliveryObject:
    delivery = await _store(call).test(call.org_id, webhook_id)
    call.runtime.wake_webhooks()
    return delivery


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryObject])
async def list_deliveries(
    webhook_id: str, paging: Paging = Depends(), call: OrgCall = Depends(org_call)
) -> Page[DeliveryObject]:
    return await _store(call).deliveries(call.org_id, webhook_id, paging.limit, paging.after)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    response_model=DeliveryObject,
    openapi_extra=audited("organization.updated"),
)
async def replay_delivery(
    webhook_id: str, delivery_id: str, call: OrgCall = Depends(org_call)
) -> DeliveryObject:
    delivery = await _store(call).replay(call.org_id, webhook_id, delivery_id)
    call.runtime.wake_webhooks()
    return delivery
