"""Organisations, projects, service accounts and their keys, over the database.

Scoping lives here, in the data layer: every method of an organisation's resources takes
its ``org_id`` and every query filters by it, so a route cannot forget to. Something of
another organisation is "not found", exactly as something that does not exist (no hint
that it does). Only the platform operator's methods (``*_org``) span organisations.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.budgets.store import BudgetStore
from forge.db.schema import (
    DEFAULT_ORG_ID,
    ApiKey,
    Organization,
    Project,
    ServiceAccount,
    utcnow,
)
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.keys import KeyStore, redacted
from forge.limits.store import RateLimitStore
from forge.tenancy.objects import (
    AdminApiKeyCreated,
    AdminApiKeyObject,
    OrganizationObject,
    Page,
    ProjectApiKeyObject,
    ProjectObject,
    ServiceAccountCreated,
    ServiceAccountKey,
    ServiceAccountObject,
    unix,
)
from forge.tenancy.paging import Order, as_page, page_rows
from forge.tenancy.plans import PlanName


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _organization(row: Organization) -> OrganizationObject:
    return OrganizationObject(
        id=row.id,
        name=row.name,
        plan=row.plan,
        status=row.status,
        created_at=unix(row.created_at) or 0,
        parent_id=row.parent_id,
    )


def _project(row: Project) -> ProjectObject:
    return ProjectObject(
        id=row.id,
        name=row.name,
        created_at=unix(row.created_at) or 0,
        archived_at=unix(row.archived_at),
        status=row.status,
    )


def _service_account(row: ServiceAccount) -> ServiceAccountObject:
    return ServiceAccountObject(
        id=row.id,
        name=row.name,
        role=row.role,
        created_at=unix(row.created_at) or 0,
    )


def _project_key(row: ApiKey, account: ServiceAccount | None) -> ProjectApiKeyObject:
    owner: dict[str, Any] = {"type": row.owner_type or "service_account"}
    if account is not None:
        owner["service_account"] = {
            "id": account.id,
            "name": account.name,
            "created_at": unix(account.created_at),
            "role": account.role,
        }
    return ProjectApiKeyObject(
        redacted_value=redacted(row.prefix),
        name=row.name,
        created_at=unix(row.created_at) or 0,
        id=row.id,
        owner_project_access="active" if row.revoked_at is None else "inactive",
        owner=owner,
    )


def _admin_key(row: ApiKey) -> AdminApiKeyObject:
    return AdminApiKeyObject(
        id=row.id,
        name=row.name,
        redacted_value=redacted(row.prefix),
        created_at=unix(row.created_at) or 0,
        expires_at=unix(row.expires_at),
        owner=(
            {"type": "user", "object": "organization.user", "id": row.owner_id}
            if row.owner_type == "user"
            else {  # made with the organisation: no person owns it
                "type": "organization",
                "object": "organization",
                "id": row.org_id,
                "name": "organization admin",
                "role": "owner",
            }
        ),
    )


async def project_of(
    s: AsyncSession, org_id: str, project_id: str, active: bool = False
) -> Project:
    """``org_id``'s project (404 for another's); ``active``: 400 when it is archived."""
    row = await s.scalar(select(Project).where(Project.id == project_id, Project.org_id == org_id))
    if row is None:
        raise NotFound(f"No project with id {project_id!r}.", param="project_id")
    if active and row.status != "active":
        raise InvalidRequest(f"The project {project_id!r} is archived.", param="project_id")
    return row


class TenancyStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.keys = KeyStore(sessions)
        self.limits = RateLimitStore(sessions)
        self.budgets = BudgetStore(sessions)
        self.sessions = sessions

    # ------------------------------------------------------------ the operator's

    async def create_org(
        self, name: str, plan: PlanName, parent_id: str | None = None
    ) -> tuple[OrganizationObject, str]:
        """A new organisation (``parent_id``: a sub-organisation of that one) with its
        default project and a first admin key (returned, shown once)."""
        org = Organization(
            id=new_id("org-"),
            name=name,
            plan=plan,
            status="active",
            created_at=utcnow(),
            default_project_id=new_id("proj_"),
            parent_id=parent_id,
        )
        project = Project(
            id=org.default_project_id,
            org_id=org.id,
            name="Default project",
            status="active",
            created_at=org.created_at,
        )
        try:
            async with self._sessions() as s, s.begin():
                s.add(org)
                await s.flush()
                s.add(project)
        except IntegrityError:
            raise Conflict(
                f"An organization named {name!r} already exists.", param="name"
            ) from None
        created = await self.keys.create_key("admin", "admin", org_id=org.id, project_id=project.id)
        return _organization(org), created.key

    async def sub_organizations(self, parent_id: str) -> list[OrganizationObject]:
        """The organisations ``parent_id`` resells to, oldest first (deleted ones left out)."""
        query = (
            select(Organization)
            .where(Organization.parent_id == parent_id, Organization.status != "deleted")
            .order_by(Organization.created_at, Organization.id)
        )
        async with self._sessions() as s:
            return [_organization(r) for r in await s.scalars(query)]

    async def sub_organization(self, parent_id: str, org_id: str) -> OrganizationObject:
        """One of ``parent_id``'s sub-organisations (404 for any other organisation)."""
        async with self._sessions() as s:
            row = await s.scalar(
                select(Organization).where(
                    Organization.id == org_id,
                    Organization.parent_id == parent_id,
                    Organization.status != "deleted",
                )
            )
        if row is None:
            raise NotFound(f"No sub-organization with id {org_id!r}.", param="org_id")
        return _organization(row)

    async def list_orgs(
        self, limit: int = 20, after: str | None = None
    ) -> Page[OrganizationObject]:
        async with self._sessions() as s:
            rows, more = await page_rows(s, Organization, [], limit, after)
        return as_page([_organization(r) for r in rows], more)

    async def get_org(self, org_id: str) -> OrganizationObject:
        async with self._sessions() as s:
            return _organization(await self._org(s, org_id))

    async def set_org(
        self, org_id: str, *, status: str | None = None, plan: PlanName | None = None
    ) -> OrganizationObject:
        """Suspend, reactivate, delete (status) or re-plan an organisation. The
        platform's own (the default) cannot be suspended or deleted."""
        if status is not None and status != "active" and org_id == DEFAULT_ORG_ID:
            raise Conflict(
                "The default organization holds the platform operator's key; it cannot be "
                f"{status}.",
                param="org_id",
            )
        async with self._sessions() as s, s.begin():
            org = await self._org(s, org_id)
            if org.status == "deleted":
                raise NotFound(f"No organization with id {org_id!r}.", param="org_id")
            if status is not None:
                org.status = status
            if plan is not None:
                org.plan = plan
            return _organization(org)

    async def _org(self, s: AsyncSession, org_id: str) -> Organization:
        org = await s.get(Organization, org_id)
        if org is None:
            raise NotFound(f"No organization with id {org_id!r}.", param="org_id")
        return org

    # ------------------------------------------------------------ projects

    async def create_project(self, org_id: str, name: str) -> ProjectObject:
        row = Project(
            id=new_id("proj_"), org_id=org_id, name=name, status="active", created_at=utcnow()
        )
        try:
            async with self._sessions() as s, s.begin():
                s.add(row)
        except IntegrityError:
            raise Conflict(f"A project named {name!r} already exists.", param="name") from None
        return _project(row)

    async def list_projects(
        self, org_id: str, limit: int = 20, after: str | None = None, include_archived: bool = False
    ) -> Page[ProjectObject]:
        where = [Project.org_id == org_id]
        if not include_archived:
            where.append(Project.status == "active")
        async with self._sessions() as s:
            rows, more = await page_rows(s, Project, where, limit, after)
        return as_page([_project(r) for r in rows], more)

    async def get_project(self, org_id: str, project_id: str) -> ProjectObject:
        async with self._sessions() as s:
            return _project(await self._project(s, org_id, project_id))

    async def rename_project(self, org_id: str, project_id: str, name: str) -> ProjectObject:
        try:
            async with self._sessions() as s, s.begin():
                row = await self._project(s, org_id, project_id)
                row.name = name
                await s.flush()
                return _project(row)
        except IntegrityError:
            raise Conflict(f"A project named {name!r} already exists.", param="name") from None

    async def archive_project(self, org_id: str, project_id: str) -> ProjectObject:
        """Archived: its keys stop working, it is hidden from lists by default, nothing
        is deleted. The default project (the admin keys') cannot be archived."""
        async with self._sessions() as s, s.begin():
            row = await self._project(s, org_id, project_id)
            org = await self._org(s, org_id)
            if org.default_project_id == project_id:
                raise InvalidRequest("The default project cannot be archived.", param="project_id")
            if row.status != "archived":
                row.status, row.archived_at = "archived", utcnow()
            return _project(row)

    async def _project(
        self, s: AsyncSession, org_id: str, project_id: str, active: bool = False
    ) -> Project:
        return await project_of(s, org_id, project_id, active)

    # ------------------------------------------------------------ service accounts

    async def create_service_account(
        self, org_id: str, project_id: str, name: str, with_key: bool = True
    ) -> ServiceAccountCreated:
        async with self._sessions() as s, s.begin():
            await self._project(s, org_id, project_id, active=True)
            row = ServiceAccount(
                id=new_id("svc_acct_"),
                org_id=org_id,
                project_id=project_id,
                name=name,
                role="member",
                created_at=utcnow(),
            )
            s.add(row)
        key = await self._account_key(row, f"{name} key") if with_key else None
        return ServiceAccountCreated(**_service_account(row).model_dump(), api_key=key)

    async def create_service_account_key(
        self, org_id: str, project_id: str, account_id: str, name: str | None
    ) -> ServiceAccountKey:
        async with self._sessions() as s:
            await self._project(s, org_id, project_id, active=True)
            row = await self._account(s, org_id, project_id, account_id)
        return await self._account_key(row, name or f"{row.name} key")

    async def _account_key(self, account: ServiceAccount, name: str) -> ServiceAccountKey:
        created = await self.keys.create_key(
            name,
            "user",
            org_id=account.org_id,
            project_id=account.project_id,
            owner_type="service_account",
            owner_id=account.id,
        )
        return ServiceAccountKey(
            value=created.key,
            name=name,
            created_at=unix(created.info.created_at) or 0,
            id=created.info.id,
        )

    async def list_service_accounts(
        self, org_id: str, project_id: str, limit: int = 20, after: str | None = None
    ) -> Page[ServiceAccountObject]:
        where = [ServiceAccount.org_id == org_id, ServiceAccount.project_id == project_id]
        async with self._sessions() as s:
            await self._project(s, org_id, project_id)
            rows, more = await page_rows(s, ServiceAccount, where, limit, after)
        return as_page([_service_account(r) for r in rows], more)

    async def get_service_account(
        self, org_id: str, project_id: str, account_id: str
    ) -> ServiceAccountObject:
        async with self._sessions() as s:
            return _service_account(await self._account(s, org_id, project_id, account_id))

    async def delete_service_account(
        self, org_id: str, project_id: str, account_id: str
    ) -> list[str]:
        """Delete the account and revoke its keys; returns their ids (to forget)."""
        async with self._sessions() as s, s.begin():
            row = await self._account(s, org_id, project_id, account_id)
            keys = list(
                await s.scalars(
                    select(ApiKey.id).where(
                        ApiKey.org_id == org_id,
                        ApiKey.owner_id == account_id,
                        ApiKey.revoked_at.is_(None),
                    )
                )
            )
            await s.execute(update(ApiKey).where(ApiKey.id.in_(keys)).values(revoked_at=utcnow()))
            await s.delete(row)
        return keys

    async def _account(
        self, s: AsyncSession, org_id: str, project_id: str, account_id: str
    ) -> ServiceAccount:
        row = await s.scalar(
            select(ServiceAccount).where(
                ServiceAccount.id == account_id,
                ServiceAccount.org_id == org_id,
                ServiceAccount.project_id == project_id,
            )
        )
        if row is None:
            raise NotFound(
                f"No service account with id {account_id!r}.", param="service_account_id"
            )
        return row

    # ------------------------------------------------------------ project API keys

    def _project_keys(self, org_id: str, project_id: str) -> list[Any]:
        return [
            ApiKey.org_id == org_id,
            ApiKey.project_id == project_id,
            ApiKey.role == "user",
            ApiKey.revoked_at.is_(None),
        ]

    async def list_project_keys(
        self, org_id: str, project_id: str, limit: int = 20, after: str | None = None
    ) -> Page[ProjectApiKeyObject]:
        async with self._sessions() as s:
            await self._project(s, org_id, project_id)
            rows, more = await page_rows(
                s, ApiKey, self._project_keys(org_id, project_id), limit, after
            )
            accounts = await self._accounts_of(s, rows)
        return as_page([_project_key(r, accounts.get(r.owner_id or "")) for r in rows], more)

    async def get_project_key(
        self, org_id: str, project_id: str, key_id: str
    ) -> ProjectApiKeyObject:
        async with self._sessions() as s:
            row = await self._key(s, [*self._project_keys(org_id, project_id), ApiKey.id == key_id])
            accounts = await self._accounts_of(s, [row])
        return _project_key(row, accounts.get(row.owner_id or ""))

    async def delete_project_key(self, org_id: str, project_id: str, key_id: str) -> None:
        async with self._sessions() as s, s.begin():
            row = await self._key(s, [*self._project_keys(org_id, project_id), ApiKey.id == key_id])
            row.revoked_at = utcnow()

    async def _accounts_of(
        self, s: AsyncSession, rows: Sequence[ApiKey]
    ) -> dict[str, ServiceAccount]:
        ids = {r.owner_id for r in rows if r.owner_type == "service_account" and r.owner_id}
        if not ids:
            return {}
        found = await s.scalars(select(ServiceAccount).where(ServiceAccount.id.in_(ids)))
        return {a.id: a for a in found}

    async def _key(self, s: AsyncSession, where: list[Any]) -> ApiKey:
        row = await s.scalar(select(ApiKey).where(*where))
        if row is None:
            raise NotFound("No such API key.", param="key_id")
        return row

    # ------------------------------------------------------------ admin API keys

    def _admin_keys(self, org_id: str) -> list[Any]:
        return [ApiKey.org_id == org_id, ApiKey.role == "admin", ApiKey.revoked_at.is_(None)]

    async def create_admin_key(
        self,
        org_id: str,
        name: str,
        expires_in_seconds: int | None = None,
        owner_user_id: str | None = None,
    ) -> AdminApiKeyCreated:
        """An admin key; one a person's key makes is that person's too (it acts with
        their role, never above it)."""
        async with self._sessions() as s:
            org = await self._org(s, org_id)
        expires = utcnow() + timedelta(seconds=expires_in_seconds) if expires_in_seconds else None
        created = await self.keys.create_key(
            name,
            "admin",
            org_id=org_id,
            project_id=org.default_project_id,
            expires_at=expires,
            owner_type="user" if owner_user_id else None,
            owner_id=owner_user_id,
        )
        async with self._sessions() as s:
            row = await self._key(s, [ApiKey.id == created.info.id])
        return AdminApiKeyCreated(**_admin_key(row).model_dump(), value=created.key)

    async def list_admin_keys(
        self, org_id: str, limit: int = 20, after: str | None = None, order: Order = "asc"
    ) -> Page[AdminApiKeyObject]:
        async with self._sessions() as s:
            rows, more = await page_rows(s, ApiKey, self._admin_keys(org_id), limit, after, order)
        return as_page([_admin_key(r) for r in rows], more)

    async def get_admin_key(self, org_id: str, key_id: str) -> AdminApiKeyObject:
        async with self._sessions() as s:
            return _admin_key(await self._key(s, [*self._admin_keys(org_id), ApiKey.id == key_id]))

    async def delete_admin_key(self, org_id: str, key_id: str) -> None:
        async with self._sessions() as s, s.begin():
            row = await self._key(s, [*self._admin_keys(org_id), ApiKey.id == key_id])
            row.revoked_at = utcnow()
