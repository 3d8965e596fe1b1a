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


def test_a_key_made_from_the_cli_may_be_limited_to_models_and_endpoints(tmp_path, monkeypatch):
    import asyncio

    from forge.db.engine import make_engine, make_sessionmaker
    from forge.keys import KeyStore, hash_key

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(
        app,
        ["keys", "create", "--name", "narrow", "--model", "gpt-test", "--endpoint", "/v1/models"],
    )
    assert made.exit_code == 0, made.output

    async def stored():
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'forge.db'}")
        try:
            return await KeyStore(make_sessionmaker(engine)).lookup(hash_key(made.output.strip()))
        finally:
            await engine.dispose()

    info = asyncio.run(stored())
    assert info.allowed_models == ["gpt-test"] and info.allowed_endpoints == ["/v1/models"]
    refused = runner.invoke(app, ["keys", "create", "--name", "x", "--endpoint", "/v1/assistants"])
    assert refused.exit_code == 1 and "allowed_endpoints" in refused.output


def test_status_without_a_running_platform_says_so_in_one_line(monkeypatch):
    import ray

    def no_cluster(**_):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", no_cluster)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "PromptForge is not running" in result.output


def test_orgs_and_projects_verbs_with_json(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(
        app, ["orgs", "create", "--name", "acme", "--plan", "enterprise", "--json"]
    )
    assert made.exit_code == 0, made.output
    created = json.loads(made.output)
    org = created["organization"]["id"]
    assert created["admin_key"].startswith("sk-forge-") and created["organization"]["plan"] == (
        "enterprise"
    )
    again = runner.invoke(app, ["orgs", "create", "--name", "acme"])
    assert again.exit_code == 1 and "already exists" in again.output
    listed = json.loads(runner.invoke(app, ["orgs", "list", "--json"]).output)
    assert {o["name"] for o in listed} == {"Default organization", "acme"}
    project = json.loads(
        runner.invoke(app, ["projects", "create", "--org", org, "--name", "web", "--json"]).output
    )
    archived = runner.invoke(app, ["projects", "archive", project["id"], "--org", org, "--json"])
    assert json.loads(archived.output)["status"] == "archived"
    other = runner.invoke(app, ["projects", "archive", project["id"], "--org", "org-default"])
    assert other.exit_code == 1 and "No project" in other.output  # another org's: not found
    suspended = runner.invoke(app, ["orgs", "suspend", org, "--json"])
    assert json.loads(suspended.output)["status"] == "suspended"
    assert runner.invoke(app, ["orgs", "plan", org, "gold"]).exit_code != 0
    listed_projects = runner.invoke(app, ["projects", "list", "--org", org]).output
    assert "Default project" in listed_projects and "web" not in listed_projects  # archived


def test_limits_verbs_set_merge_clear_and_refuse_bad_values(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    project = "proj_default"
    made = runner.invoke(
        app, ["limits", "set", "--project", project, "--model", "m", "--rpm", "60", "--json"]
    )
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["max_requests_per_1_minute"] == 60
    merged = runner.invoke(
        app, ["limits", "set", "--project", project, "--model", "m", "--rpd", "500", "--json"]
    )
    rule = json.loads(merged.output)
    assert (rule["max_requests_per_1_minute"], rule["max_requests_per_1_day"]) == (60, 500)
    listed = runner.invoke(app, ["limits", "list", "--project", project])
    assert "rpm=60" in listed.output and "tpm=-" in listed.output and "rpd=500" in listed.output
    bad = runner.invoke(app, ["limits", "set", "--project", project, "--rpm", "-5"])
    assert bad.exit_code == 1 and "--rpm" in bad.output and "whole number" in bad.output
    nowhere = runner.invoke(app, ["limits", "set", "--key", "key_nope", "--rpm", "5"])
    assert nowhere.exit_code == 1 and "No key" in nowhere.output
    both = runner.invoke(app, ["limits", "list", "--org", "x", "--key", "y"])
    assert both.exit_code != 0
    runner.invoke(
        app,
        ["limits", "set", "--project", project, "--model", "m", "--clear", "rpm", "--clear", "rpd"],
    )
    assert (
        runner.invoke(app, ["limits", "list", "--project", project, "--json"]).output.strip()
        == "[]"
    )


def test_budgets_verbs_create_list_delete_and_audit(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(
        app, ["budgets", "create", "--project", "proj_default", "--limit", "25", "--json"]
    )
    assert made.exit_code == 0, made.output
    budget = json.loads(made.output)
    assert (budget["period"], budget["unit"], budget["limit"]) == ("month", "usd", 25.0)
    again = runner.invoke(app, ["budgets", "create", "--project", "proj_default", "--limit", "5"])
    assert again.exit_code == 1 and "already has" in again.output
    listed = json.loads(
        runner.invoke(app, ["budgets", "list", "--project", "proj_default", "--json"]).output
    )
    assert listed[0]["spent"] == 0 and listed[0]["id"] == budget["id"]
    bad = runner.invoke(app, ["budgets", "create", "--key", "key_x", "--limit", "-1"])
    assert bad.exit_code != 0
    assert runner.invoke(app, ["budgets", "delete", budget["id"]]).exit_code == 0
    assert runner.invoke(app, ["budgets", "delete", budget["id"]]).exit_code == 1
    exported = runner.invoke(app, ["audit", "export"]).output
    assert exported.count('"type":"project.updated"') == 2  # created, deleted: by the CLI


def test_users_verbs_invite_list_role_remove(tmp_path, monkeypatch):
    import asyncio
    import json

    from forge.db.engine import make_engine, make_sessionmaker
    from forge.people.store import PeopleStore
    from forge.settings import Settings

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    org = json.loads(runner.invoke(app, ["orgs", "create", "--name", "people", "--json"]).output)
    org_id = org["organization"]["id"]
    sent = runner.invoke(
        app, ["users", "invite", "--org", org_id, "--email", "a@example.com", "--role", "owner"]
    )
    assert sent.exit_code == 0, sent.output
    token = sent.output.split("(shown once): ")[1].strip()
    assert "pending" in runner.invoke(app, ["users", "invites", "--org", org_id]).output
    bad = runner.invoke(
        app, ["users", "invite", "--org", org_id, "--email", "b@x.io", "--role", "god"]
    )
    assert bad.exit_code != 0

    async def accept() -> str:
        engine = make_engine(Settings().resolved_database_url())
        try:
            _, user, _ = await PeopleStore(make_sessionmaker(engine)).accept_invite(token, "A")
            return user.id
        finally:
            await engine.dispose()

    user_id = asyncio.run(accept())
    listed = json.loads(runner.invoke(app, ["users", "list", "--org", org_id, "--json"]).output)
    assert [(u["id"], u["role"]) for u in listed] == [(user_id, "owner")]
    last = runner.invoke(app, ["users", "role", "--org", org_id, user_id, "reader"])
    assert last.exit_code == 1 and "last owner" in last.output
    removed = runner.invoke(app, ["users", "remove", "--org", org_id, user_id])
    assert removed.exit_code == 1  # the last owner stays
    other = runner.invoke(app, ["users", "remove", "--org", "org-default", user_id])
    assert other.exit_code == 1 and "No user" in other.output  # another org's: not found
    audit = runner.invoke(app, ["audit", "export", "--org", org_id]).output
    assert "invite.sent" in audit
