"""OpenAI's cursor pages over the database: ``limit`` (1-100) and ``after`` (the last id
of the page before), in creation order."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from forge.errors import InvalidRequest
from forge.tenancy.objects import Page

MAX_PAGE = 100
Order = Literal["asc", "desc"]


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(
            f"Invalid 'limit': {limit}; expected 1 to {MAX_PAGE}.",
            param="limit",
            code="invalid_value",
        )
    return limit


async def page_rows(
    s: AsyncSession,
    model: type[Any],
    where: list[Any],
    limit: int,
    after: str | None,
    order: Order = "asc",
    ident: Any = None,
) -> tuple[list[Any], bool]:
    """One page of ``model`` rows in creation order; ``after``: an id (``ident``, the
    ``id`` column unless said) of the same scope (a 400 when it is not one)."""
    check_limit(limit)
    query = select(model).where(*where)
    created: Any = model.created_at
    ident = model.id if ident is None else ident
    if after is not None:
        anchor: datetime | None = await s.scalar(select(created).where(*where, ident == after))
        if anchor is None:
            raise InvalidRequest(
                f"Invalid 'after': {after!r} is not an id from this list.",
                param="after",
                code="invalid_value",
            )
        if order == "asc":
            query = query.where(or_(created > anchor, and_(created == anchor, ident > after)))
        else:
            query = query.where(or_(created < anchor, and_(created == anchor, ident < after)))
    ordering = (created, ident) if order == "asc" else (created.desc(), ident.desc())
    rows = list(await s.scalars(query.order_by(*ordering).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def as_page(data: list[Any], more: bool) -> Page[Any]:
    return Page(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )
