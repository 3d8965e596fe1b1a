"""Engine construction with the settings each backend needs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so that the CLI and the
    platform's actors can share one file."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def replica_engine(url: str, pool_size: int) -> AsyncEngine:
    """A gateway replica's own engine (stored responses, the Admin API): a small pool
    on PostgreSQL, SQLite's defaults otherwise."""
    pool: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        pool = {"pool_size": pool_size, "max_overflow": pool_size}
    return make_engine(url, **pool)
