"""The Admin API under ``/v1/organization`` (OpenAI's paths and objects), one module per
resource; each call is scoped to one organisation (``scope.org_call``)."""

from fastapi import APIRouter

from gateway.routes.organization import (
    api_keys,
    audit_logs,
    compliance,
    data_retention,
    groups,
    invites,
    login_policy,
    model_permissions,
    project_users,
    projects,
    provider_credentials,
    rate_limits,
    roles,
    scim_tokens,
    service_accounts,
    spend_alerts,
    sso_connections,
    sub_organizations,
    usage,
    usage_export,
    users,
    webhooks,
)

router = APIRouter(prefix="/v1/organization")
for module in (
    projects,
    service_accounts,
    project_users,
    api_keys,
    rate_limits,
    model_permissions,
    provider_credentials,
    spend_alerts,
    webhooks,
    sso_connections,
    scim_tokens,
    login_policy,
    data_retention,
    users,
    invites,
    roles,
    groups,
    audit_logs,
    compliance,
    usage_export,  # before usage: /usage/export is not a report
    usage,
    sub_organizations,
):
    router.include_router(module.router)
