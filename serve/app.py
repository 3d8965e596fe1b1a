"""Config → Ray Serve application: a deployment per provider placed in one (proxy or
self-hosted model server), one gateway."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from forge.config import (
    GENERATIVE_TYPES,
    SELF_HOSTED_TYPES,
    PlatformConfig,
    ProviderConfig,
    load_config,
)
from serve.constants import DRAIN_MARGIN_S
from serve.deployments import GatewayDeployment, ModelServerDeployment, ProviderDeployment

_QUIET = {"enable_access_log": False}
MODEL_HEALTH_PERIOD_S = 5.0  # also how often a model replica reports its stats


def deployment_options(p: ProviderConfig) -> dict[str, Any]:
    """Serve options for a provider's deployment, from its config: replicas or
    autoscaling, CPUs/GPUs/accelerator, and a placement group for tensor parallelism."""
    actor: dict[str, Any] = {"num_cpus": p.num_cpus}
    options: dict[str, Any] = {
        "name": f"provider-{p.name}",
        "max_ongoing_requests": p.max_ongoing_requests,
        "logging_config": _QUIET,
        "ray_actor_options": actor,
    }
    if p.type not in SELF_HOSTED_TYPES:
        options["num_replicas"] = p.replicas
        return options
    options["health_check_period_s"] = MODEL_HEALTH_PERIOD_S
    if p.num_gpus:
        actor["num_gpus"] = p.num_gpus
    if p.accelerator_type:
        actor["accelerator_type"] = p.accelerator_type
    if p.autoscaling is not None:
        options["autoscaling_config"] = p.autoscaling.model_dump()
    else:
        options["num_replicas"] = p.replicas
    if p.tensor_parallel_size > 1:
        # vLLM's workers take one GPU each from the replica's placement group.
        gpu = {
            "GPU": 1,
            **({f"accelerator_type:{p.accelerator_type}": 0.001} if p.accelerator_type else {}),
        }
        options["placement_group_bundles"] = [{"CPU": p.num_cpus}] + [gpu] * p.tensor_parallel_size
        options["placement_group_strategy"] = "STRICT_PACK"
        actor.pop("num_gpus", None)
        actor.pop("accelerator_type", None)
        options.pop("ray_actor_options")
    return options


def build_application(config: PlatformConfig) -> Application:
    """The Serve application for ``config`` (optional providers without keys dropped)."""
    config = config.active()
    providers = {
        p.name: (ModelServerDeployment if p.type in GENERATIVE_TYPES else ProviderDeployment)
        .options(**deployment_options(p))
        .bind(p)
        for p in config.providers
        if p.placement == "deployment"
    }
    gw = config.gateway
    spread = {"max_replicas_per_node": gw.max_replicas_per_node} if gw.max_replicas_per_node else {}
    return GatewayDeployment.options(
        **spread,
        name="gateway",
        num_replicas=gw.replicas,
        max_ongoing_requests=gw.max_ongoing_requests,
        ray_actor_options={"num_cpus": gw.num_cpus},
        logging_config=_QUIET,
        # A replica replaced or scaled down: Serve waits this long for its requests (and
        # `forge up`'s own drain has ended streams by then: gateway/drain.py).
        graceful_shutdown_timeout_s=gw.drain_timeout_s + DRAIN_MARGIN_S,
        graceful_shutdown_wait_loop_s=0.5,
    ).bind(config, providers)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve run` / `serve deploy` / KubeRay: ``args: {config: PATH}``.

    Migrates the database and registers ``FORGE_MASTER_KEY`` as an admin key when set
    (a key is never generated here: there is no terminal to show it on)."""
    from forge.db.prepare import prepare
    from forge.settings import Settings

    settings = Settings()
    prepare(settings, generate_key=False)
    return build_application(load_config(args.get("config") or settings.config))
