"""Tables. The database is the source of truth; actors keep hot copies of it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(when: datetime) -> datetime:
    """A stored time with its zone: SQLite keeps none, and every stored time is UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def aware(when: datetime | None) -> datetime | None:
    """A stored time as UTC (SQLite hands back naive datetimes for timezone=True)."""
    return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


DEFAULT_ORG_ID = "org-default"  # where keys made before organisations existed live
DEFAULT_PROJECT_ID = "proj_default"


class Organization(Base):
    """A tenant. ``plan`` names its tier (forge.tenancy.plans); a suspended one is refused
    (403) on every route; a deleted one keeps its rows (usage, audit) but no key works."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    plan: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    default_project_id: Mapped[str] = mapped_column(String(40))  # admin keys' project
    # the Platform-plan organisation that resells to this one (its sub-organisation)
    parent_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    # its login policy (forge.identity): a second factor for every local account
    require_mfa: Mapped[bool] = mapped_column(Boolean, default=False)
    # data retention (forge.tenancy.retention): OpenAI's type, and how long request and
    # response bodies and usage records are kept (null: the platform's default, for ever)
    retention_type: Mapped[str] = mapped_column(String(40), default="modified_abuse_monitoring")
    body_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    usage_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audit_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Project(Base):
    """A project of an organisation: what keys, usage and stored objects belong to."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retention_type: Mapped[str] = mapped_column(String(40), default="organization_default")

    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_projects_org_id_name"),)


class ServiceAccount(Base):
    """A project's non-human member; its API keys act for it."""

    __tablename__ = "service_accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="member")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key. Only its SHA-256 is stored; the key itself is shown once at creation.

    ``role``: ``platform`` (the operator's: every organisation), ``admin`` (an
    organisation's admin key) or ``user`` (a project key). Every key belongs to an
    organisation and a project (an admin key's is the one its inference calls use)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    org_id: Mapped[str] = mapped_column(String(40), default=DEFAULT_ORG_ID, index=True)
    project_id: Mapped[str] = mapped_column(String(40), default=DEFAULT_PROJECT_ID, index=True)
    owner_type: Mapped[str | None] = mapped_column(String(24), nullable=True)
    owner_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # JSON lists of what this key may call (null: all its project may): forge.key_scope
    allowed_models: Mapped[str | None] = mapped_column(Text, nullable=True)
    allowed_endpoints: Mapped[str | None] = mapped_column(Text, nullable=True)


class User(Base):
    """A person in an organisation (``role``: ``owner`` or ``reader``), added when they
    accept an invitation (forge.people)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # provisioning (SCIM): the identity provider's id for them, their names, and whether
    # they may act (a deactivated user keeps their row, not their sessions or keys)
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    given_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    family_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (UniqueConstraint("org_id", "email", name="uq_users_org_id_email"),)


class Account(Base):
    """A person's login (forge.identity): one per email across organisations; their
    memberships are the ``users`` rows with that email. The password is an Argon2id
    hash; the TOTP secret is sealed with the platform's keyring (``totp_pending``: one
    being enrolled, until its first code confirms it); ``totp_last_step``: the time
    step of the last code accepted (a code is good once); ``recovery_codes``: JSON list
    of the unused codes' SHA-256."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_verified_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    totp_secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    totp_pending: Mapped[str | None] = mapped_column(String(200), nullable=True)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    recovery_codes: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuthToken(Base):
    """A single-use, expiring token mailed to a person (``kind``: ``verify_email``,
    ``reset_password``); only its SHA-256 is stored."""

    __tablename__ = "auth_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuthSession(Base):
    """A browser session: the cookie holds a random token, this row its SHA-256. It acts
    in one organisation as the person's ``users`` row there, until ``expires_at``,
    ``revoked_at``, or ``idle_s`` without use."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    org_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # signed in without the second factor its organisation requires: it may enrol one,
    # nothing else, until it has
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginThrottle(Base):
    """Failed logins counted per ``key`` (``email:<sha256>`` whether or not the account
    exists, and ``ip:<address>``): slowed after a few, locked until ``locked_until``."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SsoConnection(Base):
    """An organisation's identity provider (``kind``: ``oidc`` or ``saml``): for OIDC its
    issuer, our client id and sealed secret there; for SAML its entity ID (``issuer``)
    and metadata (``idp_metadata``: sign-on URL, signing certificate), with empty client
    fields. Who it signs in (``email_domains``: JSON list), with which organisation role
    (``group_roles``: JSON ``{group: role}``, else ``default_role``). ``enforced``: local
    passwords are refused for the organisation's members, but ``break_glass_email``'s."""

    __tablename__ = "sso_connections"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(300))
    client_secret: Mapped[str] = mapped_column(Text)
    email_domains: Mapped[str] = mapped_column(Text)
    group_roles: Mapped[str] = mapped_column(Text)
    default_role: Mapped[str] = mapped_column(String(16))
    enforced: Mapped[bool] = mapped_column(Boolean, default=False)
    break_glass_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    idp_metadata: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SsoState(Base):
    """A sign-in under way: the ``state`` sent to the provider (its SHA-256 here; SAML's
    RelayState), the ``nonce`` the ID token must carry (SAML: the AuthnRequest's ID the
    Response must answer), the PKCE verifier (sealed; empty for SAML), where to go after.
    Used once, within minutes."""

    __tablename__ = "sso_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[str] = mapped_column(String(40))
    nonce: Mapped[str] = mapped_column(String(100))
    verifier: Mapped[str] = mapped_column(Text)
    return_to: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # SHA-256 of the cookie set on the browser that started it (no login CSRF)
    browser_hash: Mapped[str] = mapped_column(String(64), server_default="")


class ScimToken(Base):
    """A bearer token an identity provider provisions an organisation's people with
    (SCIM 2.0 at ``/scim/v2``); only its SHA-256 is stored."""

    __tablename__ = "scim_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Invite(Base):
    """An invitation to an organisation: accepted once, by whoever holds its token (only
    its SHA-256 is stored), before ``expires_at``. ``projects``: JSON list of ``{id,
    role}`` memberships the new user gets."""

    __tablename__ = "invites"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    projects: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class ProjectMember(Base):
    """A user's membership of a project (``role``: ``owner`` or ``member``)."""

    __tablename__ = "project_users"

    project_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CustomRole(Base):
    """An organisation's own role: a named list of permissions (``permissions``: JSON
    list; forge.people.permissions)."""

    __tablename__ = "roles"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    permissions: Mapped[str] = mapped_column(Text)
    resource_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_roles_org_id_name"),)


class RoleAssignment(Base):
    """A custom role given to a user or a group (``principal_type``)."""

    __tablename__ = "role_assignments"

    principal_type: Mapped[str] = mapped_column(String(8), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role_id: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Group(Base):
    """A named set of an organisation's users; roles given to it reach its members."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)  # SCIM's

    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_groups_org_id_name"),)


class GroupMember(Base):
    __tablename__ = "group_users"

    group_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelPermission(Base):
    """A project's allow list or deny list of model names (``model_ids``: JSON list)."""

    __tablename__ = "model_permissions"

    project_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    model_ids: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProviderCredential(Base):
    """A project's own key for one of the platform's providers (bring your own key),
    sealed with AES-GCM (forge.credentials); used instead of the platform's key for that
    project's requests. ``key_id``: the keyring key that sealed it (rotation)."""

    __tablename__ = "provider_credentials"
    __table_args__ = (
        UniqueConstraint("project_id", "provider", name="uq_provider_credentials_project_provider"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    project_id: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str] = mapped_column(String(100))
    sealed: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    redacted_value: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateLimitRule(Base):
    """Limits set on an organisation, a project or a key (``scope``, ``subject_id``), for
    one model or, with model ``*``, for all its models together. A field left null sets
    no limit at that level (an organisation's then comes from its plan)."""

    __tablename__ = "rate_limits"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    max_requests_per_1_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_tokens_per_1_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_requests_per_1_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditLogEntry(Base):
    """One audit log entry (OpenAI's audit-log object, in ``content``), chained to the one
    before: ``prev_hash`` is unique, so two writers racing for the same head cannot fork
    the chain (the loser retries on the new head). ``purged_at`` set: a stub, whose
    content retention replaced (forge.audit.chain)."""

    __tablename__ = "audit_logs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    project_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    effective_at: Mapped[int] = mapped_column(Integer)
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    content: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    purged_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AuditCheckpoint(Base):
    """Where the chain now starts: the hash of the last stub compaction deleted (one row,
    ``id`` 1), and how many entries went before it (forge.audit.chain)."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    compacted: Mapped[int] = mapped_column(Integer)


class AuditPersonal(Base):
    """A personal value (an email, an address, a user agent) an audit entry mentions: the
    entry's hashed content holds only ``digest`` (SHA-256 of ``salt`` and the value), so
    erasing a person deletes these rows and the chain still verifies (forge.audit.personal)."""

    __tablename__ = "audit_personal"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    entry_id: Mapped[str] = mapped_column(String(64), index=True)
    value: Mapped[str] = mapped_column(Text)
    salt: Mapped[str] = mapped_column(String(32))


class Spend(Base):
    """What a key, project or organisation spent in one day or month (``period_start``:
    its first day, ``YYYY-MM-DD``, UTC): kept by the usage recorder in the transaction
    that inserts the records it counts (forge.spend)."""

    __tablename__ = "spend"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[str] = mapped_column(String(10), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class BudgetRow(Base):
    """A budget: at most ``limit`` dollars (or requests, or tokens: ``unit``) a ``period``
    (UTC day or month) for one key, project or organisation (forge.budgets)."""

    __tablename__ = "budgets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(8))
    unit: Mapped[str] = mapped_column(String(12))
    limit: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint(
            "scope", "subject_id", "period", "unit", name="uq_budgets_scope_subject_period_unit"
        ),
    )


class SpendAlert(Base):
    """Tell someone when an organisation's or a project's month's spend reaches
    ``threshold_cents`` (OpenAI's spend alert; ``channel``: JSON notification channel)."""

    __tablename__ = "spend_alerts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    threshold_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    interval: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpendAlertEvent(Base):
    """An alert that fired: once per alert and month, written by the usage recorder in
    the transaction that crossed the threshold; an outbox that a webhook system will
    deliver (``delivered_at``)."""

    __tablename__ = "spend_alert_events"

    alert_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_start: Mapped[str] = mapped_column(String(10), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(40))
    threshold_cents: Mapped[int] = mapped_column(BigInteger)
    spent_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BudgetThresholdEvent(Base):
    """A budget whose period's use reached ``percent`` (80 or 100) of its limit: once per
    budget, period and percent, written by the usage recorder in the transaction that
    counted the use; an outbox the webhook senders deliver (``delivered_at``)."""

    __tablename__ = "budget_threshold_events"

    budget_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period_start: Mapped[str] = mapped_column(String(10), primary_key=True)
    percent: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(8))
    unit: Mapped[str] = mapped_column(String(12))
    limit: Mapped[float] = mapped_column(Float)
    used: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BudgetHold(Base):
    """Part of a budget granted to a gateway replica and not yet given back: counted as
    spent until it is (so a restarted ledger knows what is out)."""

    __tablename__ = "budget_holds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    budget_id: Mapped[str] = mapped_column(String(40), index=True)
    period_start: Mapped[str] = mapped_column(String(10))
    amount: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageRecord(Base):
    """One request that reached a provider. Keyed by the platform's request id (never
    the client's) so that re-sent batches (after an actor restart, a spool replay) are
    written once."""

    __tablename__ = "usage_records"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_request_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    org_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    project_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(100))
    provider_model: Mapped[str] = mapped_column(String(200))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # how it was routed (the x-forge-route header), the A/B arm it was in, and the
    # caller's feedback on the answer (POST /v1/feedback, 0 to 1)
    route: Mapped[str | None] = mapped_column(String(300), nullable=True)
    arm: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    feedback_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # whether the answer was what was asked for (forge.quality.validation), and a judge
    # model's score of it, 0 to 1 (forge.quality.judge; a sample of answers)
    validation: Mapped[str | None] = mapped_column(String(32), nullable=True)
    quality_score: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index("ix_usage_records_key_created", "key_id", "created_at"),
        Index("ix_usage_records_created", "created_at"),
        Index("ix_usage_records_org_created", "org_id", "created_at"),
    )


class UsageReject(Base):
    """A usage record the database refused (a value it would not store): set aside with
    the reason, so that one bad record never holds back the rest, and kept whole (JSON)
    for replay once the cause is fixed."""

    __tablename__ = "usage_rejects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    rejected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)


class LoraAdapter(Base):
    """A registered LoRA adapter; replicas load it by ``name`` (its key, unique) on first
    use. Clients call it by ``alias``, which resolves in the caller's scope: its
    project's adapter of that alias, else its organisation's (``project_id`` null), else
    the platform's (``org_id`` null: every organisation's)."""

    __tablename__ = "lora_adapters"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(200), index=True)
    org_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    project_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    base_model: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StoredResponse(Base):
    """A Response created with ``store`` (the default): the whole Response object and its
    input items (normalised, with ids) as JSON text, exactly as they were returned.
    ``project_id`` is the owner: any key of the project can read, continue or delete it
    (OpenAI's scoping); another project's keys get 404."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response: Mapped[str] = mapped_column(Text)
    input_items: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_responses_project_created", "project_id", "created_at"),
        Index("ix_responses_expires", "expires_at"),
    )


class WebhookEndpoint(Base):
    """Where an organisation's events go: a Standard Webhooks receiver (signed with
    ``secret``, sealed at rest) or a Slack, Discord or Teams incoming webhook (whose URL
    is the secret: sealed too, ``url_hint`` shows its host)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    url_sealed: Mapped[str] = mapped_column(Text)
    url_hint: Mapped[str] = mapped_column(String(300))
    secret_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    events: Mapped[str] = mapped_column(Text)  # JSON list of event types
    description: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox. Written in the event's own transaction
    where it has one, so no event is lost when a sender restarts; a sender claims a due
    row for ``claimed_until`` (another takes it over after), sends, and records the
    outcome; failures retry on the schedule, then stay ``failed`` until replayed."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the webhook-id
    endpoint_id: Mapped[str] = mapped_column(String(40), index=True)
    org_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the event, JSON
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)


class StoredFile(Base):
    """A file uploaded through ``/v1/files``: its metadata here, its bytes in the file
    storage (fsspec, ``location`` under the storage root). ``project_id`` owns it: any key
    of the project may read or delete it; others get 404. ``format`` and ``lines`` are
    what validation found (JSONL purposes)."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lines: Mapped[int | None] = mapped_column(Integer, nullable=True)
    location: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_files_project_created", "project_id", "created_at"),)


class FineTuneJob(Base):
    """A fine-tuning job (OpenAI's ``fine_tuning.job``). ``settings``: JSON of everything
    the run needs once "auto" is resolved (hyperparameters, LoRA, resources), so that a
    restarted job manager resumes the job exactly as it was submitted. ``error``: JSON
    ``{code, message, param}`` of a failed job."""

    __tablename__ = "fine_tuning_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    training_file: Mapped[str] = mapped_column(String(40))
    validation_file: Mapped[str | None] = mapped_column(String(40), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    settings: Mapped[str] = mapped_column(Text)
    job_metadata: Mapped[str | None] = mapped_column("metadata", Text, nullable=True)
    deploy: Mapped[bool] = mapped_column(Boolean, default=False)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_files: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of ids
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # what the launcher needs to release the run's resources if the run dies unseen (Ray
    # Train's placement group): a restarted manager releases it before resuming
    run_handle: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    estimated_finish: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )

    __table_args__ = (Index("ix_fine_tuning_jobs_project_created", "project_id", "created_at"),)


class FineTuneEvent(Base):
    """A job's event: a message, or a step's metrics (``data``: JSON). ``seq`` orders a
    job's events (the job manager writes them one at a time)."""

    __tablename__ = "fine_tuning_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_fine_tuning_events_job_seq"),)


class FineTuneCheckpoint(Base):
    """A checkpoint a job's run kept: where (``location``: a folder holding a PEFT adapter
    and the state a resumed run needs), at which step, with the step's metrics (JSON)."""

    __tablename__ = "fine_tuning_checkpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[str] = mapped_column(Text)
    location: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A fine-tuned model: what a succeeded job made (its ``name`` is the ``ft:`` name),
    with what it was made from and how it scored. ``deployed``: registered with the
    adapter registry under its name, for its project."""

    __tablename__ = "model_versions"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40))
    base_model: Mapped[str] = mapped_column(String(200))
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    adapter_location: Mapped[str] = mapped_column(String(1000))
    training_file: Mapped[str] = mapped_column(String(40))
    hyperparameters: Mapped[str] = mapped_column(Text)
    metrics: Mapped[str] = mapped_column(Text)
    deployed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # who may use it: its project, its whole organisation, or (``public``) the gallery's
    # browsers too, who install a copy of their own (forge.finetune.gallery)
    sharing: Mapped[str] = mapped_column(String(16), default="project")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_model_versions_project_suffix", "project_id", "suffix"),)


class GalleryRating(Base):
    """An organisation's rating (1 to 5) of a model published in the gallery; one per
    organisation and model, a later one replaces it."""

    __tablename__ = "gallery_ratings"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GalleryInstall(Base):
    """A gallery model deployed into a project of another organisation: a copy of its
    adapter (``location``), registered under ``alias`` for that project alone, so the
    publisher's later deletion takes nothing from the installer."""

    __tablename__ = "gallery_installs"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    alias: Mapped[str] = mapped_column(String(200))
    location: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LearningPolicy(Base):
    """A project's opt-in to learning from use for one suffix of a base model: requests
    to its models (``alias``: the stable name, ``ft:<base>:<org>:<suffix>``, served by
    ``current``) are kept as examples; every ``retrain_every`` examples rated at least
    ``min_score`` start the next version (``candidate_job``), which replaces ``current``
    if it does as well on ``validation_file`` (forge.finetune.learning)."""

    __tablename__ = "learning_policies"

    project_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    suffix: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    base_model: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(200), index=True)
    current: Mapped[str] = mapped_column(String(200))
    validation_file: Mapped[str] = mapped_column(String(40))
    retrain_every: Mapped[int] = mapped_column(Integer)
    min_score: Mapped[float] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    candidate_job: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LearningExample(Base):
    """A request to a learning model and its answer (``messages``: JSON, the request's
    conversation; ``answer``: the assistant's text), its caller's ``score`` (0 to 1, from
    ``POST /v1/feedback``) and ``correction`` (a better answer, trained on instead);
    ``job_id``: the retraining job that used it."""

    __tablename__ = "learning_examples"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40))
    suffix: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    messages: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_learning_examples_lineage", "project_id", "suffix", "job_id"),)


class BatchRow(Base):
    """A batch (OpenAI's ``batch``) over an uploaded file. It runs as the key that made it
    (``key_id``: its limits, budgets and models). ``paused_until``: a budget stopped it;
    it goes on then (or when the budget allows). ``errors``: JSON list of the input's."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(40))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), index=True)
    batch_metadata: Mapped[str | None] = mapped_column("metadata", Text, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    output_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    errors: Mapped[str | None] = mapped_column(Text, nullable=True)
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pause_reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_batches_project_created", "project_id", "created_at"),)


class BatchLine(Base):
    """One request of a batch: where it is in the input file (``offset``, ``length``), and
    its fate. ``pending`` → ``claimed`` (by a runner, until ``claimed_until``; a claim
    that runs out goes back to whoever claims next) → ``done`` or ``failed`` with its
    output line (``result``). A result is written only over an unfinished line, so a
    line never reaches the output twice."""

    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(8))
    claimed_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_batch_lines_batch_status_line", "batch_id", "status", "line"),)
