"""The database's preparation for `forge up`, in a process of its own: migrate, and
make sure the platform operator's key exists.

`forge up`'s driver process lives as long as the platform, and whatever it imports
stays resident: Alembic, SQLAlchemy and the key store are ~40 MiB it needs for a second
at start. So the driver runs ``python -m forge.db.prepare`` with its own environment
(the database URL and the master key are read from it, as they were in the driver) and
reads the answer from the child's standard output: one JSON object,
``{"new_admin_key": "sk-…" | null}``. The key travels only through that pipe, never
through arguments or the environment of anything else.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from forge.settings import Settings


async def _ensure_master(url: str, master_key: str | None) -> str | None:
    from forge.db.engine import make_engine, make_sessionmaker
    from forge.keys import KeyStore

    engine = make_engine(url)
    try:
        return await KeyStore(make_sessionmaker(engine)).ensure_master(master_key)
    finally:
        await engine.dispose()


def prepare(settings: Settings, generate_key: bool = True) -> str | None:
    """Migrate the database and ensure the operator's key (``FORGE_MASTER_KEY``, else
    one generated when none exists and ``generate_key``); the key when it was just
    generated (shown once)."""
    from forge.db.migrate import upgrade

    url = settings.resolved_database_url()
    upgrade(url)
    master = settings.master_key.get_secret_value() if settings.master_key else None
    if master is None and not generate_key:
        return None
    return asyncio.run(_ensure_master(url, master))


class PreparationFailed(RuntimeError):
    """The child failed; its error output (passed through to ours) says why."""


def prepare_in_child() -> str | None:
    """``prepare`` in a child process with this process's environment (see the module's
    docstring); its error output goes to ours."""
    done = subprocess.run(
        [sys.executable, "-m", "forge.db.prepare"], stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise PreparationFailed(
            f"preparing the database failed (exit status {done.returncode}; its error above)"
        )
    key: str | None = json.loads(done.stdout.strip().splitlines()[-1])["new_admin_key"]
    return key


def main() -> None:
    print(json.dumps({"new_admin_key": prepare(Settings())}))


if __name__ == "__main__":
    main()
