"""Running one CLI action against a store of the configured database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.engine import make_engine, make_sessionmaker
from forge.db.migrate import upgrade
from forge.errors import ForgeError
from forge.settings import Settings

S = TypeVar("S")
T = TypeVar("T")


def on_database(
    store: Callable[[async_sessionmaker[AsyncSession]], S], action: Callable[[S], Awaitable[T]]
) -> T:
    """``action`` on ``store`` over the configured database (migrated first); a platform
    error is printed and exits 1."""
    url = Settings().resolved_database_url()
    upgrade(url)

    async def main() -> T:
        engine = make_engine(url)
        try:
            return await action(store(make_sessionmaker(engine)))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ForgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def emit(value: Any, as_json: bool, line: Callable[[Any], str]) -> None:
    """``value`` (a pydantic object or a list of them) as JSON, or a line each."""
    items = value if isinstance(value, list) else [value]
    if as_json:
        import json

        dumped = [v.model_dump(mode="json") for v in items]
        typer.echo(json.dumps(dumped if isinstance(value, list) else dumped[0], indent=2))
        return
    for item in items:
        typer.echo(line(item))
