"""Sending one request to its provider (with fallbacks) and settling its usage.

The relay is where a request's outcome becomes a usage record: exactly one per request
that reached a provider, whether it succeeded, failed, or lost its client mid-stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import anyio
import orjson
from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import Span, Tracer, set_span_in_context

from forge.budgets.gate import BudgetAdmitted, BudgetGate
from forge.budgets.model import Costs, worst_case
from forge.config import RoutingConfig
from forge.credentials.opener import CredentialOpener
from forge.errors import (
    AuthenticationFailed,
    ForgeError,
    ServiceUnavailable,
    UpstreamRateLimited,
    unwrap_remote,
)
from forge.key_scope import check_model
from forge.keys import KeyInfo
from forge.limits.admission import Admission, Admitted, estimated_tokens, requested_output
from forge.protocol.exchange import Endpoint, ProviderReply, StreamEnd, StreamHead, Usage
from forge.protocol.sse import DONE, StreamText, error_event
from forge.quality.judge import Judge
from forge.quality.validation import (
    VALIDATION_HEADER,
    Finding,
    Mode,
    answer_text,
    check_chat_answer,
    check_stream_end,
    correction,
    requested_mode,
    wants_json,
)
from forge.routing.auto import AutoRouter
from forge.routing.breakers import Breakers
from forge.routing.experiments import arm_label, assign
from forge.routing.limits import NO_LIMITS, RouteLimits, route_limits
from forge.routing.planner import COOLING_DOWN, Plan, Planner
from forge.routing.prompts import adapt
from forge.routing.provider_limits import (
    BATCH,
    QUEUE_REFUSAL_CODE,
    Priority,
    ProviderQueues,
    Ticket,
    UpstreamLimits,
)
from forge.routing.retries import RetryPolicy, Verdict
from forge.routing.router import Route, Router, Target
from forge.routing.stats import RouteStats
from forge.tenancy.plans import plan_has, queue_rank, require_feature
from forge.tenancy.policy import ModelNotAllowed
from forge.tracing_spans import caller_context, end_failed_span, end_request_span
from forge.usage import UsageEvent, UsageStatus, cost_usd
from gateway.drain import SHUTTING_DOWN, Drain
from gateway.learning_capture import LearningCapture, StreamKeeper
from gateway.usage_shipper import UsageShipper
from gateway.usage_spool import PROGRESS_EVERY

log = logging.getLogger(__name__)
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
    validate: Mode | None = None  # the caller's x-forge-validate (else the model's)
    ticket: Ticket | None = None  # its place in the provider's rate limits, settled with it
    span: Span | None = None  # its trace span (forge.tracing), ended with its record
    trace_parent: Context | None = None  # the caller's trace (its traceparent header)
    background: bool = False  # a batch's line: behind live requests in provider queues

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
        queues: ProviderQueues | None = None,
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
        self.queues = queues or ProviderQueues({})  # provider accounts' rate limits
        self.judge: Judge | None = None  # scores a sample of answers (forge.quality.judge)
        # keeps exchanges with models that learn from use (gateway.learning_capture)
        self.learning: LearningCapture | None = None
        self.tracer: Tracer | None = None  # OpenTelemetry (forge.tracing; None: off)

    def context(self, request: Any, key: KeyInfo, endpoint: Endpoint) -> CallContext:
        """The call's context from its HTTP request: what the middleware stamped on its
        state, and its own routing limits (``x-forge-*`` headers; 400 if malformed)."""
        limits = route_limits(request.headers, self.router.providers)
        ctx = CallContext.of(request.state, key, endpoint, limits)
        ctx.validate = requested_mode(request.headers)
        if self.tracer is not None:
            ctx.trace_parent = caller_context(request.headers)
        return ctx

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
        validation: str | None = None,
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
            validation=validation,
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
        if ctx.span is not None:
            end_request_span(ctx.span, event)
            ctx.span = None
        tokens = event.prompt_tokens + event.completion_tokens
        if ctx.ticket is not None:
            ctx.ticket.settle(tokens)
            ctx.ticket = None
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

    async def _traced_plan(self, ctx: CallContext, body: dict[str, Any]) -> Plan:
        """``_plan``; a request refused before any provider ends its span here (it has
        no usage record to end it)."""
        if self.tracer is not None:
            ctx.span = self.tracer.start_span(
                "forge.request",
                context=ctx.trace_parent,
                attributes={
                    "forge.request_id": ctx.request_id,
                    "forge.endpoint": ctx.endpoint,
                    "forge.org_id": ctx.org_id or "",
                    "forge.project_id": ctx.project_id or "",
                },
            )
        try:
            return await self._plan(ctx, body)
        except BaseException as exc:
            if ctx.span is not None:
                if isinstance(exc, Exception):
                    error = as_forge_error(exc)
                    end_failed_span(ctx.span, error.status_code, error.code)
                else:
                    end_failed_span(ctx.span, 499, "cancelled")
                ctx.span = None
            raise

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

    async def _queued(
        self, ctx: CallContext, target: Target, sent: dict[str, Any], keyed: dict[str, str]
    ) -> Ticket | None:
        """Wait for the target's provider account to have room (forge.routing.
        provider_limits; a 429 ``provider_rate_limited`` past its bound). A request with the
        project's own key is its own account's business: not queued."""
        if keyed:
            return None
        queue = self.queues.get(target.model.provider)
        plan = ctx.key.plan if ctx.key is not None else None
        priority = Priority(rank=queue_rank(plan), live=not ctx.background)
        return await queue.acquire(estimated_tokens(sent, ctx.body_bytes), priority)

    def _provider_limits(self, target: Target, limits: UpstreamLimits | None) -> None:
        """What the provider said of its account's rate limits, from an answer's headers."""
        if limits is not None:
            self.queues.get(target.model.provider).observe(limits)

    def _provider_refused(self, target: Target, error: ForgeError, keyed: dict[str, str]) -> None:
        """The provider's own 429 holds its account's queue until its Retry-After."""
        if keyed or not isinstance(error, UpstreamRateLimited):
            return
        if error.code == QUEUE_REFUSAL_CODE:
            return
        queue = self.queues.get(target.model.provider)
        if error.limits is not None:
            queue.observe(error.limits)
        queue.refused(error.retry_after)

    def _call_span(self, ctx: CallContext, target: Target, attempt: int) -> Span | None:
        """A try's span, under the request's (None: not traced)."""
        if self.tracer is None or ctx.span is None:
            return None
        return self.tracer.start_span(
            "forge.provider.call",
            context=set_span_in_context(ctx.span),
            attributes={
                "forge.provider": target.model.provider,
                "forge.model": target.model.name,
                "forge.provider_model": target.model.provider_model,
                "forge.attempt": attempt,
            },
        )

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
                span = self._call_span(ctx, target, attempt)
                try:
                    ctx.ticket = await self._queued(ctx, target, sent, keyed)
                    t_call = time.perf_counter()
                    if span is None:
                        answer = await call(target, sent, keyed)
                    else:  # current while the provider is called: its traceparent
                        token = attach(set_span_in_context(span))
                        try:
                            answer = await call(target, sent, keyed)
                        finally:
                            detach(token)
                        span.end()
                    return target, answer, t_call
                except Exception as exc:
                    self.stats.ended(name)
                    error = _own_key_refused(as_forge_error(exc), keyed)
                    if span is not None:
                        end_failed_span(span, error.status_code, error.code)
                    self._provider_refused(target, error, keyed)
                    verdict = self._failed(target, error, attempt)
                    if ctx.ticket is not None:
                        ctx.ticket.settle(0)  # sent and failed: a try, no tokens
                        ctx.ticket = None
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
                    if span is not None:
                        end_failed_span(span, 499, "cancelled")
                    self.stats.ended(name)
                    self.breakers.release(name)
                    if ctx.ticket is not None:
                        ctx.ticket.release()
                        ctx.ticket = None
                    raise
        raise AssertionError("a plan has at least one target")

    async def complete(
        self, ctx: CallContext, body: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        """The provider's JSON answer and the headers to send with it."""
        plan = await self._traced_plan(ctx, body)

        def call(target: Target, sent: dict[str, Any], keyed: dict[str, str]) -> Any:
            return target.client.complete(ctx.endpoint, sent, target.model.name, **keyed)

        target, reply, t_call = await self._first_answer(ctx, plan, body, False, call)
        self._provider_limits(target, reply.limits)
        name = target.model.name
        self.stats.ended(name)
        self.breakers.success(name)
        self.stats.observe(name, _ms_since(t_call), reply.usage.completion_tokens, None)
        answer, usage, upstream_ms, finding = reply.body, reply.usage, reply.upstream_ms, None
        mode = ctx.validate or target.model.validation
        if ctx.endpoint == "chat/completions" and mode != "off":
            answer, usage, upstream_ms, finding = await self._validated(
                ctx, target, body, reply, retry=mode == "retry"
            )
        settle = partial(
            self._record,
            ctx,
            target,
            stream=False,
            usage=usage,
            status="ok",
            http_status=200,
            validation=None if finding is None else finding.check,
        )
        self._after_response(ctx, settle)
        judge = self.judge
        judged = ctx.endpoint == "chat/completions" and (finding is None or finding.ok)
        if judge is not None and judged and judge.picks():
            text = answer_text(orjson.loads(answer))
            judge.start(ctx.request_id, body, text, partial(self._ask_judge, ctx))
        if self.learning is not None and ctx.endpoint == "chat/completions":
            self.learning.offer(ctx.request_id, ctx.org_id, ctx.project_id, body, answer)
        overhead = _ms_since(ctx.t0) - upstream_ms
        headers = self._headers(ctx, overhead, target)
        if finding is not None:
            headers[VALIDATION_HEADER] = finding.header()
        return answer, headers

    async def _ask_judge(
        self, judged: CallContext, request: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The judge model's answer to ``request`` (None if its call failed), recorded
        as a usage record of the judged request's organisation and project."""
        if self.judge is None or self.judge.config.model is None:
            return None
        ctx = replace(
            judged,
            request_id=f"{judged.request_id}.judge",
            client_request_id=None,
            t0=time.perf_counter(),
            after_response=None,
            admitted=None,
            budgeted=None,
            plan=None,
            arm=None,
            span=None,
        )
        target = (await self.router.resolve(self.judge.config.model)).targets[0]
        sent = {**request, "model": target.model.provider_model}
        queue = self.queues.get(target.model.provider)
        try:  # background work: behind every live request for the provider's capacity
            ctx.ticket = await queue.acquire(estimated_tokens(sent, 0), BATCH)
        except ForgeError as exc:
            log.info("judge skipped, %s is at its rate limit: %s", target.model.provider, exc)
            return None
        try:
            reply = await target.client.complete(ctx.endpoint, sent, target.model.name)
        except Exception as exc:
            error = as_forge_error(exc)
            self._provider_refused(target, error, {})
            self._fail(ctx, target, error, stream=False)
            return None
        self._provider_limits(target, reply.limits)
        self._record(ctx, target, stream=False, usage=reply.usage, status="ok", http_status=200)
        answer: dict[str, Any] = orjson.loads(reply.body)
        return answer

    async def _validated(
        self,
        ctx: CallContext,
        target: Target,
        body: dict[str, Any],
        reply: ProviderReply,
        retry: bool,
    ) -> tuple[bytes, Usage, float, Finding]:
        """The answer checked (forge.quality.validation); with ``retry``, an answer that
        is not the JSON asked for goes back to the same target once with what was wrong:
        the second answer is sent if it passes, else the first. Both calls' tokens count."""
        try:
            first = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return reply.body, reply.usage, reply.upstream_ms, Finding("empty", "not JSON")
        finding = check_chat_answer(first, body.get("response_format"))
        if not (retry and finding.correctable):
            return reply.body, reply.usage, reply.upstream_ms, finding
        fixed = correction(body, answer_text(first), finding)
        sent = {**adapt(target.model, fixed), "model": target.model.provider_model}
        if ctx.ticket is not None:  # the first call's place in the provider's limits
            ctx.ticket.settle(reply.usage.prompt_tokens + reply.usage.completion_tokens)
            ctx.ticket = None
        keyed = self._keyed(ctx, target)
        ticket = None
        try:
            ticket = await self._queued(ctx, target, sent, keyed)
            again = await target.client.complete(ctx.endpoint, sent, target.model.name, **keyed)
            second = check_chat_answer(orjson.loads(again.body), body.get("response_format"))
        except Exception as exc:  # the first answer stands, as it was
            if ticket is not None:
                ticket.settle(0)
            log.warning("validation retry to %s failed: %s", target.model.name, exc)
            return reply.body, reply.usage, reply.upstream_ms, finding
        self._provider_limits(target, again.limits)
        if ticket is not None:
            ticket.settle(again.usage.prompt_tokens + again.usage.completion_tokens)
        both = Usage(
            prompt_tokens=reply.usage.prompt_tokens + again.usage.prompt_tokens,
            completion_tokens=reply.usage.completion_tokens + again.usage.completion_tokens,
            estimated=reply.usage.estimated or again.usage.estimated,
        )
        upstream_ms = reply.upstream_ms + again.upstream_ms
        if second.ok:
            return again.body, both, upstream_ms, Finding("corrected", finding.message)
        return reply.body, both, upstream_ms, finding

    async def open_stream(
        self, ctx: CallContext, body: dict[str, Any], include_usage: bool
    ) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """Start the stream and wait for its first chunk, so that failures before any
        output are still answered with a proper HTTP status (and may still fall back:
        once a token is out, the stream is the target's)."""
        plan = await self._traced_plan(ctx, body)

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
        self._provider_limits(target, head.limits)
        self.breakers.success(target.model.name)
        ttft_ms = _ms_since(ctx.t0)
        overhead = ttft_ms - head.upstream_ms
        keep = None
        json_text, response_format = None, body.get("response_format")
        if ctx.endpoint == "chat/completions":
            if self.learning is not None:
                keep = self.learning.stream_keeper(ctx.request_id, ctx.org_id, ctx.project_id, body)
            if wants_json(response_format):
                json_text = keep or StreamText()  # to check the answer's JSON at the end
        relayed = self._relay(
            ctx, target, source, head, ttft_ms, t_call, keep, json_text, response_format
        )
        return relayed, self._headers(ctx, overhead, target)

    async def _relay(
        self,
        ctx: CallContext,
        target: Target,
        source: AsyncIterator[Any],
        head: StreamHead,
        ttft_ms: float,
        t_call: float,
        keep: StreamKeeper | None = None,
        json_text: StreamText | None = None,
        response_format: Any = None,
    ) -> AsyncIterator[bytes]:
        """The stream to the client, recorded at its end. ``keep`` and ``json_text`` (the
        same object when both are wanted) gather the answer's text as it goes, the latter
        to check it against ``response_format`` at the end."""
        end: StreamEnd | None = None
        first_token_ms = _ms_since(t_call)
        chunks = 0
        price = target.model.output_price_per_mtok
        gather = keep or json_text
        try:
            if gather is not None:
                gather.feed(head.data)
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
                    if gather is not None:
                        gather.feed(item)
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
                if keep is not None and end.status == "ok":
                    keep.done()
                checked = end.status == "ok" and ctx.endpoint == "chat/completions"
                mode = ctx.validate or target.model.validation
                finding = (
                    check_stream_end(
                        end.finish_reason,
                        end.content_chunks,
                        None if json_text is None else json_text.text,
                        response_format,
                    )
                    if checked and mode != "off"
                    else None
                )
                self._record(
                    ctx,
                    target,
                    stream=True,
                    usage=end.usage,
                    status=end.status,
                    http_status=end.http_status,
                    error_code=end.error_code,
                    ttft_ms=ttft_ms,
                    validation=None if finding is None else finding.check,
                )
