"""One local Ray cluster and one deployed platform per test session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from sqlalchemy import select

from forge.config import PlatformConfig
from forge.db.engine import make_engine
from forge.db.migrate import upgrade
from forge.db.schema import UsageRecord
from serve import launcher
from tests.contract.cases import CASES
from tests.fakes.server import free_port
from tests.live_platform import make_keys, start_local_ray, wait_until_ready
from tests.unit.harness import platform_config


@dataclass
class Platform:
    url: str
    db_url: str
    user_key: str
    admin_key: str
    config: PlatformConfig

    def sdk(self, key: str | None = None, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=key or self.user_key, base_url=self.url + "/v1", max_retries=0, **kwargs
        )

    def async_sdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=key or self.user_key, base_url=self.url + "/v1", max_retries=0
        )

    def usage_rows(self, request_ids: set[str], timeout_s: float = 20.0) -> list[dict]:
        """Usage rows for ``request_ids``, waiting until all of them are written."""

        async def fetch() -> list[dict]:
            engine = make_engine(self.db_url)
            try:
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        select(UsageRecord).where(UsageRecord.request_id.in_(request_ids))
                    )
                    return [dict(r) for r in rows.mappings()]
            finally:
                await engine.dispose()

        deadline = time.monotonic() + timeout_s
        while True:
            rows = asyncio.run(fetch())
            if len(rows) >= len(request_ids) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("forge-data")
    start_local_ray(data_dir)
    yield data_dir
    launcher.stop(own_ray=True)


@pytest.fixture(scope="session")
def platform(request: pytest.FixtureRequest, ray_cluster: Path, fake_openai) -> Iterator[Platform]:
    db_url = f"sqlite+aiosqlite:///{ray_cluster / 'forge.db'}"
    upgrade(db_url)

    user_key, admin_key = asyncio.run(make_keys(db_url))
    port = free_port()
    config = platform_config(fake_openai.base_url, port=port)
    # Every provider type of the contract suite, each in its own ProviderProxy deployment,
    # and the tiny self-hosted model in a model-server deployment.
    contract = [(case, request.getfixturevalue(case.fake)) for case in CASES]
    config = PlatformConfig.model_validate(
        {
            **config.model_dump(),
            "providers": [
                *config.model_dump()["providers"],
                *({**c.provider_config(f), "placement": "deployment"} for c, f in contract),
                # the tiny local model, built under FORGE_DATA_DIR by its own replica
                {
                    "name": "local",
                    "type": "transformers",
                    "model_path": "tiny",
                    "placement": "deployment",
                },
                {
                    "name": "local-embed",
                    "type": "transformers_embedding",
                    "model_path": "minilm",
                    "placement": "deployment",
                },
            ],
            "models": [
                *config.model_dump()["models"],
                *(m for c, _ in contract for m in c.models()),
                {"name": "tiny-llama", "provider": "local", "context_window": 2048},
                {"name": "all-minilm-l6-v2", "provider": "local-embed"},
            ],
            # short rows for the tiny model; a checkpoint every 5 steps to resume from
            "fine_tuning": {"max_len": 96, "checkpoint_every": 5, "stop_grace_s": 10},
        }
    )
    launcher.deploy(config, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    if not wait_until_ready(url, 60):
        pytest.fail("the platform never became ready")
    yield Platform(url, db_url, user_key, admin_key, config)
