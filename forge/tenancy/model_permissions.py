"""A project's model permissions (OpenAI's ``project.model_permissions``) in the
database; the policy itself, as keys carry it, is ``forge.tenancy.policy``."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import ModelPermission, utcnow
from forge.errors import InvalidRequest
from forge.tenancy.policy import Mode, ModelPolicy
from forge.tenancy.store import project_of

MAX_MODELS = 1000


class ProjectModelPermissions(BaseModel):
    object: Literal["project.model_permissions"] = "project.model_permissions"
    mode: Mode
    model_ids: list[str]


class ModelPermissionsUpdate(BaseModel):
    mode: Mode
    model_ids: list[str] = Field(max_length=MAX_MODELS)


UNRESTRICTED = ProjectModelPermissions(mode="deny_list", model_ids=[])


class ModelPermissionStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, org_id: str, project_id: str) -> ProjectModelPermissions:
        """The project's policy; a project without one may use every model (an empty
        deny list)."""
        async with self._sessions() as s:
            await project_of(s, org_id, project_id)
            row = await s.get(ModelPermission, project_id)
        if row is None:
            return UNRESTRICTED
        return ProjectModelPermissions(mode=row.mode, model_ids=json.loads(row.model_ids))

    async def set(
        self, org_id: str, project_id: str, change: ModelPermissionsUpdate
    ) -> ProjectModelPermissions:
        names = list(dict.fromkeys(name.strip() for name in change.model_ids))
        if any(not name for name in names):
            raise InvalidRequest("A model id is empty.", param="model_ids")
        async with self._sessions() as s, s.begin():
            await project_of(s, org_id, project_id, active=True)
            row = await s.get(ModelPermission, project_id)
            if row is None:
                row = ModelPermission(project_id=project_id, org_id=org_id)
                s.add(row)
            row.mode, row.model_ids, row.updated_at = change.mode, json.dumps(names), utcnow()
        return ProjectModelPermissions(mode=change.mode, model_ids=names)

    async def delete(self, org_id: str, project_id: str) -> None:
        """Back to every model."""
        async with self._sessions() as s, s.begin():
            await project_of(s, org_id, project_id)
            await s.execute(delete(ModelPermission).where(ModelPermission.project_id == project_id))

    async def policy(self, project_id: str) -> ModelPolicy | None:
        async with self._sessions() as s:
            row = await s.scalar(
                select(ModelPermission).where(ModelPermission.project_id == project_id)
            )
        return None if row is None else ModelPolicy.stored(row.mode, row.model_ids)
