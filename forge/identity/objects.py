"""The identity routes' request and response bodies (our paths: OpenAI has none)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterBody(Body):
    email: str = Field(pattern=EMAIL, max_length=320)
    password: str = Field(min_length=1, max_length=4096)


class TokenBody(Body):
    token: str = Field(min_length=1, max_length=200)


class LoginBody(Body):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=4096)
    organization: str | None = Field(
        None, max_length=40, description="Which of the person's organisations to act in."
    )
    totp_code: str | None = Field(None, max_length=16)
    recovery_code: str | None = Field(None, max_length=32)


class ResetBody(Body):
    email: str = Field(min_length=1, max_length=320)


class ResetConfirmBody(Body):
    token: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=4096)


class PasswordChangeBody(Body):
    current_password: str = Field(min_length=1, max_length=4096)
    new_password: str = Field(min_length=1, max_length=4096)


class EraseBody(Body):
    password: str | None = Field(
        None, max_length=4096, description="A local account's password (SSO accounts: none)."
    )


class CodeBody(Body):
    code: str = Field(min_length=1, max_length=32, description="A TOTP or recovery code.")


class Membership(BaseModel):
    id: str
    name: str
    user_id: str
    role: str


class AccountObject(BaseModel):
    id: str
    object: Literal["auth.account"] = "auth.account"
    email: str
    email_verified: bool
    mfa_enabled: bool
    organizations: list[Membership]


class SessionObject(BaseModel):
    id: str
    object: Literal["auth.session"] = "auth.session"
    organization: str
    user_id: str
    created_at: int
    last_seen_at: int
    expires_at: int
    source_ip: str | None
    user_agent: str | None
    current: bool = False
    restricted: bool = Field(
        False, description="The organisation requires a second factor not yet enrolled."
    )


class LoginObject(BaseModel):
    object: Literal["auth.login"] = "auth.login"
    account: AccountObject
    session: SessionObject
    csrf_token: str = Field(description="Send as X-CSRF-Token with every state change.")


class TotpEnrolment(BaseModel):
    object: Literal["auth.totp_enrolment"] = "auth.totp_enrolment"
    secret: str
    otpauth_uri: str


class RecoveryCodes(BaseModel):
    object: Literal["auth.recovery_codes"] = "auth.recovery_codes"
    codes: list[str] = Field(description="Shown once; each works once instead of a TOTP code.")
