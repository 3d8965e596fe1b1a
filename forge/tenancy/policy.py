"""A project's model permissions as the hot path sees them: an allow list or a deny
list of model names. Verified keys carry their project's policy (``KeyInfo.model_policy``,
joined into the key lookup), so a request is checked with a list lookup and no query; a
change is pushed to every replica at once (the key-changes feed)."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel

from forge.errors import ForgeError

Mode = Literal["allow_list", "deny_list"]


class ModelNotAllowed(ForgeError):
    """OpenAI's answer for a model outside a project's permissions: 403, with the code it
    gives a model the caller may not see."""

    status_code = 403
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class ModelPolicy(BaseModel):
    mode: Mode
    model_ids: list[str]

    def allows(self, *names: str) -> bool:
        """``names``: the model as requested and what it resolved to (an adapter's base
        model): an allow list needs one of them listed, a deny list none."""
        listed = any(name in self.model_ids for name in names)
        return listed if self.mode == "allow_list" else not listed

    def check(self, project_id: str, requested: str, *resolved: str) -> None:
        if not self.allows(requested, *resolved):
            raise ModelNotAllowed(
                f"Project `{project_id}` does not have access to model `{requested}`.",
                param="model",
            )

    @classmethod
    def stored(cls, mode: str | None, model_ids: str | None) -> ModelPolicy | None:
        if mode is None or model_ids is None:
            return None
        return cls(mode=mode, model_ids=json.loads(model_ids))
