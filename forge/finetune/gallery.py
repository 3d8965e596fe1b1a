"""Sharing fine-tuned models: with the organisation, or published to the gallery that
every organisation on the platform can browse, rate, and deploy from with one call.

A version's ``sharing`` says who may use it: ``project`` (the default: the project that
trained it), ``organization`` (every project of its organisation calls it by its name
once deployed) or ``public`` (also listed in the gallery). Another organisation's
deploy installs a copy of the adapter into its own project (``GalleryInstall``): what it
installed keeps working whatever the publisher later does with its own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import GalleryInstall, GalleryRating, ModelVersion, Organization, utcnow
from forge.errors import NotFound, PermissionDenied
from forge.tenancy.objects import unix

Sharing = Literal["project", "organization", "public"]
SHARED = ("organization", "public")
ALIAS_PATTERN = r"^(ft:[\w.:-]+|[\w.-]+)$"


class ShareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Sharing = Field(
        description="project: its own project only; organization: every project of its "
        "organisation; public: also listed in the gallery for other organisations."
    )
    description: str | None = Field(
        None, max_length=2000, description="What it does, for the gallery's browsers."
    )


class RatingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5, description="1 (poor) … 5 (excellent).")
    comment: str | None = Field(None, max_length=2000)


class InstallBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str | None = Field(
        None,
        pattern=ALIAS_PATTERN,
        max_length=200,
        description="What this project calls it (default: its gallery name).",
    )


class Rating(BaseModel):
    score: int
    comment: str | None
    created_at: int


class GalleryModel(BaseModel):
    """A published model as browsers see it: what it is, how it scored, how others
    found it."""

    id: str
    object: Literal["gallery.model"] = "gallery.model"
    base_model: str
    owned_by: str = Field(description="The publishing organisation's name.")
    description: str | None
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    rating: float | None = Field(description="Mean score of its ratings (null: none yet).")
    ratings: int
    installs: int
    published_at: int


class GalleryStore:
    """The gallery's reads and ratings (the database only: a gateway replica serves
    them); deploying from it copies files, which the job manager does."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def browse(self, base_model: str | None = None, limit: int = 100) -> list[GalleryModel]:
        """Published models, best rated first (then most installed, newest)."""
        query = _listing().where(ModelVersion.sharing == "public")
        if base_model is not None:
            query = query.where(ModelVersion.base_model == base_model)
        async with self._sessions() as s:
            rows = (await s.execute(query)).all()
        models = [_gallery_model(*row) for row in rows]
        models.sort(key=lambda m: (-(m.rating or 0), -m.installs, -m.published_at, m.id))
        return models[:limit]

    async def entry(self, name: str) -> GalleryModel:
        async with self._sessions() as s:
            row = (await s.execute(_listing().where(ModelVersion.name == name))).first()
        if row is None or row[0].sharing != "public":
            raise NotFound(f"No model {name!r} in the gallery.", param="model")
        return _gallery_model(*row)

    async def published(self, name: str) -> ModelVersion:
        async with self._sessions() as s:
            row = await s.get(ModelVersion, name)
        if row is None or row.sharing != "public":
            raise NotFound(f"No model {name!r} in the gallery.", param="model")
        return row

    async def rate(self, name: str, org_id: str, body: RatingBody) -> GalleryModel:
        """One rating per organisation (a later one replaces it); not of one's own."""
        version = await self.published(name)
        if version.org_id == org_id:
            raise PermissionDenied("An organisation cannot rate its own model.")
        async with self._sessions.begin() as s:
            row = await s.get(GalleryRating, (name, org_id))
            if row is None:
                row = GalleryRating(model=name, org_id=org_id)
                s.add(row)
            row.score, row.comment, row.created_at = body.score, body.comment, utcnow()
        return await self.entry(name)

    async def ratings(self, name: str, limit: int = 100) -> list[Rating]:
        await self.published(name)
        async with self._sessions() as s:
            rows = await s.scalars(
                select(GalleryRating)
                .where(GalleryRating.model == name)
                .order_by(GalleryRating.created_at.desc())
                .limit(limit)
            )
            return [
                Rating(score=r.score, comment=r.comment, created_at=unix(r.created_at) or 0)
                for r in rows
            ]

    async def install_of(self, name: str, project_id: str) -> GalleryInstall | None:
        async with self._sessions() as s:
            return await s.get(GalleryInstall, (name, project_id))

    async def add_install(self, install: GalleryInstall) -> None:
        async with self._sessions.begin() as s:
            s.add(install)

    async def remove_install(self, name: str, project_id: str) -> None:
        async with self._sessions.begin() as s:
            row = await s.get(GalleryInstall, (name, project_id))
            if row is not None:
                await s.delete(row)


def _listing() -> Any:
    """Each version with its organisation's name, mean rating, rating and install counts."""
    ratings = (
        select(
            GalleryRating.model,
            func.avg(GalleryRating.score).label("mean"),
            func.count().label("n"),
        )
        .group_by(GalleryRating.model)
        .subquery()
    )
    installs = (
        select(GalleryInstall.model, func.count().label("n"))
        .group_by(GalleryInstall.model)
        .subquery()
    )
    return (
        select(ModelVersion, Organization.name, ratings.c.mean, ratings.c.n, installs.c.n)
        .join(Organization, Organization.id == ModelVersion.org_id)
        .outerjoin(ratings, ratings.c.model == ModelVersion.name)
        .outerjoin(installs, installs.c.model == ModelVersion.name)
    )


def _gallery_model(
    v: ModelVersion, owner: str, mean: float | None, ratings: int | None, installs: int | None
) -> GalleryModel:
    published: datetime = v.published_at or v.created_at
    return GalleryModel(
        id=v.name,
        base_model=v.base_model,
        owned_by=owner,
        description=v.description,
        hyperparameters=json.loads(v.hyperparameters),
        metrics=json.loads(v.metrics),
        rating=None if mean is None else round(float(mean), 2),
        ratings=ratings or 0,
        installs=installs or 0,
        published_at=unix(published) or 0,
    )
