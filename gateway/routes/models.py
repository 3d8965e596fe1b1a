"""`GET /v1/models` and `GET /v1/models/{id}`: the public model names this platform serves,
registered LoRA adapters included (a client can send either name as ``model``)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from forge.adapters import AdapterInfo
from forge.config import ModelConfig
from forge.key_scope import check_model
from forge.keys import KeyInfo
from forge.protocol.openai import ModelCard, ModelList
from forge.routing.auto import AUTO, AutoRouter
from gateway.deps import caller, runtime
from gateway.runtime import GatewayRuntime

router = APIRouter()
log = logging.getLogger(__name__)

CREATED = 1_767_225_600  # 2026-01-01: configured models have no creation time of their own


def _card(model: ModelConfig) -> ModelCard:
    return ModelCard(id=model.name, created=CREATED, owned_by=model.provider)


def _group_card(name: str) -> ModelCard:
    return ModelCard(id=name, created=CREATED, owned_by="promptforge")


def _adapter_card(adapter: AdapterInfo, base: ModelConfig) -> ModelCard:
    created = int(adapter.created_at.timestamp())
    return ModelCard(id=adapter.public_name, created=created, owned_by=base.provider)


@router.get("/v1/models", response_model=ModelList)
async def list_models(
    key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> ModelList:
    """Those the caller's project may use."""
    cards = [_card(m) for m in rt.router.models]
    cards += [_group_card(g.name) for g in rt.router.groups]
    cards += [_group_card(e.name) for e in rt.router.experiments]
    cards += [
        _group_card(AUTO),
        *(_group_card(f"{AUTO}:{p}") for p in rt.config.routing.auto.policies),
    ]
    served = {m.name: m for m in rt.router.models}
    try:
        adapters = await rt.directory.visible_adapters(key.org_id, key.project_id)
    except Exception as exc:  # the directory restarting: the configured models still list
        log.warning("listing adapters failed: %s", type(exc).__name__)
        adapters = []
    cards += [_adapter_card(a, served[a.base_model]) for a in adapters if a.base_model in served]
    bases = {a.public_name: a.base_model for a in adapters}
    policy = key.model_policy
    if policy is not None:
        cards = [c for c in cards if policy.allows(c.id, bases.get(c.id, c.id))]
    allowed = key.allowed_models
    if allowed is not None:
        cards = [c for c in cards if c.id in allowed or bases.get(c.id) in allowed]
    return ModelList(data=cards)


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(
    model_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> ModelCard:
    """A configured model, or an adapter by its own name or as ``<base>:<adapter>``
    (404 for neither, as for a request naming it; 403 for one the project may not use)."""
    if rt.router.experiment(model_id) is not None or AutoRouter.is_auto(model_id):
        if key.allowed_models is not None:
            check_model(key.id, key.allowed_models, model_id, model_id)
        return _group_card(model_id)
    route = await rt.router.resolve(model_id, key.org_id, key.project_id)
    if key.model_policy is not None:
        key.model_policy.check(key.project_id, model_id, route.name)
    if key.allowed_models is not None:
        check_model(key.id, key.allowed_models, model_id, route.name)
    return _group_card(route.name) if route.group else _card(route.primary.model)
