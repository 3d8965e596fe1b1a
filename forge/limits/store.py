"""Rate-limit rules in the database, and OpenAI's project rate-limit objects over them.

Every read and write is scoped by organisation: a rule of another organisation's project
or key is not found. A changed rule reaches the gateways through the key changes feed
(the caller announces it), since a key's rules travel with its verified record.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import ApiKey, Organization, Project, RateLimitRule, utcnow
from forge.errors import InvalidRequest, NotFound
from forge.limits.rules import FIELDS, LIMIT_FIELDS, LimitRule, Scope, org_model_rule

MAX_LIMIT = 2**31 - 1  # the column's integer
RATE_LIMIT_ID_PREFIX = "rl-"


class ProjectRateLimit(BaseModel):
    """OpenAI's ``project.rate_limit``: a project's limits on one model (``rl-<model>``)."""

    object: Literal["project.rate_limit"] = "project.rate_limit"
    id: str
    model: str
    max_requests_per_1_minute: int
    max_tokens_per_1_minute: int
    max_requests_per_1_day: int | None = None


def rate_limit_id(model: str) -> str:
    return RATE_LIMIT_ID_PREFIX + model


def check_values(values: dict[str, int | None]) -> None:
    """400 naming the field for a limit that is not a whole number from 1 to 2^31-1
    (None clears a limit)."""
    for field, value in values.items():
        if field not in LIMIT_FIELDS:
            raise InvalidRequest(
                f"{field!r} is not a limit this platform enforces; it enforces "
                f"{', '.join(LIMIT_FIELDS)}.",
                param=field,
                code="unsupported_parameter",
            )
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
            raise InvalidRequest(
                f"Invalid {field!r}: {value!r}; expected a whole number from 1 to {MAX_LIMIT}.",
                param=field,
                code="invalid_value",
            )


def _rule(row: RateLimitRule) -> LimitRule:
    return LimitRule(
        scope=row.scope,
        subject_id=row.subject_id,
        model=row.model,
        **{field: getattr(row, field) for field in LIMIT_FIELDS},
    )


class RateLimitStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def rules_for_key(self, org_id: str, project_id: str, key_id: str) -> list[LimitRule]:
        """The rules a key's requests are under (one query, on a key cache miss)."""
        subjects = [("organization", org_id), ("project", project_id), ("key", key_id)]
        of_subject = [
            and_(RateLimitRule.scope == scope, RateLimitRule.subject_id == subject)
            for scope, subject in subjects
        ]
        query = select(RateLimitRule).where(RateLimitRule.org_id == org_id, or_(*of_subject))
        async with self._sessions() as s:
            return [_rule(r) for r in await s.scalars(query)]

    async def subject_org(self, scope: Scope, subject_id: str) -> str | None:
        """The organisation of an organisation, project or key (None: no such thing)."""
        table: Any = {"organization": Organization, "project": Project, "key": ApiKey}[scope]
        column = table.id if scope == "organization" else table.org_id
        async with self._sessions() as s:
            found: str | None = await s.scalar(select(column).where(table.id == subject_id))
            return found

    async def rules(self, org_id: str, scope: Scope, subject_id: str) -> list[LimitRule]:
        query = (
            select(RateLimitRule)
            .where(
                RateLimitRule.org_id == org_id,
                RateLimitRule.scope == scope,
                RateLimitRule.subject_id == subject_id,
            )
            .order_by(RateLimitRule.model)
        )
        async with self._sessions() as s:
            return [_rule(r) for r in await s.scalars(query)]

    async def set_rule(
        self, org_id: str, scope: Scope, subject_id: str, model: str, values: dict[str, int | None]
    ) -> LimitRule:
        """Set (None: clear) the given fields of a rule, leaving the others as they are;
        a rule left with no limit is deleted."""
        check_values(values)
        key = {"scope": scope, "subject_id": subject_id, "model": model}
        async with self._sessions() as s, s.begin():
            row = await s.get(RateLimitRule, key)
            if row is None:
                row = RateLimitRule(org_id=org_id, **key)
                s.add(row)
            elif row.org_id != org_id:
                raise NotFound(f"No {scope} with id {subject_id!r}.", param="subject_id")
            for field, value in values.items():
                setattr(row, field, value)
            row.updated_at = utcnow()
            rule = _rule(row)
            if all(rule.value(k) is None for k in FIELDS):
                await s.execute(
                    delete(RateLimitRule).where(
                        *(getattr(RateLimitRule, c) == v for c, v in key.items())
                    )
                )
            return rule

    async def project_limits(
        self, org_id: str, project_id: str, plan: str, models: list[str]
    ) -> list[ProjectRateLimit]:
        """A project's limits on each model served, as OpenAI lists them: what is set on
        the project, else its organisation's (set, or its plan's)."""
        rules = await self.rules_for_key(org_id, project_id, key_id="")
        return [self._project_limit(rules, org_id, project_id, plan, m) for m in models]

    @staticmethod
    def _project_limit(
        rules: list[LimitRule], org_id: str, project_id: str, plan: str, model: str
    ) -> ProjectRateLimit:
        org = org_model_rule(rules, plan, org_id, model)
        mine = next(
            (r for r in rules if r.scope == "project" and r.model == model),
            LimitRule(scope="project", subject_id=project_id, model=model),
        )
        return ProjectRateLimit(
            id=rate_limit_id(model),
            model=model,
            max_requests_per_1_minute=mine.max_requests_per_1_minute
            or org.max_requests_per_1_minute
            or MAX_LIMIT,
            max_tokens_per_1_minute=mine.max_tokens_per_1_minute
            or org.max_tokens_per_1_minute
            or MAX_LIMIT,
            max_requests_per_1_day=mine.max_requests_per_1_day or org.max_requests_per_1_day,
        )

    async def update_project_limit(
        self,
        org_id: str,
        project_id: str,
        plan: str,
        model: str,
        values: dict[str, int | None],
    ) -> ProjectRateLimit:
        """Set a project's limits on ``model``; never above its organisation's (400)."""
        check_values(values)
        rules = await self.rules_for_key(org_id, project_id, key_id="")
        org = org_model_rule(rules, plan, org_id, model)
        for field, value in values.items():
            ceiling = getattr(org, field)
            if value is not None and ceiling is not None and value > ceiling:
                raise InvalidRequest(
                    f"Invalid {field!r}: {value} is above the organization's limit of "
                    f"{ceiling} for {model!r}.",
                    param=field,
                    code="invalid_value",
                )
        await self.set_rule(org_id, "project", project_id, model, values)
        rules = await self.rules_for_key(org_id, project_id, key_id="")
        return self._project_limit(rules, org_id, project_id, plan, model)
