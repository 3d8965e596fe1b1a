"""Shared fixtures: one fake upstream per session, databases on SQLite and PostgreSQL."""

from __future__ import annotations

import os

# Serve reads these when it is imported, in every process: set them before anything
# imports Ray, so the tests exercise the same fast data plane `forge up` uses.
from serve.env import FAST_SERVE_ENV

for _name, _value in FAST_SERVE_ENV.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from forge.db.engine import make_engine
from forge.db.migrate import upgrade_async
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_family import FakeLlamaCpp, FakeTgi
from tests.fakes.openai_upstream import FakeOpenAI

pytest_plugins = ["tests.engines.fixtures"]

UPSTREAM_KEY = "sk-upstream-test"
ANTHROPIC_KEY = "sk-ant-test"
GEMINI_KEY = "gemini-test-key"
PG_ADMIN_URL = os.environ.get("FORGE_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=UPSTREAM_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=ANTHROPIC_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_llamacpp() -> Iterator[FakeLlamaCpp]:
    server = FakeLlamaCpp().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_tgi() -> Iterator[FakeTgi]:
    server = FakeTgi().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gemini() -> Iterator[FakeGemini]:
    server = FakeGemini(api_key=GEMINI_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def upstream_key_env() -> Iterator[None]:
    os.environ["FAKE_UPSTREAM_KEY"] = UPSTREAM_KEY
    os.environ["FAKE_ANTHROPIC_KEY"] = ANTHROPIC_KEY
    os.environ["FAKE_TGI_KEY"] = "hf_test_token"
    os.environ["FAKE_GEMINI_KEY"] = GEMINI_KEY
    yield


async def _fresh_postgres() -> tuple[str, str] | None:
    """A new schema-isolated database URL on the local PostgreSQL, or None if it is down."""
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = "forge_test_" + uuid.uuid4().hex[:10]
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {name}"))
    except OSError:
        return None
    finally:
        await admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, name


async def _drop_postgres(name: str) -> None:
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'forge.db'}"
        await upgrade_async(url)
        yield url
        return
    made = await _fresh_postgres()
    if made is None:
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is not running (.ci/run starts it)")
    url, name = made
    await upgrade_async(url)
    yield url
    await _drop_postgres(name)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on each backend: for tests of the durable store itself."""
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated SQLite file: for tests of behaviour above the store."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'forge.db'}"
    await upgrade_async(url)
    eng = make_engine(url)
    yield eng
    await eng.dispose()
