"""People in OpenAI's Admin API shapes (``openai-openapi.yaml``: ``User``, ``Invite``,
``ProjectUser``, ``Role``, ``UserRoleAssignment``, ``AssignedRoleDetails``, ``Group``)."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from forge.people.permissions import OrgRoleName, ProjectRoleName

T = TypeVar("T")


class UserObject(BaseModel):
    object: Literal["organization.user"] = "organization.user"
    id: str
    name: str | None
    email: str | None
    role: OrgRoleName
    added_at: int


class InviteProject(BaseModel):
    id: str
    role: ProjectRoleName


class InviteObject(BaseModel):
    object: Literal["organization.invite"] = "organization.invite"
    id: str
    email: str
    role: OrgRoleName
    status: Literal["accepted", "expired", "pending"]
    created_at: int
    expires_at: int | None
    accepted_at: int | None
    projects: list[InviteProject]


class InviteCreated(InviteObject):
    """A new invitation with its secret (``token``), shown here once: whoever holds it
    accepts the invitation (``POST /v1/organization/invites/accept``)."""

    token: str


class ProjectUserObject(BaseModel):
    object: Literal["organization.project.user"] = "organization.project.user"
    id: str
    name: str | None
    email: str | None
    role: ProjectRoleName
    added_at: int


class RoleObject(BaseModel):
    object: Literal["role"] = "role"
    id: str
    name: str
    description: str | None
    permissions: list[str]
    resource_type: str
    predefined_role: bool


class AssignedRole(BaseModel):
    """A role as a principal's list of assignments shows it (``AssignedRoleDetails``)."""

    id: str
    name: str
    permissions: list[str]
    resource_type: str
    predefined_role: bool
    description: str | None
    created_at: int | None
    updated_at: int | None
    created_by: str | None = None
    created_by_user_obj: dict[str, object] | None = None
    metadata: dict[str, object] | None = None
    assignment_sources: list[dict[str, str]] | None = None


class UserRoleAssignment(BaseModel):
    object: Literal["user.role"] = "user.role"
    user: UserObject
    role: RoleObject


class GroupObject(BaseModel):
    object: Literal["group"] = "group"
    id: str
    name: str
    created_at: int
    scim_managed: bool = False


class CursorPage(BaseModel, Generic[T]):
    """The newer list shape of OpenAI's roles and groups: ``next`` is the cursor."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next: str | None


class Accepted(BaseModel):
    """An accepted invitation: the new member, and their first admin API key (shown
    once), which acts with their role until people sign in for themselves."""

    user: UserObject
    api_key: str
    api_key_id: str


class GroupResponse(BaseModel):
    id: str
    name: str
    created_at: int
    is_scim_managed: bool = False
    group_type: Literal["group", "tenant_group"] = "group"


class GroupUpdated(BaseModel):
    id: str
    name: str
    created_at: int
    is_scim_managed: bool = False


class GroupDeleted(BaseModel):
    object: Literal["group.deleted"] = "group.deleted"
    id: str
    deleted: bool = True


class GroupUser(BaseModel):
    id: str
    name: str
    email: str | None


class GroupMemberUser(GroupUser):
    picture: str | None = None
    is_service_account: bool | None = False
    user_type: Literal["user", "tenant_user"] = "user"


class GroupUserAssignment(BaseModel):
    object: Literal["group.user"] = "group.user"
    user_id: str
    group_id: str


class GroupUserDeleted(BaseModel):
    object: Literal["group.user.deleted"] = "group.user.deleted"
    deleted: bool = True


class GroupRoleAssignment(BaseModel):
    object: Literal["group.role"] = "group.role"
    group: GroupObject
    role: RoleObject


class AssignmentDeleted(BaseModel):
    """``DeletedRoleAssignmentResource``: ``user.role.deleted`` or ``group.role.deleted``."""

    object: Literal["user.role.deleted", "group.role.deleted"]
    deleted: bool = True
