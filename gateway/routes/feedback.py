"""``POST /v1/feedback``: a caller scores an answer its project got (our path; OpenAI has
none), for the A/B experiments' reports."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from forge.errors import NotFound, ServiceUnavailable
from forge.feedback import FeedbackBody, FeedbackObject, FeedbackStore
from forge.keys import KeyInfo
from gateway.deps import caller, runtime
from gateway.runtime import GatewayRuntime

router = APIRouter()


@router.post("/v1/feedback", response_model=FeedbackObject)
async def feedback(
    body: FeedbackBody, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> FeedbackObject:
    if rt.tenancy is None:
        raise ServiceUnavailable("Feedback needs the platform's database.", retry_after=5)
    store = FeedbackStore(rt.tenancy.sessions)
    if not await store.record(key.project_id, body):
        await rt.shipper.flush()  # its record may still be in this replica's buffer
        if not await store.record(key.project_id, body):
            raise NotFound(
                f"No request {body.request_id!r} in this project (a record written by "
                "another gateway replica may take a moment to land: retry shortly).",
                param="request_id",
            )
    return FeedbackObject(request_id=body.request_id, score=body.score)
