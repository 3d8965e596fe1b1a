"""Sending one request to its provider (with fallbacks) and settling its usage.

The relay is where a request's outcome becomes a usage record: exactly one per request
that reached a provider, whether it succeeded, failed, or lost its client mid-stream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio

from actors.usage_shipper import UsageShipper
from actors.usage_spool import PROGRESS_EVERY
from forge.budgets.gate import BudgetAdmitted, BudgetGate
from forge.budgets.model import Costs, worst_case
from forge.credentials.opener import CredentialOpener
from forge.errors import (
    AuthenticationFailed,
    ForgeError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamRateLimited,
    unwrap_remote,
)
from forge.key_scope import check_model
from forge.keys import KeyInfo
from forge.limits.admission import Admission, Admitted, requested_output
from forge.tenancy.plans import plan_has, require_feature
from forge.usage import UsageEvent, UsageStatus, cost_usd
from gateway.drain import SHUTTING_DOWN, Drain
from serve.capabilities import check_request
from serve.providers.base import Endpoint, StreamEnd, StreamHead, Usage
from serve.providers.sse import DONE, error_event
from serve.router import Router, Target

# What a fallback model may answer instead: the provider's failures and 429s, and a part
# of the platform restarting; never the platform's own limits (a plain RateLimited).
RETRYABLE = (UpstreamError, UpstreamRateLimited, ServiceUnavailable)


@dataclass(slots=True)
class CallContext:
    request_id: str
    key_id: str | None
    t0: float
    endpoint: Endpoint
    client_request_id: str | None = None
    # Run once the response has been handed to the server (RequestContextMiddleware).
    after_response: list[Callable[[], None]] | None = None
    org_id: str | None = None
    project_id: str | None = None
    key: KeyInfo | None = None  # None: under no limits
    body_bytes: int = 0  # of the request as sent, for the tokens it is estimated at
    admitted: Admitted | None = None  # by the rate limits; settled with the real usage
    budgeted: BudgetAdmitted | None = None  # by the budgets; settled with the real cost

    @classmethod
    def of(cls, state: Any, key: KeyInfo, endpoint: Endpoint) -> CallContext:
        """From the request state ``RequestContextMiddleware`` (and ``read_json_object``)
        stamped, for ``key``."""
        return cls(
            state.request_id,
            key.id,
            state.t0,
            endpoint,
            state.client_request_id,
            state.after_response,
            key.org_id,
            key.project_id,
            key,
            getattr(state, "body_bytes", 0),
        )


def as_forge_error(exc: BaseException) -> ForgeError:
    """Ray wraps what a deployment raised; a Ray failure itself means the proxy is down."""
    original = unwrap_remote(exc)
    if isinstance(original, ForgeError):
        return original
    return ServiceUnavailable(
        f"The provider proxy is unavailable ({original.__class__.__name__}); retry shortly.",
        retry_after=1,
    )


def _can_serve(target: Target, body: dict[str, Any]) -> bool:
    try:
        check_request(target.model, body)
    except InvalidRequest:
        return False
    return True


def shared_only(targets: tuple[Target, ...], plan: str) -> tuple[Target, ...]:
    """The targets among the platform's shared models (a plan without every provider:
    the model asked for must be one, and no fallback leaves them); 403 naming the plan
    that has every provider otherwise."""
    if not targets[0].model.shared:
        require_feature(plan, "all_providers")
    return tuple(t for t in targets if t.model.shared)


def _worst_case(targets: tuple[Target, ...], body: dict[str, Any], body_bytes: int) -> Costs:
    """The most the request can cost on any model that may answer it (fallbacks too)."""
    output = requested_output(body)
    costs = [
        worst_case(
            body_bytes,
            output,
            t.model.input_price_per_mtok,
            t.model.output_price_per_mtok,
            t.model.context_window,
        )
        for t in targets
    ]
    return max(costs, key=lambda c: (c.usd, c.tokens))


def _own_key_refused(error: ForgeError, keyed: dict[str, str]) -> ForgeError:
    """A provider refusing a project's own key is the project's to fix (its
    ``provider_credentials``), not a fault in the platform's configuration."""
    if not keyed or error.code != "provider_authentication_failed":
        return error
    return AuthenticationFailed(
        f"Provider {error.provider!r} refused this project's own key for it; replace it "
        "under /v1/organization/projects/{project_id}/provider_credentials.",
        code="provider_credential_rejected",
        provider=error.provider,
    )


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


class Relay:
    def __init__(
        self,
        router: Router,
        shipper: UsageShipper,
        drain: Drain | None = None,
        admission: Admission | None = None,
        budgets: BudgetGate | None = None,
        credentials: CredentialOpener | None = None,
    ) -> None:
        self.router = router
        self.credentials = credentials
        self.shipper = shipper
        self.drain = drain or Drain()
        self.admission = admission
        self.budgets = budgets

    def _event(
        self,
        ctx: CallContext,
        target: Target,
        *,
        stream: bool,
        usage: Usage,
        status: UsageStatus,
        http_status: int,
        error_code: str | None = None,
        ttft_ms: float | None = None,
    ) -> UsageEvent:
        model = target.model
        return UsageEvent(
            request_id=ctx.request_id,
            client_request_id=ctx.client_request_id,
            created_at=datetime.now(UTC),
            key_id=ctx.key_id,
            org_id=ctx.org_id,
            project_id=ctx.project_id,
            endpoint=ctx.endpoint,
            model=model.name,
            provider=model.provider,
            provider_model=model.provider_model,
            stream=stream,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated,
            cost_usd=cost_usd(
                usage.prompt_tokens,
                usage.completion_tokens,
                model.input_price_per_mtok,
                model.output_price_per_mtok,
            ),
            latency_ms=_ms_since(ctx.t0),
            ttft_ms=ttft_ms,
            status=status,
            http_status=http_status,
            error_code=error_code,
        )

    def _started(self, ctx: CallContext, target: Target, stream: bool) -> None:
        """Trace an upstream call before it starts: if this replica dies before the call
        settles, a successor turns the trace into an ``interrupted`` record."""
        self.shipper.started(
            self._event(
                ctx, target, stream=stream, usage=Usage(), status="interrupted", http_status=0
            )
        )

    def _record(self, ctx: CallContext, target: Target, **fields: Any) -> None:
        """Settle the call: its one record, to the shipper (``_event``'s fields), and its
        real tokens against its rate limits' estimate."""
        event = self._event(ctx, target, **fields)
        self.shipper.add(event)  # before the settling: a hold goes back after its records
        tokens = event.prompt_tokens + event.completion_tokens
        if ctx.admitted is not None:
            ctx.admitted.settle(tokens)
        if ctx.budgeted is not None:
            ctx.budgeted.settle(Costs(usd=event.cost_usd, requests=1, tokens=tokens))

    def _after_response(self, ctx: CallContext, record: Callable[[], None]) -> None:
        """Settle an answered call once its answer is out: a replica that dies before
        then leaves the call's trace, which becomes an ``interrupted`` record, instead of
        an ``ok`` record for an answer no client received."""
        if ctx.after_response is None:
            record()
        else:
            ctx.after_response.append(record)

    def _fail(self, ctx: CallContext, target: Target, error: ForgeError, stream: bool) -> None:
        self._record(
            ctx,
            target,
            stream=stream,
            usage=Usage(),
            status="error",
            http_status=error.status_code,
            error_code=error.code,
        )

    async def _targets(self, ctx: CallContext, body: dict[str, Any]) -> tuple[Target, ...]:
        """The model's targets that can serve ``body``; a 403 if the caller's project may
        not use it, a 400 if the model itself cannot, a 429 past the caller's rate limits."""
        key = ctx.key
        if key is None:
            targets = await self.router.resolve(body["model"])
        else:
            targets = await self.router.resolve(body["model"], key.org_id, key.project_id)
        if key is not None:
            if key.model_policy is not None:
                key.model_policy.check(key.project_id, body["model"], targets[0].model.name)
            if key.allowed_models is not None:
                check_model(key.id, key.allowed_models, body["model"], targets[0].model.name)
            if key.plan is not None and not plan_has(key.plan, "all_providers"):
                targets = shared_only(targets, key.plan)
        check_request(targets[0].model, body)
        if self.admission is not None and ctx.key is not None:
            model = targets[0].model.name
            ctx.admitted = await self.admission.admit(ctx.key, model, body, ctx.body_bytes)
            if ctx.admitted is not None and ctx.after_response is not None:
                # its permits free when the exchange ends, however it ends (else: when
                # its record settles it)
                ctx.after_response.append(ctx.admitted.release)
        serving = tuple(t for t in targets if _can_serve(t, body))
        if self.budgets is not None and ctx.key is not None and ctx.key.budgets:
            worst = _worst_case(serving, body, ctx.body_bytes)
            try:
                ctx.budgeted = await self.budgets.admit(ctx.key.budgets, worst)
            except BaseException:
                if ctx.admitted is not None:
                    ctx.admitted.release()
                raise
        return serving

    def _keyed(self, ctx: CallContext, target: Target) -> dict[str, str]:
        """``api_key=`` the project's own key for the target's provider, if it set one."""
        if self.credentials is None:
            return {}
        try:
            api_key = self.credentials.api_key(ctx.key, target.model.provider)
        except ForgeError:
            if ctx.admitted is not None:
                ctx.admitted.release()
            raise
        return {} if api_key is None else {"api_key": api_key}

    @staticmethod
    def _headers(ctx: CallContext, overhead_ms: float) -> dict[str, str]:
        headers = {"x-forge-overhead-ms": f"{max(overhead_ms, 0):.2f}"}
        if ctx.admitted is not None:
            headers.update(ctx.admitted.headers)
        return headers

    async def complete(
        self, ctx: CallContext, body: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        """The provider's JSON answer and the headers to send with it."""
        targets = await self._targets(ctx, body)
        for i, target in enumerate(targets):
            call = {**body, "model": target.model.provider_model}
            keyed = self._keyed(ctx, target)
            self._started(ctx, target, stream=False)
            try:
                reply = await target.client.complete(ctx.endpoint, call, target.model.name, **keyed)
            except Exception as exc:
                error = _own_key_refused(as_forge_error(exc), keyed)
                if isinstance(error, RETRYABLE) and i + 1 < len(targets):
                    continue
                self._fail(ctx, target, error, stream=False)
                raise error from None
            settle = partial(
                self._record,
                ctx,
                target,
                stream=False,
                usage=reply.usage,
                status="ok",
                http_status=200,
            )
            self._after_response(ctx, settle)
            overhead = _ms_since(ctx.t0) - reply.upstream_ms
            return reply.body, self._headers(ctx, overhead)
        raise AssertionError("a model always has at least one target")

    async def open_stream(
        self, ctx: CallContext, body: dict[str, Any], include_usage: bool
    ) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """Start the stream and wait for its first chunk, so that failures before any
        output are still answered with a proper HTTP status."""
        targets = await self._targets(ctx, body)
        for i, target in enumerate(targets):
            call = {**body, "model": target.model.provider_model}
            keyed = self._keyed(ctx, target)
            self._started(ctx, target, stream=True)
            source = target.client.stream(
                ctx.endpoint, call, target.model.name, include_usage, **keyed
            )
            try:
                head = await anext(source)
            except Exception as exc:
                error = _own_key_refused(as_forge_error(exc), keyed)
                if isinstance(error, RETRYABLE) and i + 1 < len(targets):
                    continue
                self._fail(ctx, target, error, stream=True)
                raise error from None
            if not isinstance(head, StreamHead):
                raise AssertionError(f"stream began with {type(head).__name__}")
            ttft_ms = _ms_since(ctx.t0)
            overhead = ttft_ms - head.upstream_ms
            return self._relay(ctx, target, source, head, ttft_ms), self._headers(ctx, overhead)
        raise AssertionError("a model always has at least one target")

    async def _relay(
        self,
        ctx: CallContext,
        target: Target,
        source: AsyncIterator[Any],
        head: StreamHead,
        ttft_ms: float,
    ) -> AsyncIterator[bytes]:
        end: StreamEnd | None = None
        chunks = 0
        price = target.model.output_price_per_mtok
        try:
            yield head.data
            try:
                async for item in source:
                    if isinstance(item, StreamEnd):
                        end = item
                        break
                    chunks += 1
                    if chunks % PROGRESS_EVERY == 0:
                        cost = cost_usd(0, chunks, 0.0, price)
                        self.shipper.progress(ctx.request_id, chunks, cost)
                    yield item
            except Exception as exc:  # the proxy itself failed mid-stream
                error = as_forge_error(exc)
                end = StreamEnd(
                    usage=Usage(completion_tokens=chunks, estimated=True),
                    status="error",
                    error_code=error.code,
                    http_status=error.status_code,
                )
                yield error_event(error.to_body())
                yield DONE
        finally:
            if end is None:
                with anyio.CancelScope(shield=True):
                    await source.aclose()  # type: ignore[attr-defined]
                usage = Usage(completion_tokens=chunks, estimated=True)
                ended_by_drain = self.drain.expired  # else the client left
                self._record(
                    ctx,
                    target,
                    stream=True,
                    usage=usage,
                    status="error" if ended_by_drain else "client_disconnected",
                    http_status=503 if ended_by_drain else 499,
                    error_code=SHUTTING_DOWN if ended_by_drain else None,
                    ttft_ms=ttft_ms,
                )
            else:
                self._record(
                    ctx,
                    target,
                    stream=True,
                    usage=end.usage,
                    status=end.status,
                    http_status=end.http_status,
                    error_code=end.error_code,
                    ttft_ms=ttft_ms,
                )
