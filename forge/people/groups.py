"""Groups: named sets of an organisation's users; a custom role given to a group reaches
every member (``store._held_by``). Putting someone in a group gives them its roles, so
it is a grant like any other: refused unless the caller holds every permission the
group's roles carry, as are taking someone out and deleting the group."""

from __future__ import annotations

import json

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import CustomRole, Group, GroupMember, RoleAssignment, User, utcnow
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.people.assignments import assigned, assignment, of, unassign
from forge.people.objects import (
    AssignedRole,
    CursorPage,
    GroupMemberUser,
    GroupObject,
    GroupResponse,
    GroupRoleAssignment,
    GroupUpdated,
    GroupUser,
    GroupUserAssignment,
)
from forge.people.permissions import PREDEFINED, check_grant
from forge.people.store import (
    PeopleStore,
    assigned_role,
    cursor_page,
    custom_role,
    new_id,
    role_of,
    user_of,
)
from forge.tenancy.objects import unix
from forge.tenancy.paging import Order, page_rows


def _group(row: Group) -> GroupResponse:
    return GroupResponse(id=row.id, name=row.name, created_at=unix(row.created_at) or 0)


def _group_object(row: Group) -> GroupObject:
    return GroupObject(id=row.id, name=row.name, created_at=unix(row.created_at) or 0)


def _member(user: User) -> GroupMemberUser:
    return GroupMemberUser(id=user.id, name=user.name or user.email, email=user.email)


class GroupStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._people = PeopleStore(sessions)

    async def list_groups(
        self, org_id: str, limit: int = 100, after: str | None = None, order: Order = "asc"
    ) -> CursorPage[GroupResponse]:
        async with self._sessions() as s:
            rows, more = await page_rows(s, Group, [Group.org_id == org_id], limit, after, order)
        data = [_group(r) for r in rows]
        return CursorPage(data=data, has_more=more, next=rows[-1].id if more and rows else None)

    async def create_group(self, org_id: str, name: str) -> GroupResponse:
        row = Group(id=new_id("group_"), org_id=org_id, name=name, created_at=utcnow())
        try:
            async with self._sessions() as s, s.begin():
                s.add(row)
        except IntegrityError:
            raise Conflict(f"A group named {name!r} already exists.", param="name") from None
        return _group(row)

    async def get_group(self, org_id: str, group_id: str) -> GroupResponse:
        async with self._sessions() as s:
            return _group(await self._group(s, org_id, group_id))

    async def rename_group(self, org_id: str, group_id: str, name: str) -> GroupUpdated:
        try:
            async with self._sessions() as s, s.begin():
                row = await self._group(s, org_id, group_id)
                row.name = name
                await s.flush()
                return GroupUpdated(**_group(row).model_dump(exclude={"group_type"}))
        except IntegrityError:
            raise Conflict(f"A group named {name!r} already exists.", param="name") from None

    async def delete_group(self, org_id: str, group_id: str, held: frozenset[str]) -> None:
        async with self._sessions() as s, s.begin():
            row = await self._group(s, org_id, group_id)
            check_grant(held, await self._carried(s, org_id, group_id), f"changes to {group_id!r}")
            await s.execute(delete(GroupMember).where(GroupMember.group_id == group_id))
            await s.execute(unassign(org_id, "group", group_id))
            await s.delete(row)

    # ------------------------------------------------------------ members

    async def list_members(
        self,
        org_id: str,
        group_id: str,
        limit: int = 100,
        after: str | None = None,
        order: Order = "asc",
    ) -> CursorPage[GroupUser]:
        async with self._sessions() as s:
            await self._group(s, org_id, group_id)
            where = [GroupMember.org_id == org_id, GroupMember.group_id == group_id]
            rows, more = await page_rows(
                s, GroupMember, where, limit, after, order, ident=GroupMember.user_id
            )
            users = {
                u.id: u
                for u in await s.scalars(select(User).where(User.id.in_([r.user_id for r in rows])))
            }
        data = [
            GroupUser(id=u.id, name=u.name or u.email, email=u.email)
            for u in (users[r.user_id] for r in rows)
        ]
        next_id = rows[-1].user_id if more and rows else None
        return CursorPage(data=data, has_more=more, next=next_id)

    async def add_member(
        self, org_id: str, group_id: str, user_id: str, held: frozenset[str]
    ) -> GroupUserAssignment:
        try:
            async with self._sessions() as s, s.begin():
                await self._group(s, org_id, group_id)
                await user_of(s, org_id, user_id)
                check_grant(held, await self._carried(s, org_id, group_id), "this group's roles")
                s.add(
                    GroupMember(
                        group_id=group_id, user_id=user_id, org_id=org_id, created_at=utcnow()
                    )
                )
        except IntegrityError:
            raise Conflict("The user is already in this group.", param="user_id") from None
        return GroupUserAssignment(user_id=user_id, group_id=group_id)

    async def get_member(self, org_id: str, group_id: str, user_id: str) -> GroupMemberUser:
        async with self._sessions() as s:
            await self._membership(s, org_id, group_id, user_id)
            return _member(await user_of(s, org_id, user_id))

    async def remove_member(
        self, org_id: str, group_id: str, user_id: str, held: frozenset[str]
    ) -> None:
        async with self._sessions() as s, s.begin():
            member = await self._membership(s, org_id, group_id, user_id)
            check_grant(held, await self._carried(s, org_id, group_id), "this group's roles")
            await s.delete(member)

    # ------------------------------------------------------------ roles

    async def list_roles(
        self, org_id: str, group_id: str, limit: int = 1000, after: str | None = None
    ) -> CursorPage[AssignedRole]:
        async with self._sessions() as s:
            await self._group(s, org_id, group_id)
            rows = await assigned(s, org_id, "group", group_id)
        return cursor_page([assigned_role(custom_role(r), when) for r, when in rows], limit, after)

    async def assign_role(
        self, org_id: str, group_id: str, role_id: str, held: frozenset[str]
    ) -> GroupRoleAssignment:
        if role_id in PREDEFINED:
            raise InvalidRequest(
                "A group is given custom roles; predefined roles belong to each user.",
                param="role_id",
                code="predefined_role",
            )
        role = await self._people.get_role(org_id, role_id)
        check_grant(held, role.permissions, f"the role {role.name!r}")
        try:
            async with self._sessions() as s, s.begin():
                group = await self._group(s, org_id, group_id)
                s.add(assignment(org_id, "group", group_id, role_id))
        except IntegrityError:
            raise Conflict("The group already has this role.", param="role_id") from None
        return GroupRoleAssignment(group=_group_object(group), role=role)

    async def get_role(self, org_id: str, group_id: str, role_id: str) -> AssignedRole:
        for role in (await self.list_roles(org_id, group_id)).data:
            if role.id == role_id:
                return role
        raise NotFound(f"The group has no role {role_id!r}.", param="role_id")

    async def unassign_role(
        self, org_id: str, group_id: str, role_id: str, held: frozenset[str]
    ) -> None:
        async with self._sessions() as s, s.begin():
            await self._group(s, org_id, group_id)
            role = await role_of(s, org_id, role_id)
            check_grant(held, json.loads(role.permissions), f"changes to {role_id!r}")
            gone = await s.execute(unassign(org_id, "group", group_id, role_id))
            if gone.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"The group has no role {role_id!r}.", param="role_id")

    # ------------------------------------------------------------ lookups

    async def _group(self, s: AsyncSession, org_id: str, group_id: str) -> Group:
        row = await s.scalar(select(Group).where(Group.id == group_id, Group.org_id == org_id))
        if row is None:
            raise NotFound(f"No group with id {group_id!r}.", param="group_id")
        return row

    async def _membership(
        self, s: AsyncSession, org_id: str, group_id: str, user_id: str
    ) -> GroupMember:
        await self._group(s, org_id, group_id)
        row = await s.scalar(
            select(GroupMember).where(
                GroupMember.org_id == org_id,
                GroupMember.group_id == group_id,
                GroupMember.user_id == user_id,
            )
        )
        if row is None:
            raise NotFound(f"No user {user_id!r} in this group.", param="user_id")
        return row

    async def _carried(self, s: AsyncSession, org_id: str, group_id: str) -> set[str]:
        """Every permission the group's roles give its members."""
        listed = await s.scalars(
            select(CustomRole.permissions)
            .join(RoleAssignment, RoleAssignment.role_id == CustomRole.id)
            .where(*of(org_id, "group", group_id))
        )
        return {p for permissions in listed for p in json.loads(permissions)}
