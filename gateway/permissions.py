"""Which permission each admin route needs, derived from its path, declared once.

``RESOURCES_BY_PATH`` maps the admin paths to the resource they act on (the first
prefix that matches wins); a GET needs ``<resource>.read``, anything else
``<resource>.write`` (``forge.people.permissions``). The ``admin`` dependency checks it on
every admin route, so a new route is governed without a line of its own, and a route no
prefix covers is refused outright (a test walks the app for any such).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from forge.errors import PermissionDenied
from forge.keys import KeyInfo
from forge.people.permissions import PERMISSIONS, permission_for, require
from forge.tenancy.plans import Feature, require_feature
from gateway.runtime import GatewayRuntime

ORG = "/v1/organization"
RESOURCES_BY_PATH: tuple[tuple[str, str], ...] = (
    (f"{ORG}/projects/{{project_id}}/api_keys", "api.organization.projects.api_keys"),
    (f"{ORG}/projects", "api.organization.projects"),
    (f"{ORG}/users", "api.organization.users"),
    (f"{ORG}/invites", "api.organization.invites"),
    (f"{ORG}/roles", "api.organization.roles"),
    (f"{ORG}/groups", "api.groups"),
    (f"{ORG}/admin_api_keys", "api.organization.admin_api_keys"),
    (f"{ORG}/audit_logs", "api.organization.audit_logs"),
    (f"{ORG}/compliance", "api.organization.audit_logs"),
    (f"{ORG}/usage", "api.organization.usage"),
    (f"{ORG}/costs", "api.organization.usage"),
    (f"{ORG}/spend_alerts", "api.organization.usage"),
    (f"{ORG}/webhooks", "api.organization.webhooks"),
    # who signs in, as whom: as much as an admin key
    (f"{ORG}/sso_connections", "api.organization.admin_api_keys"),
    (f"{ORG}/scim_tokens", "api.organization.admin_api_keys"),
    (f"{ORG}/login_policy", "api.organization.admin_api_keys"),
    (f"{ORG}/data_retention", "api.organization.admin_api_keys"),
    # creating a customer's organisation mints its admin key: as much as an admin key here
    (f"{ORG}/sub_organizations", "api.organization.admin_api_keys"),
    ("/admin/keys", "api.organization.admin_api_keys"),
    ("/admin/adapters", "api.organization.projects"),
    ("/admin/rate_limits", "api.organization.projects"),
    ("/admin/budgets", "api.organization.projects"),
    ("/admin/audit", "api.organization.audit_logs"),
    ("/admin/experiments", "api.organization.usage"),
)


_MATCHERS = tuple(
    (re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(prefix)) + "(/|$)"), resource)
    for prefix, resource in RESOURCES_BY_PATH
)


def resource_of(path: str) -> str | None:
    """The resource of a request path or a route's path template."""
    for pattern, resource in _MATCHERS:
        if pattern.match(path):
            return resource
    return None


async def held_permissions(request: Request, key: KeyInfo) -> frozenset[str]:
    """The caller's permissions (kept on the request): a person's key acts with its
    owner's; a key no person owns holds them all."""
    held: frozenset[str] | None = getattr(request.state, "held", None)
    if held is not None:
        return held
    held = PERMISSIONS
    if key.owner_type == "user" and key.owner_id and key.role != "platform":
        rt: GatewayRuntime = request.app.state.runtime
        held = (
            frozenset()
            if rt.people is None
            else await rt.people.permissions_of(key.org_id, key.owner_id)
        )
    request.state.held = held
    return held


async def check_route_permission(request: Request, key: KeyInfo) -> None:
    resource = resource_of(request.url.path)
    if resource is None:
        raise PermissionDenied(f"No permission governs {request.url.path}; refused.")
    require(await held_permissions(request, key), permission_for(resource, request.method))


PLAN_FEATURE = "x-plan-feature"


def in_plan(feature: Feature) -> dict[str, Any]:
    """``openapi_extra`` of a route that only plans with ``feature`` may call (403 naming
    the plan that has it otherwise; checked by ``scope.org_call``)."""
    return {PLAN_FEATURE: feature}


def check_plan_feature(request: Request, plan: str | None) -> None:
    extra = getattr(request.scope.get("route"), "openapi_extra", None) or {}
    feature = extra.get(PLAN_FEATURE)
    if feature is not None and plan is not None:
        require_feature(plan, feature)
