"""Users, invitations, project memberships, custom roles and role assignments, over the
database, each scoped to its organisation in every query (as ``forge.tenancy.store``):
another organisation's is "not found".

Every change that gives permissions takes the caller's (``held``) and refuses to give
more (``permissions.check_grant``); changing a person whose permissions exceed the
caller's is refused the same way, so no one lowers their betters either. An organisation
keeps at least one owner.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import (
    ApiKey,
    CustomRole,
    GroupMember,
    Invite,
    Organization,
    Project,
    ProjectMember,
    RoleAssignment,
    User,
    aware,
    utcnow,
)
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.keys import CreatedKey, KeyStore
from forge.people.assignments import assigned, assignment, unassign
from forge.people.objects import (
    AssignedRole,
    CursorPage,
    InviteCreated,
    InviteObject,
    InviteProject,
    ProjectUserObject,
    RoleObject,
    UserObject,
    UserRoleAssignment,
)
from forge.people.permissions import (
    ORG_RESOURCE,
    ORG_ROLE_IDS,
    PREDEFINED,
    OrgRoleName,
    PredefinedRole,
    ProjectRoleName,
    check_grant,
    check_known,
    org_role_permissions,
    project_role_permissions,
)
from forge.tenancy.objects import Page, unix
from forge.tenancy.paging import as_page, page_rows
from forge.tenancy.store import project_of

INVITE_TTL = timedelta(days=7)
INVITE_TOKEN_PREFIX = "inv-"
MAX_ROLES = 1000


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normal_email(email: str) -> str:
    """An address as stored and compared: trimmed, lower case (400 unless it looks like
    one)."""
    address = email.strip().lower()
    local, at, domain = address.partition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in address):
        raise InvalidRequest(f"Invalid email address {email!r}.", param="email")
    return address


def _user(row: User) -> UserObject:
    return UserObject(
        id=row.id,
        name=row.name,
        email=row.email,
        role=row.role,
        added_at=unix(row.created_at) or 0,
    )


def _invite(row: Invite) -> InviteObject:
    expires = aware(row.expires_at)
    status = (
        "accepted"
        if row.accepted_at is not None
        else "expired"
        if expires is not None and expires <= utcnow()
        else "pending"
    )
    return InviteObject(
        id=row.id,
        email=row.email,
        role=row.role,
        status=status,
        created_at=unix(row.created_at) or 0,
        expires_at=unix(expires),
        accepted_at=unix(row.accepted_at),
        projects=[InviteProject(**p) for p in json.loads(row.projects)],
    )


def _member(member: ProjectMember, user: User) -> ProjectUserObject:
    return ProjectUserObject(
        id=user.id,
        name=user.name,
        email=user.email,
        role=member.role,
        added_at=unix(member.created_at) or 0,
    )


def _predefined(role: PredefinedRole) -> RoleObject:
    return RoleObject(
        id=role.id,
        name=role.name,
        description=role.description,
        permissions=sorted(role.permissions),
        resource_type=role.resource_type,
        predefined_role=True,
    )


def custom_role(row: CustomRole) -> RoleObject:
    return RoleObject(
        id=row.id,
        name=row.name,
        description=row.description,
        permissions=json.loads(row.permissions),
        resource_type=row.resource_type,
        predefined_role=False,
    )


def assigned_role(role: RoleObject, when: datetime | None) -> AssignedRole:
    return AssignedRole(
        id=role.id,
        name=role.name,
        permissions=role.permissions,
        resource_type=role.resource_type,
        predefined_role=role.predefined_role,
        description=role.description,
        created_at=unix(when),
        updated_at=unix(when),
    )


async def _held_by(s: AsyncSession, user: User) -> frozenset[str]:
    groups = select(GroupMember.group_id).where(
        GroupMember.user_id == user.id, GroupMember.org_id == user.org_id
    )
    direct = (RoleAssignment.principal_type == "user") & (RoleAssignment.principal_id == user.id)
    via_group = (RoleAssignment.principal_type == "group") & RoleAssignment.principal_id.in_(groups)
    granted = select(RoleAssignment.role_id).where(
        RoleAssignment.org_id == user.org_id, direct | via_group
    )
    listed = await s.scalars(
        select(CustomRole.permissions).where(
            CustomRole.org_id == user.org_id, CustomRole.id.in_(granted)
        )
    )
    held = set(org_role_permissions(user.role))
    for permissions in listed:
        held.update(json.loads(permissions))
    return frozenset(held)


def cursor_page(items: Sequence[Any], limit: int, after: str | None) -> CursorPage[Any]:
    """A page of an in-memory list (roles: few per organisation), after the id ``after``."""
    if not 1 <= limit <= MAX_ROLES:
        raise InvalidRequest(f"Invalid 'limit': {limit}; expected 1 to {MAX_ROLES}.", param="limit")
    start = 0
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            raise InvalidRequest(
                f"Invalid 'after': {after!r} is not an id from this list.",
                param="after",
                code="invalid_value",
            )
        start = ids.index(after) + 1
    page = list(items[start : start + limit])
    more = start + limit < len(items)
    return CursorPage(data=page, has_more=more, next=page[-1].id if more and page else None)


async def user_of(s: AsyncSession, org_id: str, user_id: str) -> User:
    row = await s.scalar(select(User).where(User.id == user_id, User.org_id == org_id))
    if row is None:
        raise NotFound(f"No user with id {user_id!r}.", param="user_id")
    return row


async def role_of(s: AsyncSession, org_id: str, role_id: str) -> CustomRole:
    """``org_id``'s custom role (404 for another's)."""
    row = await s.scalar(
        select(CustomRole).where(CustomRole.id == role_id, CustomRole.org_id == org_id)
    )
    if row is None:
        raise NotFound(f"No role with id {role_id!r}.", param="role_id")
    return row


class PeopleStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = self.sessions = sessions
        self.keys = KeyStore(sessions)

    # ------------------------------------------------------------ permissions

    async def permissions_of(self, org_id: str, user_id: str) -> frozenset[str]:
        """A person's permissions: their organisation role's and their custom roles',
        given to them or to a group of theirs; none for someone not (or no longer) in
        the organisation."""
        async with self._sessions() as s:
            user = await s.scalar(select(User).where(User.id == user_id, User.org_id == org_id))
            if user is None or not user.active:  # deactivated (SCIM): nothing
                return frozenset()
            return await _held_by(s, user)

    # ------------------------------------------------------------ users

    async def list_users(
        self,
        org_id: str,
        limit: int = 20,
        after: str | None = None,
        emails: list[str] | None = None,
    ) -> Page[UserObject]:
        where: list[Any] = [User.org_id == org_id]
        if emails:
            where.append(User.email.in_([e.strip().lower() for e in emails]))
        async with self._sessions() as s:
            rows, more = await page_rows(s, User, where, limit, after)
        return as_page([_user(r) for r in rows], more)

    async def get_user(self, org_id: str, user_id: str) -> UserObject:
        async with self._sessions() as s:
            return _user(await user_of(s, org_id, user_id))

    async def set_user_role(
        self, org_id: str, user_id: str, role: OrgRoleName, held: frozenset[str]
    ) -> UserObject:
        check_grant(held, org_role_permissions(role), f"the role {role!r}")
        async with self._sessions() as s, s.begin():
            user = await user_of(s, org_id, user_id)
            await self._check_above(s, org_id, user, held)
            if user.role == "owner" and role != "owner":
                await self._keep_an_owner(s, org_id)
            user.role = role
            return _user(user)

    async def delete_user(self, org_id: str, user_id: str, held: frozenset[str]) -> list[str]:
        """Remove a person: their memberships and role assignments go, their keys are
        revoked (the ids, for the replicas to forget)."""
        async with self._sessions() as s, s.begin():
            user = await user_of(s, org_id, user_id)
            await self._check_above(s, org_id, user, held)
            if user.role == "owner":
                await self._keep_an_owner(s, org_id)
            keys = list(
                await s.scalars(
                    select(ApiKey.id).where(
                        ApiKey.org_id == org_id,
                        ApiKey.owner_type == "user",
                        ApiKey.owner_id == user_id,
                        ApiKey.revoked_at.is_(None),
                    )
                )
            )
            if keys:
                await s.execute(
                    update(ApiKey).where(ApiKey.id.in_(keys)).values(revoked_at=utcnow())
                )
            for table, column in (
                (ProjectMember, ProjectMember.user_id),
                (GroupMember, GroupMember.user_id),
            ):
                await s.execute(delete(table).where(table.org_id == org_id, column == user_id))
            await s.execute(unassign(org_id, "user", user_id))
            await s.delete(user)
        return keys

    async def _check_above(
        self, s: AsyncSession, org_id: str, user: User, held: frozenset[str]
    ) -> None:
        """403 when ``user`` holds permissions the caller lacks."""
        check_grant(held, await _held_by(s, user), f"changes to {user.id!r}")

    async def _keep_an_owner(self, s: AsyncSession, org_id: str) -> None:
        owners = await s.scalar(
            select(func.count())
            .select_from(User)
            .where(User.org_id == org_id, User.role == "owner")
        )
        if (owners or 0) <= 1:
            raise Conflict(
                "The organization's last owner cannot be removed or made a reader; make "
                "another user an owner first.",
                code="last_owner",
            )

    # ------------------------------------------------------------ invitations

    async def create_invite(
        self,
        org_id: str,
        email: str,
        role: OrgRoleName,
        projects: list[InviteProject] | None,
        held: frozenset[str],
        ttl: timedelta = INVITE_TTL,
    ) -> InviteCreated:
        """An invitation for ``email``; without ``projects`` the new user joins the
        organisation's default project as a member (OpenAI's legacy behaviour)."""
        check_grant(held, org_role_permissions(role), f"the role {role!r}")
        address = normal_email(email)
        token = INVITE_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        async with self._sessions() as s, s.begin():
            org = await s.get(Organization, org_id)
            if org is None:
                raise NotFound(f"No organization with id {org_id!r}.", param="org_id")
            if projects is None:
                projects = [InviteProject(id=org.default_project_id, role="member")]
            for project in projects:
                check_grant(
                    held,
                    project_role_permissions(project.role),
                    f"the project role {project.role!r}",
                )
                await project_of(s, org_id, project.id)
            if await s.scalar(select(User.id).where(User.org_id == org_id, User.email == address)):
                raise Conflict(f"{address} is already a member.", param="email")
            pending = await s.scalar(
                select(Invite.id).where(
                    Invite.org_id == org_id,
                    Invite.email == address,
                    Invite.accepted_at.is_(None),
                    Invite.expires_at > now,
                )
            )
            if pending:
                raise Conflict(
                    f"{address} already has a pending invitation ({pending}).", param="email"
                )
            row = Invite(
                id=new_id("invite-"),
                org_id=org_id,
                email=address,
                role=role,
                projects=json.dumps([p.model_dump() for p in projects]),
                token_hash=_hash(token),
                created_at=now,
                expires_at=now + ttl,
            )
            s.add(row)
        return InviteCreated(**_invite(row).model_dump(), token=token)

    async def list_invites(
        self, org_id: str, limit: int = 20, after: str | None = None
    ) -> Page[InviteObject]:
        async with self._sessions() as s:
            rows, more = await page_rows(s, Invite, [Invite.org_id == org_id], limit, after)
        return as_page([_invite(r) for r in rows], more)

    async def get_invite(self, org_id: str, invite_id: str) -> InviteObject:
        async with self._sessions() as s:
            return _invite(await self._invite(s, org_id, invite_id))

    async def delete_invite(self, org_id: str, invite_id: str) -> None:
        """Withdraw an invitation that is not accepted yet."""
        async with self._sessions() as s, s.begin():
            row = await self._invite(s, org_id, invite_id)
            if row.accepted_at is not None:
                raise InvalidRequest(
                    "This invitation has been accepted; remove the user instead.",
                    param="invite_id",
                    code="invite_already_accepted",
                )
            await s.delete(row)

    async def _invite(self, s: AsyncSession, org_id: str, invite_id: str) -> Invite:
        row = await s.scalar(select(Invite).where(Invite.id == invite_id, Invite.org_id == org_id))
        if row is None:
            raise NotFound(f"No invite with id {invite_id!r}.", param="invite_id")
        return row

    async def accept_invite(
        self, token: str, name: str | None
    ) -> tuple[str, UserObject, CreatedKey]:
        """The invitation's user, made once: (organisation, user, their first admin key).
        A token used before, expired or unknown is a 400 (only the invitation's holder
        knows which: the message does not say whether an unknown one ever existed)."""
        now = utcnow()
        async with self._sessions() as s, s.begin():
            row = await s.scalar(select(Invite).where(Invite.token_hash == _hash(token)))
            if row is None:
                raise InvalidRequest(
                    "This invitation token is not valid.", param="token", code="invalid_invite"
                )
            if row.accepted_at is not None:
                raise InvalidRequest(
                    "This invitation has already been accepted; an invitation is used once.",
                    param="token",
                    code="invite_already_accepted",
                )
            expires = aware(row.expires_at)
            if expires is not None and expires <= now:
                raise InvalidRequest(
                    f"This invitation expired at {expires.isoformat(timespec='seconds')}; ask "
                    "for a new one.",
                    param="token",
                    code="invite_expired",
                )
            user = User(
                id=new_id("user-"),
                org_id=row.org_id,
                email=row.email,
                name=name,
                role=row.role,
                created_at=now,
            )
            # the guard against a second acceptance racing this one
            taken = await s.execute(
                update(Invite)
                .where(Invite.id == row.id, Invite.accepted_at.is_(None))
                .values(accepted_at=now, user_id=user.id)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise InvalidRequest(
                    "This invitation has already been accepted; an invitation is used once.",
                    param="token",
                    code="invite_already_accepted",
                )
            if await s.scalar(
                select(User.id).where(User.org_id == row.org_id, User.email == row.email)
            ):
                raise Conflict(f"{row.email} is already a member.", param="email")
            s.add(user)
            for project in json.loads(row.projects):
                live = await s.scalar(
                    select(Project.id).where(
                        Project.id == project["id"],
                        Project.org_id == row.org_id,
                        Project.status == "active",
                    )
                )
                if live:  # an archived (or gone) project is skipped
                    s.add(
                        ProjectMember(
                            project_id=project["id"],
                            user_id=user.id,
                            org_id=row.org_id,
                            role=project["role"],
                            created_at=now,
                        )
                    )
            org = await s.get(Organization, row.org_id)
            default_project = org.default_project_id if org else ""
        key = await self.keys.create_key(
            f"{user.email} (invited)",
            "admin",
            org_id=user.org_id,
            project_id=default_project,
            owner_type="user",
            owner_id=user.id,
        )
        return user.org_id, _user(user), key

    # ------------------------------------------------------------ project members

    async def list_project_users(
        self, org_id: str, project_id: str, limit: int = 20, after: str | None = None
    ) -> Page[ProjectUserObject]:
        async with self._sessions() as s:
            await project_of(s, org_id, project_id)
            where = [ProjectMember.org_id == org_id, ProjectMember.project_id == project_id]
            rows, more = await page_rows(
                s, ProjectMember, where, limit, after, ident=ProjectMember.user_id
            )
            users = {
                u.id: u
                for u in await s.scalars(select(User).where(User.id.in_([r.user_id for r in rows])))
            }
        return as_page([_member(r, users[r.user_id]) for r in rows], more)

    async def add_project_user(
        self,
        org_id: str,
        project_id: str,
        user_id: str | None,
        email: str | None,
        role: ProjectRoleName,
        held: frozenset[str],
    ) -> ProjectUserObject:
        check_grant(held, project_role_permissions(role), f"the project role {role!r}")
        try:
            async with self._sessions() as s, s.begin():
                await project_of(s, org_id, project_id, active=True)
                user = await self._user_by(s, org_id, user_id, email)
                member = ProjectMember(
                    project_id=project_id,
                    user_id=user.id,
                    org_id=org_id,
                    role=role,
                    created_at=utcnow(),
                )
                s.add(member)
                await s.flush()
                return _member(member, user)
        except IntegrityError:
            raise Conflict(
                "This user is already a member of the project.", param="user_id"
            ) from None

    async def get_project_user(
        self, org_id: str, project_id: str, user_id: str
    ) -> ProjectUserObject:
        async with self._sessions() as s:
            return _member(*await self._membership(s, org_id, project_id, user_id))

    async def set_project_user_role(
        self,
        org_id: str,
        project_id: str,
        user_id: str,
        role: ProjectRoleName,
        held: frozenset[str],
    ) -> ProjectUserObject:
        check_grant(held, project_role_permissions(role), f"the project role {role!r}")
        async with self._sessions() as s, s.begin():
            member, user = await self._membership(s, org_id, project_id, user_id)
            check_grant(held, project_role_permissions(member.role), f"changes to {user_id!r}")
            member.role = role
            return _member(member, user)

    async def remove_project_user(
        self, org_id: str, project_id: str, user_id: str, held: frozenset[str]
    ) -> None:
        async with self._sessions() as s, s.begin():
            member, _ = await self._membership(s, org_id, project_id, user_id)
            check_grant(held, project_role_permissions(member.role), f"changes to {user_id!r}")
            await s.delete(member)

    async def _membership(
        self, s: AsyncSession, org_id: str, project_id: str, user_id: str
    ) -> tuple[ProjectMember, User]:
        await project_of(s, org_id, project_id)
        member = await s.scalar(
            select(ProjectMember).where(
                ProjectMember.org_id == org_id,
                ProjectMember.project_id == project_id,
                ProjectMember.user_id == user_id,
            )
        )
        if member is None:
            raise NotFound(f"No user {user_id!r} in this project.", param="user_id")
        return member, await user_of(s, org_id, user_id)

    async def _user_by(
        self, s: AsyncSession, org_id: str, user_id: str | None, email: str | None
    ) -> User:
        if user_id:
            return await user_of(s, org_id, user_id)
        if not email:
            raise InvalidRequest("Give 'user_id' or 'email'.", param="user_id")
        row = await s.scalar(
            select(User).where(User.org_id == org_id, User.email == normal_email(email))
        )
        if row is None:
            raise NotFound(f"No user with email {email!r}.", param="email")
        return row

    # ------------------------------------------------------------ roles

    async def list_roles(
        self, org_id: str, limit: int = MAX_ROLES, after: str | None = None, order: str = "asc"
    ) -> CursorPage[RoleObject]:
        """The predefined roles, then the organisation's own in creation order."""
        async with self._sessions() as s:
            rows = await s.scalars(
                select(CustomRole)
                .where(CustomRole.org_id == org_id)
                .order_by(CustomRole.created_at, CustomRole.id)
            )
            roles = [*map(_predefined, PREDEFINED.values()), *map(custom_role, rows)]
        return cursor_page(roles if order == "asc" else roles[::-1], limit, after)

    async def create_role(
        self,
        org_id: str,
        name: str,
        permissions: list[str],
        description: str | None,
        held: frozenset[str],
    ) -> RoleObject:
        listed = check_known(permissions)
        check_grant(held, listed, f"a role with {', '.join(listed) or 'no permissions'}")
        self._check_name(name)
        row = CustomRole(
            id=new_id("role_"),
            org_id=org_id,
            name=name,
            description=description,
            permissions=json.dumps(listed),
            resource_type=ORG_RESOURCE,
            created_at=utcnow(),
        )
        try:
            async with self._sessions() as s, s.begin():
                s.add(row)
        except IntegrityError:
            raise Conflict(f"A role named {name!r} already exists.", param="role_name") from None
        return custom_role(row)

    async def get_role(self, org_id: str, role_id: str) -> RoleObject:
        if role_id in PREDEFINED:
            return _predefined(PREDEFINED[role_id])
        async with self._sessions() as s:
            return custom_role(await role_of(s, org_id, role_id))

    async def update_role(
        self,
        org_id: str,
        role_id: str,
        name: str | None,
        permissions: list[str] | None,
        description: str | None,
        held: frozenset[str],
    ) -> RoleObject:
        self._check_custom(role_id)
        try:
            async with self._sessions() as s, s.begin():
                row = await role_of(s, org_id, role_id)
                check_grant(held, json.loads(row.permissions), f"changes to {role_id!r}")
                if permissions is not None:
                    listed = check_known(permissions)
                    check_grant(held, listed, f"a role with {', '.join(listed)}")
                    row.permissions = json.dumps(listed)
                if name is not None:
                    self._check_name(name)
                    row.name = name
                if description is not None:
                    row.description = description
                await s.flush()
                return custom_role(row)
        except IntegrityError:
            raise Conflict(f"A role named {name!r} already exists.", param="role_name") from None

    async def delete_role(self, org_id: str, role_id: str, held: frozenset[str]) -> None:
        """A custom role goes, with every assignment of it."""
        self._check_custom(role_id)
        async with self._sessions() as s, s.begin():
            row = await role_of(s, org_id, role_id)
            check_grant(held, json.loads(row.permissions), f"changes to {role_id!r}")
            await s.execute(
                delete(RoleAssignment).where(
                    RoleAssignment.org_id == org_id, RoleAssignment.role_id == role_id
                )
            )
            await s.delete(row)

    @staticmethod
    def _check_name(name: str) -> None:
        if name.strip().lower() in {r.name for r in PREDEFINED.values()}:
            raise Conflict(f"{name!r} is a predefined role's name.", param="role_name")

    @staticmethod
    def _check_custom(role_id: str) -> None:
        if role_id in PREDEFINED:
            raise InvalidRequest(
                f"{role_id!r} is a predefined role; it cannot be changed or deleted.",
                param="role_id",
                code="predefined_role",
            )

    # ------------------------------------------------------------ a user's roles

    async def list_user_roles(
        self, org_id: str, user_id: str, limit: int = MAX_ROLES, after: str | None = None
    ) -> CursorPage[AssignedRole]:
        """Their organisation role, then the custom roles given to them directly."""
        async with self._sessions() as s:
            user = await user_of(s, org_id, user_id)
            rows = await assigned(s, org_id, "user", user_id)
        own = PREDEFINED[ORG_ROLE_IDS[user.role]]  # type: ignore[index]
        roles = [
            assigned_role(_predefined(own), user.created_at),
            *(assigned_role(custom_role(role), when) for role, when in rows),
        ]
        return cursor_page(roles, limit, after)

    async def assign_user_role(
        self, org_id: str, user_id: str, role_id: str, held: frozenset[str]
    ) -> UserRoleAssignment:
        """Give a custom role (or make them ``owner``/``reader`` with a predefined
        organisation role's id)."""
        role = await self.get_role(org_id, role_id)
        check_grant(held, role.permissions, f"the role {role.name!r}")
        predefined = {v: k for k, v in ORG_ROLE_IDS.items()}
        if role_id in predefined:
            user = await self.set_user_role(org_id, user_id, predefined[role_id], held)
            return UserRoleAssignment(user=user, role=role)
        if role_id in PREDEFINED:
            raise InvalidRequest(
                f"{role_id!r} is a project role; add the user to a project with it instead.",
                param="role_id",
            )
        try:
            async with self._sessions() as s, s.begin():
                user_row = await user_of(s, org_id, user_id)
                s.add(assignment(org_id, "user", user_id, role_id))
        except IntegrityError:
            raise Conflict("The user already has this role.", param="role_id") from None
        return UserRoleAssignment(user=_user(user_row), role=role)

    async def get_user_role(self, org_id: str, user_id: str, role_id: str) -> AssignedRole:
        page = await self.list_user_roles(org_id, user_id)
        for role in page.data:
            if role.id == role_id:
                return role
        raise NotFound(f"The user has no role {role_id!r}.", param="role_id")

    async def unassign_user_role(
        self, org_id: str, user_id: str, role_id: str, held: frozenset[str]
    ) -> None:
        self._check_custom(role_id)
        async with self._sessions() as s, s.begin():
            await user_of(s, org_id, user_id)
            role = await role_of(s, org_id, role_id)
            check_grant(held, json.loads(role.permissions), f"changes to {role_id!r}")
            gone = await s.execute(unassign(org_id, "user", user_id, role_id))
            if gone.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"The user has no role {role_id!r}.", param="role_id")
