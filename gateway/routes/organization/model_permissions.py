"""``/v1/organization/projects/{project_id}/model_permissions``: a project's allow list
or deny list of models, enforced on every request of its keys (403) and in
``/v1/models``; a change reaches every replica at once."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from forge.tenancy.model_permissions import (
    ModelPermissionStore,
    ModelPermissionsUpdate,
    ProjectModelPermissions,
)
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(
    prefix="/projects/{project_id}/model_permissions",
    tags=["organization"],
    route_class=AuditedRoute,
)


class PermissionsDeleted(BaseModel):
    object: Literal["project.model_permissions.deleted"] = "project.model_permissions.deleted"
    deleted: bool = True


def _store(call: OrgCall) -> ModelPermissionStore:
    return ModelPermissionStore(call.store.sessions)


@router.get("", response_model=ProjectModelPermissions)
async def get_model_permissions(
    project_id: str, call: OrgCall = Depends(org_call)
) -> ProjectModelPermissions:
    return await _store(call).get(call.org_id, project_id)


@router.post("", response_model=ProjectModelPermissions, openapi_extra=audited("project.updated"))
async def set_model_permissions(
    project_id: str, body: ModelPermissionsUpdate, call: OrgCall = Depends(org_call)
) -> ProjectModelPermissions:
    updated = await _store(call).set(call.org_id, project_id, body)
    await call.runtime.keys_changed(None)  # verified keys carry their project's policy
    return updated


@router.delete("", response_model=PermissionsDeleted, openapi_extra=audited("project.updated"))
async def delete_model_permissions(
    project_id: str, call: OrgCall = Depends(org_call)
) -> PermissionsDeleted:
    await _store(call).delete(call.org_id, project_id)
    await call.runtime.keys_changed(None)
    return PermissionsDeleted()
