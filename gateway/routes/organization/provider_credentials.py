"""``/v1/organization/projects/{project_id}/provider_credentials``: bring your own key.

A project sets its own key for one of the platform's providers; the project's requests to
that provider then go out with it instead of the platform's. Keys are sealed at rest
(AES-GCM, forge.credentials), shown back only redacted, and never logged or audited; a
change reaches every replica at once. Not an OpenAI path: OpenAI has no such thing.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from forge.config import KEYED_TYPES
from forge.credentials.sealing import Keyring
from forge.credentials.store import (
    CredentialCreate,
    CredentialDeleted,
    CredentialStore,
    ProviderCredentialObject,
)
from forge.errors import InvalidRequest, ServiceUnavailable
from forge.tenancy.objects import Page
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(
    prefix="/projects/{project_id}/provider_credentials",
    tags=["organization"],
    route_class=AuditedRoute,
)


def _store(call: OrgCall) -> CredentialStore:
    keyring: Keyring | None = call.runtime.keyring
    if keyring is None:
        raise ServiceUnavailable("This gateway keeps no provider credentials (no keyring).")
    return CredentialStore(call.store.sessions, keyring)


def _check_provider(call: OrgCall, provider: str) -> None:
    types = {p.name: p.type for p in call.runtime.config.providers}
    if provider not in types:
        known = ", ".join(sorted(n for n, t in types.items() if t in KEYED_TYPES)) or "none"
        raise InvalidRequest(
            f"No provider named {provider!r}; providers that take a key: {known}.",
            param="provider",
            code="invalid_value",
        )
    if types[provider] not in KEYED_TYPES:
        raise InvalidRequest(
            f"Provider {provider!r} is one of the platform's own models ({types[provider]}): "
            "it takes no key.",
            param="provider",
            code="invalid_value",
        )


@router.get("", response_model=Page[ProviderCredentialObject])
async def list_provider_credentials(
    project_id: str, paging: Paging = Depends(), call: OrgCall = Depends(org_call)
) -> Page[ProviderCredentialObject]:
    return await _store(call).list(call.org_id, project_id, paging.limit, paging.after)


@router.post("", response_model=ProviderCredentialObject, openapi_extra=audited("project.updated"))
async def set_provider_credential(
    project_id: str, body: CredentialCreate, call: OrgCall = Depends(org_call)
) -> ProviderCredentialObject:
    _check_provider(call, body.provider)
    created = await _store(call).put(call.org_id, project_id, body.provider, body.api_key)
    await call.runtime.keys_changed(None)  # verified keys carry their project's credentials
    return created


@router.delete(
    "/{credential_id}", response_model=CredentialDeleted, openapi_extra=audited("project.updated")
)
async def delete_provider_credential(
    project_id: str, credential_id: str, call: OrgCall = Depends(org_call)
) -> CredentialDeleted:
    await _store(call).delete(call.org_id, project_id, credential_id)
    await call.runtime.keys_changed(None)
    return CredentialDeleted(id=credential_id)
