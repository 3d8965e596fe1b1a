"""``POST /v1/feedback``: a caller scores an answer its project got (our path; OpenAI has
none), for the A/B experiments' reports."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from forge.errors import NotFound, ServiceUnavailable
from forge.feedback import FeedbackBody, FeedbackObject, FeedbackStore
from forge.keys import KeyInfo
from gateway.deps import caller, runtime
from gateway.runtime import GatewayRuntime

router = APIRouter()
log = logging.getLogger(__name__)


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
    learning = await _learning_example(body, key, rt)
    return FeedbackObject(request_id=body.request_id, score=body.score, learning=learning)


async def _learning_example(body: FeedbackBody, key: KeyInfo, rt: GatewayRuntime) -> bool:
    """The score (and correction) kept on the request's learning example, if its model
    learns from use; a retraining it completes starts now (else the job manager's own
    check starts it within a minute)."""
    capture = rt.relay.learning
    if capture is None:
        return False
    await capture.flush()  # its example may still be on its way
    example = await capture.store.rate(key.project_id, body.request_id, body.score, body.correction)
    if example is None:
        return False
    if rt.fine_tuning is not None:
        try:
            await rt.fine_tuning.retrain_if_due(key.project_id, example.suffix)
        except Exception as exc:  # the rating is kept; the periodic check retrains
            log.warning("learning: retraining check failed: %s", type(exc).__name__)
    return True
