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
from forge.people.groups import GroupStore
from forge.people.store import PeopleStore
from forge.tenancy.store import TenancyStore
from gateway.deps import admin, runtime
from gateway.permissions import check_plan_feature, held_permissions
from gateway.runtime import GatewayRuntime

ORG_HEADER = "openai-organization"


@dataclass(frozen=True, slots=True)
class OrgCall:
    """An Admin API call: the store, the organisation it is about, who makes it."""

    store: TenancyStore
    org_id: str
    key: KeyInfo
    runtime: GatewayRuntime  # for telling replicas about changed keys
    held: frozenset[str]  # the caller's permissions (gateway.permissions)

    @property
    def people(self) -> PeopleStore:
        if self.runtime.people is None:
            raise ServiceUnavailable("The people store is not configured.", retry_after=5)
        return self.runtime.people

    @property
    def groups(self) -> GroupStore:
        return GroupStore(self.people.sessions)


async def org_call(
    request: Request, key: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> OrgCall:
    if rt.tenancy is None:
        raise ServiceUnavailable("The organization store is not configured.", retry_after=5)
    named = request.headers.get(ORG_HEADER)
    org_id, plan = key.org_id, key.plan
    if named and named != key.org_id:
        if key.role != "platform":
            raise PermissionDenied(
                "This API key belongs to another organization than the one named in "
                "the OpenAI-Organization header.",
                code="organization_mismatch",
            )
        plan = (await rt.tenancy.get_org(named)).plan  # 404 for one that does not exist
        org_id = named
    request.state.org_id = org_id  # the audit log's organisation for this call
    check_plan_feature(request, plan)
    return OrgCall(rt.tenancy, org_id, key, rt, await held_permissions(request, key))


class Paging:
    """OpenAI's list query: ``limit`` (1-100, default 20) and ``after`` (an id)."""

    def __init__(
        self, limit: int = Query(20), after: str | None = Query(None, max_length=64)
    ) -> None:
        self.limit = limit
        self.after = after
