"""`forge keys` and `forge db` against a real SQLite file, in-process (no Ray)."""

from __future__ import annotations

from typer.testing import CliRunner

from forge.cli import app


def test_keys_create_list_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "ci-bot"])
    assert created.exit_code == 0, created.output
    key = created.output.strip()
    assert key.startswith("sk-forge-") and len(key) > 40
    listed = runner.invoke(app, ["keys", "list"])
    assert "ci-bot" in listed.output and "active" in listed.output
    assert key not in listed.output  # only the prefix is ever shown again
    key_id = listed.output.split()[0]
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list"]).output
    missing = runner.invoke(app, ["keys", "revoke", "no-such-id"])
    assert missing.exit_code != 0
    assert (tmp_path / "forge.db").exists()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0


def test_status_without_a_running_platform_says_so_in_one_line(monkeypatch):
    import ray

    def no_cluster(**_):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "PromptForge is not running" in result.output
