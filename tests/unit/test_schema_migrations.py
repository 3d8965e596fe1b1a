"""The migrations build exactly the tables the code declares (forge.db.schema), on
SQLite and PostgreSQL: a column added to one and not the other fails here, not in a
deployment. And the rate-limit rules' store, on both."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from forge.db.engine import make_sessionmaker
from forge.db.schema import Base
from forge.limits.rules import LimitRule
from forge.limits.store import RateLimitStore
from forge.tenancy.store import TenancyStore


async def test_the_migrated_database_matches_the_declared_schema(engine):
    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_rules_are_set_merged_cleared_and_scoped_to_their_organisation(engine):
    sessions = make_sessionmaker(engine)
    tenancy, store = TenancyStore(sessions), RateLimitStore(sessions)
    org, _ = await tenancy.create_org("rules-org", "professional")
    project = await tenancy.create_project(org.id, "p")
    await store.set_rule(org.id, "project", project.id, "m", {"max_requests_per_1_minute": 60})
    merged = await store.set_rule(
        org.id, "project", project.id, "m", {"max_tokens_per_1_minute": 1000}
    )
    assert (merged.max_requests_per_1_minute, merged.max_tokens_per_1_minute) == (60, 1000)
    await store.set_rule(org.id, "key", "key_x", "*", {"max_requests_per_1_day": 5})
    found = await store.rules_for_key(org.id, project.id, "key_x")
    assert sorted((r.scope, r.model) for r in found) == [("key", "*"), ("project", "m")]
    assert await store.rules_for_key("org-other", project.id, "key_x") == []
    assert await store.subject_org("project", project.id) == org.id
    assert await store.subject_org("project", "proj_nowhere") is None
    await store.set_rule(
        org.id,
        "project",
        project.id,
        "m",
        {"max_requests_per_1_minute": None, "max_tokens_per_1_minute": None},
    )
    assert await store.rules(org.id, "project", project.id) == []  # nothing left: deleted
    assert isinstance(found[0], LimitRule)
