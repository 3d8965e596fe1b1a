"""Config → Ray Serve application: one proxy deployment per provider, one gateway."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from forge.config import PlatformConfig, load_config
from serve.deployments import GatewayDeployment, ProviderDeployment

APP_NAME = "promptforge"
_QUIET = {"enable_access_log": False}


def build_application(config: PlatformConfig) -> Application:
    """The Serve application for ``config`` (optional providers without keys dropped)."""
    config = config.active()
    providers = {
        p.name: ProviderDeployment.options(
            name=f"provider-{p.name}",
            num_replicas=p.replicas,
            max_ongoing_requests=p.max_ongoing_requests,
            ray_actor_options={"num_cpus": p.num_cpus},
            logging_config=_QUIET,
        ).bind(p)
        for p in config.providers
        if p.placement == "deployment"
    }
    gw = config.gateway
    return GatewayDeployment.options(
        name="gateway",
        num_replicas=gw.replicas,
        max_ongoing_requests=gw.max_ongoing_requests,
        ray_actor_options={"num_cpus": gw.num_cpus},
        logging_config=_QUIET,
    ).bind(config, providers)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve run` / `serve deploy` / KubeRay: ``args: {config: PATH}``.

    Migrates the database and registers ``FORGE_MASTER_KEY`` as an admin key when set
    (a key is never generated here: there is no terminal to show it on)."""
    import asyncio

    from forge.db.engine import make_engine, make_sessionmaker
    from forge.db.migrate import upgrade
    from forge.keys import KeyStore
    from forge.settings import Settings

    settings = Settings()
    url = settings.resolved_database_url()
    upgrade(url)
    if settings.master_key:

        async def register() -> None:
            engine = make_engine(url)
            try:
                await KeyStore(make_sessionmaker(engine)).ensure_master(
                    settings.master_key.get_secret_value()
                )
            finally:
                await engine.dispose()

        asyncio.run(register())
    return build_application(load_config(args.get("config") or settings.config))
