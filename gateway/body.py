"""Reading a JSON request body with a size limit, before anything else looks at it.

The ``Content-Type`` is not checked: a JSON body is read as JSON whatever the header says
(`curl -d` sends form encoding; the official SDKs always send application/json), and a
body that is not JSON is a 400 that names the header when it was not JSON's."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from forge.errors import InvalidRequest, PayloadTooLarge


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``max_bytes`` (checked against Content-Length
    first, then while reading a chunked body), 400 when it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"Request body of {declared} bytes exceeds the {max_bytes}-byte limit."
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request body exceeds the {max_bytes}-byte limit.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    request.state.body_bytes = size  # what a request's tokens are estimated from
    if not raw:
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", code="invalid_json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        declared_type = request.headers.get("content-type", "")
        hint = (
            ""
            if "json" in declared_type
            else f" The body was sent as {declared_type or 'no Content-Type'}; send a JSON "
            "object with 'Content-Type: application/json'."
        )
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg} (position {exc.pos})."
            + hint,
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    request.state.json_body = body  # for the audit log of an admin call
    return body
