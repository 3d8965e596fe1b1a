"""`build_app`: the gateway's FastAPI application around a replica's runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.errors import install_error_handlers
from gateway.middleware import RequestContextMiddleware
from gateway.routes import admin, anthropic, health, inference, models
from gateway.runtime import GatewayRuntime


def build_app(
    runtime: GatewayRuntime, request_id_source: Callable[[], str | None] | None = None
) -> FastAPI:
    """The app; ``request_id_source`` supplies the host's request id (Ray Serve's), which
    the host then also sends as ``x-request-id`` itself."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
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
    for module in (inference, anthropic, models, health, admin):
        app.include_router(module.router)
    app.add_middleware(
        RequestContextMiddleware,
        request_id_source=request_id_source,
        emit_request_id=request_id_source is None,
    )
    return app
