"""`build_app`: the gateway's FastAPI application around a replica's runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from forge.identity.scim import ScimError
from gateway.errors import install_error_handlers
from gateway.middleware import RequestContextMiddleware
from gateway.routes import (
    admin,
    anthropic,
    audit,
    auth,
    batches,
    budgets,
    experiments,
    feedback,
    files,
    fine_tuning,
    gallery,
    health,
    inference,
    limits,
    metrics,
    models,
    operator,
    organization,
    responses,
    scim,
)
from gateway.runtime import GatewayRuntime


def build_app(runtime: GatewayRuntime, behind_serve: bool = False) -> FastAPI:
    """The app; ``behind_serve``: Ray Serve's replica server hosts it, and puts the
    platform's request id in place and echoes it (``gateway.request_ids``)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        yield
        await runtime.close()

    app = FastAPI(
        title="PromptForge",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_exception_handler(ScimError, scim.scim_error)
    routers = (inference, anthropic, responses, models, health, admin, limits, budgets)
    routers = (*routers, organization, files, fine_tuning, gallery, batches)
    for module in (*routers, operator, audit, metrics, experiments, feedback, auth, scim):
        app.include_router(module.router)
    app.add_middleware(
        RequestContextMiddleware,
        behind_serve=behind_serve,
        drain=runtime.drain,
    )
    return app
