"""Who is calling the Admin API, and for which organisation.

An organisation's admin key acts on its own organisation. The platform operator's key
acts on its own (the default) organisation, or on the one its ``OpenAI-Organization``
header names (as the openai SDK's ``organization=`` sends it). An admin key naming
another organisation gets the same 403 whatever it names: no hint of what exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Query, Request

from forge.errors import PermissionDenied, ServiceUnavailable
from forge.keys import KeyInfo
from forge.tenancy.store import TenancyStore
from gateway.deps import admin, runtime
from gateway.runtime import GatewayRuntime

ORG_HEADER = "openai-organization"


@dataclass(frozen=True, slots=True)
class OrgCall:
    """An Admin API call: the store, the organisation it is about, who makes it."""

    store: TenancyStore
    org_id: str
    key: KeyInfo
    runtime: GatewayRuntime  # for telling replicas about changed keys


async def org_call(
    request: Request, key: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> OrgCall:
    if rt.tenancy is None:
        raise ServiceUnavailable("The organization store is not configured.", retry_after=5)
    named = request.headers.get(ORG_HEADER)
    org_id = key.org_id
    if named and named != key.org_id:
        if key.role != "platform":
            raise PermissionDenied(
                "This API key belongs to another organization than the one named in "
                "the OpenAI-Organization header.",
                code="organization_mismatch",
            )
        await rt.tenancy.get_org(named)  # 404 for one that does not exist
        org_id = named
    request.state.org_id = org_id  # the audit log's organisation for this call
    return OrgCall(rt.tenancy, org_id, key, rt)


class Paging:
    """OpenAI's list query: ``limit`` (1-100, default 20) and ``after`` (an id)."""

    def __init__(
        self, limit: int = Query(20), after: str | None = Query(None, max_length=64)
    ) -> None:
        self.limit = limit
        self.after = after
