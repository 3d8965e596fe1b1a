"""What one API key may call: its allowed models and endpoints, set when it is made.

A key with no list may call every model and endpoint its project may; with one, only
those (a 403 naming the key's allowance otherwise). Models are matched by the name the
request sends or, for an adapter, by its base model; endpoints by path, a path covering
the routes under it (``/v1/responses`` covers ``/v1/responses/{id}``).
"""

from __future__ import annotations

import json

from forge.errors import InvalidRequest, PermissionDenied

ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/models",
    "/v1/files",
    "/v1/fine_tuning",
    "/v1/batches",
)
MAX_MODELS = 1000


def checked(models: list[str] | None, endpoints: list[str] | None) -> tuple[str | None, str | None]:
    """The lists as stored (JSON, or None for no restriction); a 400 naming the field for
    an empty name, an unknown endpoint or too many models."""
    if models is not None and (
        not 1 <= len(models) <= MAX_MODELS or any(not m.strip() for m in models)
    ):
        raise InvalidRequest(
            f"'allowed_models' holds 1 to {MAX_MODELS} non-empty model names.",
            param="allowed_models",
            code="invalid_value",
        )
    if endpoints is not None:
        unknown = [e for e in endpoints if e not in ENDPOINTS] or ([] if endpoints else [""])
        if unknown:
            raise InvalidRequest(
                f"Unknown endpoint {unknown[0]!r} in 'allowed_endpoints'; one of "
                f"{', '.join(ENDPOINTS)}.",
                param="allowed_endpoints",
                code="invalid_value",
            )
    return (
        None if models is None else json.dumps(list(dict.fromkeys(m.strip() for m in models))),
        None if endpoints is None else json.dumps(list(dict.fromkeys(endpoints))),
    )


def stored(raw: str | None) -> list[str] | None:
    return None if raw is None else list(json.loads(raw))


def check_endpoint(key_id: str, allowed: list[str], route_path: str) -> None:
    if any(route_path == e or route_path.startswith(e + "/") for e in allowed):
        return
    raise PermissionDenied(
        f"The API key {key_id} may not call {route_path}; it may call {', '.join(allowed)}.",
        code="endpoint_not_allowed",
    )


def check_model(key_id: str, allowed: list[str], requested: str, resolved: str) -> None:
    if requested in allowed or resolved in allowed:
        return
    raise PermissionDenied(
        f"The API key {key_id} may not use the model {requested!r}; it may use "
        f"{', '.join(allowed) or 'none'}.",
        param="model",
        code="model_not_allowed",
    )
