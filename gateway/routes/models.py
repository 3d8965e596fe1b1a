"""`GET /v1/models` and `GET /v1/models/{id}`: the public model names this platform serves."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from forge.config import ModelConfig
from forge.keys import KeyInfo
from forge.protocol.openai import ModelCard, ModelList
from gateway.deps import caller, runtime
from gateway.runtime import GatewayRuntime

router = APIRouter()

CREATED = 1_767_225_600  # 2026-01-01: configured models have no creation time of their own


def _card(model: ModelConfig) -> ModelCard:
    return ModelCard(id=model.name, created=CREATED, owned_by=model.provider)


@router.get("/v1/models", response_model=ModelList)
async def list_models(
    _: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> ModelList:
    return ModelList(data=[_card(m) for m in rt.router.models])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(
    model_id: str, _: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> ModelCard:
    return _card(rt.router.model(model_id))
