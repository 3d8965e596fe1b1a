"""The Admin API under ``/v1/organization`` (OpenAI's paths and objects), one module per
resource; each call is scoped to one organisation (``scope.org_call``)."""

from fastapi import APIRouter

from gateway.routes.organization import (
    api_keys,
    audit_logs,
    projects,
    rate_limits,
    service_accounts,
    usage,
)

router = APIRouter(prefix="/v1/organization")
for module in (projects, service_accounts, api_keys, rate_limits, audit_logs, usage):
    router.include_router(module.router)
