"""Sending one request to its provider (with fallbacks) and settling its usage.

The relay is where a request's outcome becomes a usage record: exactly one per request
that reached a provider, whether it succeeded, failed, or lost its client mid-stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import anyio

from forge.budgets.gate import BudgetAdmitted, BudgetGate
from forge.budgets.model import Costs, worst_case
from forge.config import RoutingConfig
from forge.credentials.opener import CredentialOpener
from forge.errors import AuthenticationFailed, ForgeError, ServiceUnavailable, unwrap_remote
from forge.key_scope import check_model
from forge.keys import KeyInfo
from forge.limits.admission import Admission, Admitted, requested_output
from forge.protocol.exchange import Endpoint, StreamEnd, StreamHead, Usage
from forge.protocol.sse import DONE, error_event
from forge.routing.auto import AutoRouter
from forge.routing.breakers import Breakers
from forge.routing.experiments import arm_label, assign
from forge.routing.limits import NO_LIMITS, RouteLimits, route_limits
from forge.routing.planner import COOLING_DOWN, Plan, Planner
from forge.routing.prompts import adapt
from forge.routing.retries import RetryPolicy, Verdict
from forge.routing.router import Route, Router, Target
from forge.routing.stats import RouteStats
from forge.tenancy.plans import plan_has, require_feature
from forge.tenancy.policy import ModelNotAllowed
from forge.usage import UsageEvent, UsageStatus, cost_usd
from gateway.drain import SHUTTING_DOWN, Drain
from gateway.usage_shipper import UsageShipper
from gateway.usage_spool import PROGRESS_EVERY

ROUTE_HEADER = "x-forge-route"
ROUTE_MAX = 300  # of the route's text kept in the usage record
T = TypeVar("T")


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
    limits: RouteLimits = NO_LIMITS  # the request's own, from its x-forge-* headers
    plan: Plan | None = None  # how it is routed (for its usage record)
    arm: str | None = None  # its A/B arm, "<experiment>/<arm>"

    @classmethod
    def of(
        cls, state: Any, key: KeyInfo, endpoint: Endpoint, limits: RouteLimits = NO_LIMITS
    ) -> CallContext:
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
            limits=limits,
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


def _permitted(route: Route, allows: Callable[[Target], bool]) -> Route:
    """The route without the targets the caller may not reach by their own names (a
    model denied to a project stays denied inside a group or behind ``auto``)."""
    kept = tuple(t for t in route.targets if allows(t))
    if len(kept) == len(route.targets):
        return route
    return replace(route, targets=kept, larger=tuple(t for t in route.larger if allows(t)))


def shared_only(route: Route, plan: str) -> Route:
    """The route's targets among the platform's shared models (a plan without every
    provider: the model asked for must be one, a group must have one, and no fallback
    leaves them); 403 naming the plan that has every provider otherwise."""
    shared = tuple(t for t in route.targets if t.model.shared)
    if not shared if route.group else not route.primary.model.shared:
        require_feature(plan, "all_providers")
    return replace(route, targets=shared, larger=tuple(t for t in route.larger if t.model.shared))


def _worst_case(targets: list[Target], body: dict[str, Any], body_bytes: int) -> Costs:
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


def _route_text(ctx: CallContext, target: Target) -> str:
    """How the call was routed (``x-forge-route``, and the usage record's ``route``)."""
    if ctx.plan is None:
        return ""
    text = ctx.plan.explain(target)
    return text if ctx.arm is None else f"{text}; arm={ctx.arm}"


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
        planner: Planner | None = None,
        retries: RetryPolicy | None = None,
        max_wait_s: float = 0.0,
        auto: AutoRouter | None = None,
    ) -> None:
        self.router = router
        self.credentials = credentials
        self.shipper = shipper
        self.drain = drain or Drain()
        self.admission = admission
        self.budgets = budgets
        self.planner = planner or Planner(Breakers(RoutingConfig().breaker), RouteStats())
        self.retries = retries or RetryPolicy(RoutingConfig().retry)
        self.max_wait_s = max_wait_s
        self.auto = auto

    def context(self, request: Any, key: KeyInfo, endpoint: Endpoint) -> CallContext:
        """The call's context from its HTTP request: what the middleware stamped on its
        state, and its own routing limits (``x-forge-*`` headers; 400 if malformed)."""
        limits = route_limits(request.headers, self.router.providers)
        return CallContext.of(request.state, key, endpoint, limits)

    @property
    def breakers(self) -> Breakers:
        return self.planner.breakers

    @property
    def stats(self) -> RouteStats:
        return self.planner.stats

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
            route=_route_text(ctx, target)[:ROUTE_MAX] or None,
            arm=ctx.arm,
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

    async def _plan(self, ctx: CallContext, body: dict[str, Any]) -> Plan:
        """The targets to try, in order; a 403 if the caller's project may not use the
        model, a 400 if it cannot serve the request (or the request's own limits rule
        every target out), a 429 past the caller's rate limits, a 503 when every target
        is cooling down (after waiting up to ``max_wait_s`` for one)."""
        key = ctx.key
        name = body["model"]
        experiment = self.router.experiment(name)
        if experiment is not None:
            user = body.get("user") if experiment.sticky == "user" else None
            arm = assign(experiment, str(user or ctx.key_id or ctx.request_id))
            ctx.arm, name = arm_label(experiment, arm), arm.model
        if self.auto is not None and AutoRouter.is_auto(name):
            route = self.auto.route(name, body)
        elif key is None:
            route = await self.router.resolve(name)
        else:
            route = await self.router.resolve(name, key.org_id, key.project_id)
        if key is not None:
            requested = body["model"]
            policy, allowed = key.model_policy, key.allowed_models
            if policy is not None:
                policy.check(key.project_id, requested, route.name)
                route = _permitted(route, lambda t: policy.allows(requested, t.model.name))
                if not route.targets:  # a group or auto whose every model is denied
                    policy.check(key.project_id, requested, requested)
                    raise ModelNotAllowed(
                        f"Project `{key.project_id}` does not have access to any model "
                        f"behind `{requested}`.",
                        param="model",
                    )
            if allowed is not None:
                check_model(key.id, allowed, requested, route.name)
                route = _permitted(route, lambda t: requested in allowed or t.model.name in allowed)
                if not route.targets:
                    check_model(key.id, allowed, route.name, route.name)
            if key.plan is not None and not plan_has(key.plan, "all_providers"):
                route = shared_only(route, key.plan)
        plan = ctx.plan = await self._planned(route, ctx, body)
        if self.admission is not None and ctx.key is not None:
            ctx.admitted = await self.admission.admit(ctx.key, route.name, body, ctx.body_bytes)
            if ctx.admitted is not None and ctx.after_response is not None:
                # its permits free when the exchange ends, however it ends (else: when
                # its record settles it)
                ctx.after_response.append(ctx.admitted.release)
        if self.budgets is not None and ctx.key is not None and ctx.key.budgets:
            worst = _worst_case(plan.targets, body, ctx.body_bytes)
            try:
                ctx.budgeted = await self.budgets.admit(ctx.key.budgets, worst)
            except BaseException:
                if ctx.admitted is not None:
                    ctx.admitted.release()
                raise
        return plan

    async def _planned(self, route: Route, ctx: CallContext, body: dict[str, Any]) -> Plan:
        deadline = time.monotonic() + self.max_wait_s
        while True:
            try:
                return self.planner.plan(route, body, ctx.body_bytes, ctx.limits)
            except ForgeError as exc:
                wait = exc.retry_after or 0.0
                if exc.code != COOLING_DOWN or time.monotonic() + wait > deadline:
                    raise
                await asyncio.sleep(wait)

    def _failed(self, target: Target, error: ForgeError, attempt: int) -> Verdict:
        """Judge a failed try, and tell the target's breaker."""
        verdict = self.retries.after(error, attempt)
        key = target.model.name
        if verdict.cool_down_s is not None:
            self.breakers.cool_down(key, verdict.cool_down_s, f"{error.status_code} {error.code}")
        elif verdict.target_failed:
            self.breakers.failure(key, f"{error.status_code} {error.code}")
        else:  # the caller's error, a refusal, a short 429: no verdict on the target
            self.breakers.release(key)
        return verdict

    def _stream_ended(
        self,
        target: Target,
        end: StreamEnd | None,
        first_token_ms: float,
        total_ms: float,
        chunks: int,
    ) -> None:
        name = target.model.name
        self.stats.ended(name)
        if end is None:  # the client left: nothing learnt of the target
            return
        if end.status == "ok":
            tokens = end.usage.completion_tokens or chunks
            self.stats.observe(name, total_ms, tokens, first_token_ms=first_token_ms)
        else:
            self.breakers.failure(name, f"mid-stream {end.error_code}")

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
    def _headers(ctx: CallContext, overhead_ms: float, target: Target) -> dict[str, str]:
        headers = {
            "x-forge-overhead-ms": f"{max(overhead_ms, 0):.2f}",
            ROUTE_HEADER: _route_text(ctx, target),
        }
        if ctx.admitted is not None:
            headers.update(ctx.admitted.headers)
        return headers

    async def _first_answer(
        self,
        ctx: CallContext,
        plan: Plan,
        body: dict[str, Any],
        stream: bool,
        call: Callable[[Target, dict[str, Any], dict[str, str]], Awaitable[T]],
    ) -> tuple[Target, T, float]:
        """Try the plan's targets in order, each with its retries, until one answers:
        that target, its answer (``call``'s) and when its call began. The last failure
        is recorded and raised."""
        last = len(plan.targets) - 1
        for i, target in enumerate(plan.targets):
            sent = {**adapt(target.model, body), "model": target.model.provider_model}
            keyed = self._keyed(ctx, target)
            name = target.model.name
            attempt = 0
            while True:
                self._started(ctx, target, stream=stream)
                self.breakers.attempt(name)
                self.stats.started(name)
                t_call = time.perf_counter()
                try:
                    return target, await call(target, sent, keyed), t_call
                except Exception as exc:
                    self.stats.ended(name)
                    error = _own_key_refused(as_forge_error(exc), keyed)
                    verdict = self._failed(target, error, attempt)
                    # a retry only while the target's breaker lets it (it may just have
                    # opened), but for a lone target, which nothing else can stand in for
                    open_now = last > 0 and self.breakers.blocked_until(name) is not None
                    if verdict.action == "retry" and not open_now:
                        await asyncio.sleep(verdict.delay_s)
                        attempt += 1
                        continue
                    if verdict.action != "fail" and i < last:
                        break
                    self._fail(ctx, target, error, stream=stream)
                    raise error from None
                except BaseException:  # cancelled (the client left): nothing learnt
                    self.stats.ended(name)
                    self.breakers.release(name)
                    raise
        raise AssertionError("a plan has at least one target")

    async def complete(
        self, ctx: CallContext, body: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        """The provider's JSON answer and the headers to send with it."""
        plan = await self._plan(ctx, body)

        def call(target: Target, sent: dict[str, Any], keyed: dict[str, str]) -> Any:
            return target.client.complete(ctx.endpoint, sent, target.model.name, **keyed)

        target, reply, t_call = await self._first_answer(ctx, plan, body, False, call)
        name = target.model.name
        self.stats.ended(name)
        self.breakers.success(name)
        self.stats.observe(name, _ms_since(t_call), reply.usage.completion_tokens, None)
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
        return reply.body, self._headers(ctx, overhead, target)

    async def open_stream(
        self, ctx: CallContext, body: dict[str, Any], include_usage: bool
    ) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """Start the stream and wait for its first chunk, so that failures before any
        output are still answered with a proper HTTP status (and may still fall back:
        once a token is out, the stream is the target's)."""
        plan = await self._plan(ctx, body)

        async def call(
            target: Target, sent: dict[str, Any], keyed: dict[str, str]
        ) -> tuple[AsyncIterator[Any], StreamHead]:
            source = target.client.stream(
                ctx.endpoint, sent, target.model.name, include_usage, **keyed
            )
            head = await anext(source)
            if not isinstance(head, StreamHead):
                raise AssertionError(f"stream began with {type(head).__name__}")
            return source, head

        target, (source, head), t_call = await self._first_answer(ctx, plan, body, True, call)
        self.breakers.success(target.model.name)
        ttft_ms = _ms_since(ctx.t0)
        overhead = ttft_ms - head.upstream_ms
        relayed = self._relay(ctx, target, source, head, ttft_ms, t_call)
        return relayed, self._headers(ctx, overhead, target)

    async def _relay(
        self,
        ctx: CallContext,
        target: Target,
        source: AsyncIterator[Any],
        head: StreamHead,
        ttft_ms: float,
        t_call: float,
    ) -> AsyncIterator[bytes]:
        end: StreamEnd | None = None
        first_token_ms = _ms_since(t_call)
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
            self._stream_ended(target, end, first_token_ms, _ms_since(t_call), chunks)
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
