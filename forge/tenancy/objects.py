"""The Admin API's objects in OpenAI's shapes (``openai-openapi.yaml``: ``Project``,
``ProjectServiceAccount``, ``ProjectApiKey``, ``AdminApiKey`` and their lists), plus the
platform operator's ``Organization``. Times are Unix seconds, as OpenAI's."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from forge.tenancy.plans import PlanName

T = TypeVar("T")


def unix(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp())


class Page(BaseModel, Generic[T]):
    """OpenAI's cursor list: ``after`` is the last id of the page before."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Deleted(BaseModel):
    object: str
    id: str
    deleted: bool = True


class OrganizationObject(BaseModel):
    object: Literal["organization"] = "organization"
    id: str
    name: str
    plan: PlanName
    status: Literal["active", "suspended", "deleted"]
    created_at: int
    parent_id: str | None = None  # the organisation it is a sub-organisation of


class ProjectObject(BaseModel):
    object: Literal["organization.project"] = "organization.project"
    id: str
    name: str
    created_at: int
    archived_at: int | None
    status: Literal["active", "archived"]


class ServiceAccountObject(BaseModel):
    object: Literal["organization.project.service_account"] = "organization.project.service_account"
    id: str
    name: str
    role: Literal["owner", "member"]
    created_at: int


class ServiceAccountKey(BaseModel):
    """A service account's new key: its value is shown here, once."""

    object: Literal["organization.project.service_account.api_key"] = (
        "organization.project.service_account.api_key"
    )
    value: str
    name: str
    created_at: int
    id: str


class ServiceAccountCreated(ServiceAccountObject):
    api_key: ServiceAccountKey | None


class ProjectApiKeyObject(BaseModel):
    object: Literal["organization.project.api_key"] = "organization.project.api_key"
    redacted_value: str
    name: str
    created_at: int
    last_used_at: int | None = None
    id: str
    owner_project_access: Literal["active", "inactive"]
    owner: dict[str, Any] = Field(description="`{type, service_account}` or `{type, user}`.")


class AdminApiKeyObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["organization.admin_api_key"] = "organization.admin_api_key"
    id: str
    name: str | None
    redacted_value: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None = None
    owner: dict[str, Any]


class AdminApiKeyCreated(AdminApiKeyObject):
    value: str
