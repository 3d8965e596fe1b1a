"""`forge up`'s process stays the platform's Ray driver for as long as the platform
runs, and keeps what it imports: it must load neither the full command line, nor the
application (built by a one-off Ray task), nor the migrations (run in a child)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forge.db.prepare import PreparationFailed, prepare, prepare_in_child
from forge.settings import Settings

PROBE = """
import json, sys
sys.argv = ["forge", "up", "--help"]
from forge import entry
try:
    entry.main()
except SystemExit:
    pass
import serve.launcher  # what `up` imports when it runs
print(json.dumps(sorted(sys.modules)))
"""
NEVER_IN_THE_DRIVER = (
    "forge.cli",  # every sub-command's stores
    "serve.app",
    "serve.deployments",
    "gateway.app",
    "alembic",
    "forge.db.migrate",
    "openai",
    "fastapi",
)


def test_forge_up_imports_neither_the_application_nor_the_migrations():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    assert "Usage: forge up" in done.stdout
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "forge.cli_up" in loaded and "ray" in loaded
    assert not [m for m in NEVER_IN_THE_DRIVER if m in loaded]


def test_the_full_command_line_still_lists_up():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from forge.entry import main; import sys; sys.argv = ['forge', '--help']; main()",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert " up " in done.stdout and " status " in done.stdout


def test_the_database_is_prepared_in_a_child_and_the_new_key_comes_back(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("FORGE_MASTER_KEY", raising=False)
    first = prepare_in_child()
    assert first is not None and first.startswith("sk-forge-")
    assert (tmp_path / "forge.db").exists()
    assert prepare_in_child() is None  # the operator's key exists: shown once only


def test_a_database_that_cannot_be_prepared_says_so(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://nobody@127.0.0.1:1/none")
    with pytest.raises(PreparationFailed, match="preparing the database failed"):
        prepare_in_child()


def test_a_serve_deploy_prepares_the_database_without_generating_a_key(tmp_path, monkeypatch):
    """`serve deploy` / KubeRay (serve.app:app_builder) has no terminal to show a key on:
    it migrates and registers FORGE_MASTER_KEY only."""
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("FORGE_MASTER_KEY", raising=False)
    assert prepare(Settings(), generate_key=False) is None
    assert (tmp_path / "forge.db").exists()
    assert prepare_in_child() is not None  # no operator's key was made: one is now
