"""The Batches API's objects in OpenAI's shapes (``Batch``, ``CreateBatchRequest``, the
output and error files' lines)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
RUNNING: frozenset[str] = frozenset({"in_progress", "cancelling"})
FINISHED: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})
WINDOW_S = {"24h": 24 * 3600}


def _unset_when_none(value: Any) -> bool:
    return value is None


class CreateBatch(BaseModel):
    """``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=40)
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(None, max_length=16)
    output_expires_after: dict[str, Any] | None = None


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchObject(BaseModel):
    """OpenAI's ``Batch``; times left out until they happen (the spec has them as
    integers, not nullable). ``paused_until`` and ``pause_reason``: the platform's own,
    while a budget holds the batch back."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = Field(None, exclude_if=_unset_when_none)
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = Field(None, exclude_if=_unset_when_none)
    error_file_id: str | None = Field(None, exclude_if=_unset_when_none)
    created_at: int
    in_progress_at: int | None = Field(None, exclude_if=_unset_when_none)
    expires_at: int | None = Field(None, exclude_if=_unset_when_none)
    finalizing_at: int | None = Field(None, exclude_if=_unset_when_none)
    completed_at: int | None = Field(None, exclude_if=_unset_when_none)
    failed_at: int | None = Field(None, exclude_if=_unset_when_none)
    expired_at: int | None = Field(None, exclude_if=_unset_when_none)
    cancelling_at: int | None = Field(None, exclude_if=_unset_when_none)
    cancelled_at: int | None = Field(None, exclude_if=_unset_when_none)
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    paused_until: int | None = Field(None, exclude_if=_unset_when_none)
    pause_reason: str | None = Field(None, exclude_if=_unset_when_none)


def output_line(
    line_id: str,
    custom_id: str | None,
    status_code: int | None,
    request_id: str | None,
    body: Any,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One line of the output or error file (``BatchRequestOutput``)."""
    response = None
    if status_code is not None:
        response = {"status_code": status_code, "request_id": request_id, "body": body}
    return {"id": line_id, "custom_id": custom_id, "response": response, "error": error}
