"""Bring your own key: a project's own provider keys, sealed at rest (AES-GCM under a
keyring with rotation), shown only redacted, and sent upstream instead of the platform's
key for that project's requests, by every provider type that takes a key."""

from __future__ import annotations

import os
import stat

import openai
import pytest
from sqlalchemy import select

from forge.config import ProviderConfig
from forge.credentials.opener import CredentialOpener
from forge.credentials.sealing import Keyring, SealError, new_key_entry
from forge.credentials.store import CredentialStore, context_of, redact
from forge.db.engine import make_sessionmaker
from forge.db.schema import AuditLogEntry, ProviderCredential
from forge.errors import ServiceUnavailable
from forge.keys import KeyInfo
from forge.settings import Settings
from serve.providers.registry import make_provider
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import call, populated

OWN_KEY = "sk-project-own-key-0123456789"
MSG = [{"role": "user", "content": "hi"}]

# ---------------------------------------------------------------------- the keyring


def test_a_sealed_value_opens_only_with_its_key_and_in_its_own_row():
    keyring = Keyring.parse(new_key_entry("a"))
    sealed = keyring.seal(OWN_KEY, context_of("proj_1", "openai"))
    assert OWN_KEY not in sealed and sealed.startswith("a:")
    assert keyring.open(sealed, context_of("proj_1", "openai")) == OWN_KEY
    assert keyring.seal(OWN_KEY, "c") != keyring.seal(OWN_KEY, "c")  # a fresh nonce each
    with pytest.raises(SealError):  # copied into another project's row
        keyring.open(sealed, context_of("proj_2", "openai"))
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError):
        keyring.open(tampered, context_of("proj_1", "openai"))
    with pytest.raises(SealError, match="does not hold"):
        Keyring.parse(new_key_entry("b")).open(sealed, context_of("proj_1", "openai"))


def test_rotation_seals_with_the_newest_key_and_opens_with_every_key():
    old_entry, new_entry = new_key_entry("old"), new_key_entry("new")
    sealed = Keyring.parse(old_entry).seal(OWN_KEY, "ctx")
    both = Keyring.parse(f"{new_entry},{old_entry}")
    assert both.current == "new" and both.key_ids == ["new", "old"]
    assert both.open(sealed, "ctx") == OWN_KEY
    moved = both.reseal(sealed, "ctx")
    assert both.key_id_of(moved) == "new" and both.reseal(moved, "ctx") == moved
    assert Keyring.parse(new_entry).open(moved, "ctx") == OWN_KEY


@pytest.mark.parametrize(
    "spec",
    ["", "nocolon", "a:!!!notbase64", "a:" + "QUJD", "bad id:" + new_key_entry().split(":")[1]],
)
def test_a_malformed_keyring_is_refused(spec):
    with pytest.raises(ValueError):
        Keyring.parse(spec)


def test_the_embedded_default_makes_one_private_key_file_once(tmp_path, monkeypatch):
    monkeypatch.delenv("FORGE_ENCRYPTION_KEYS", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    first = Keyring.of(settings)
    path = tmp_path / "data" / "encryption.keys"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sealed = first.seal(OWN_KEY, "ctx")
    assert Keyring.of(settings).open(sealed, "ctx") == OWN_KEY  # the same key next time
    assert [p.name for p in path.parent.iterdir()] == ["encryption.keys"]  # nothing aside
    monkeypatch.setenv("FORGE_ENCRYPTION_KEYS", new_key_entry("env"))
    assert Keyring.of(Settings(data_dir=tmp_path / "data")).current == "env"


def test_a_key_is_redacted_to_something_recognisable_and_useless():
    assert redact(OWN_KEY) == "sk-...6789"
    assert redact("short") == "***"


def test_an_unopenable_credential_is_a_503_never_the_platforms_key_instead():
    keyring = Keyring.parse(new_key_entry("a"))
    sealed = Keyring.parse(new_key_entry("gone")).seal(OWN_KEY, context_of("p", "openai"))
    info = KeyInfo(
        id="k", name="k", prefix="sk-", role="user", created_at="2026-01-01T00:00:00Z",
        project_id="p", credentials={"openai": sealed},
    )  # fmt: skip
    opener = CredentialOpener(keyring, ["openai"])
    with pytest.raises(ServiceUnavailable) as err:
        opener.api_key(info, "openai")
    assert err.value.code == "provider_credential_unreadable" and OWN_KEY not in err.value.message
    assert opener.api_key(info, "anthropic") is None  # no credential: the platform's key
    assert CredentialOpener(keyring, []).api_key(info, "openai") is None  # not a keyed type


# ---------------------------------------------------------------------- each provider


def _own_key_fake(kind: str):
    fakes = {
        "openai": lambda: FakeOpenAI(api_key=OWN_KEY),
        "azure": lambda: FakeOpenAI(api_key=OWN_KEY),
        "anthropic": lambda: FakeAnthropic(api_key=OWN_KEY),
        "gemini": lambda: FakeGemini(api_key=OWN_KEY),
        "ollama": lambda: FakeOllama(api_key=OWN_KEY),
    }
    return fakes[kind]().start()


@pytest.mark.parametrize(
    ("kind", "model", "header", "value"),
    [
        ("openai", "gpt-fake", "Authorization", f"Bearer {OWN_KEY}"),
        ("azure", "my-gpt", "api-key", OWN_KEY),
        ("anthropic", "claude-fake", "x-api-key", OWN_KEY),
        ("gemini", "gemini-fake", "x-goog-api-key", OWN_KEY),
        ("ollama", "llama3.2", "Authorization", f"Bearer {OWN_KEY}"),
    ],
)
async def test_each_provider_sends_the_projects_key_instead_of_the_platforms(
    kind, model, header, value, monkeypatch
):
    """The upstream knows only the project's key: the platform's is refused (401), the
    project's answers, whole and streamed, in the provider's own auth header."""
    monkeypatch.setenv("PLATFORM_KEY", "sk-the-platforms-own-key")
    fake = _own_key_fake(kind)
    base = {"openai": fake.url + "/v1"}.get(kind, fake.url)
    cfg = ProviderConfig(
        name="up",
        type=kind,
        base_url=base,
        api_key_env="PLATFORM_KEY",
        api_version="2024-10-21" if kind == "azure" else None,
        max_retries=0,
    )
    provider = make_provider(cfg)
    body = {"model": model, "messages": MSG}
    try:
        with pytest.raises(Exception) as refused:
            await provider.complete("chat/completions", body, "pub")
        assert getattr(refused.value, "status_code", None) == 401
        reply = await provider.complete("chat/completions", body, "pub", api_key=OWN_KEY)
        assert reply.usage.prompt_tokens > 0
        assert fake.requests[-1]["headers"][header] == value
        items = [
            item
            async for item in provider.stream(
                "chat/completions", {**body, "stream": True}, "pub", False, api_key=OWN_KEY
            )
        ]
        assert items[-1].status == "ok", items[-1]
        assert fake.requests[-1]["headers"][header] == value
    finally:
        await provider.close()
        fake.stop()


# ---------------------------------------------------------------------- through the gateway


@pytest.fixture
async def byok(fake_openai, sqlite_engine):
    """A gateway with a provider whose upstream knows only a project's own key."""
    own = FakeOpenAI(api_key=OWN_KEY).start()
    config = platform_config(fake_openai.base_url)
    data = config.model_dump()
    data["providers"].append(
        {
            "name": "own",
            "type": "openai_compatible",
            "base_url": own.base_url,
            "api_key_env": "FAKE_UPSTREAM_KEY",  # the platform's: this upstream refuses it
        }
    )
    data["models"].append({"name": "gpt-own", "provider": "own", "model": "gpt-fake"})
    async with in_process_gateway(type(config).model_validate(data), sqlite_engine) as gw:
        yield gw, own
    own.stop()


async def test_a_projects_own_key_answers_its_requests_and_only_its_own(byok):
    gw, own = byok
    org = await populated(gw, "byok")
    path = f"/v1/organization/projects/{org.project}/provider_credentials"
    chat = gw.sdk(org.user).chat.completions
    with pytest.raises(openai.AuthenticationError):  # the platform's key: refused upstream
        await chat.create(model="gpt-own", messages=MSG)

    made = await call(gw, "POST", path, org.admin, json={"provider": "own", "api_key": OWN_KEY})
    assert made.status_code == 200, made.text
    shown = made.json()
    assert shown["provider"] == "own" and shown["redacted_value"] == "sk-...6789"
    assert OWN_KEY not in made.text
    reply = await chat.create(model="gpt-own", messages=MSG)  # followed at once
    assert reply.choices[0].message.content
    assert own.requests[-1]["headers"]["Authorization"] == f"Bearer {OWN_KEY}"
    streamed = [c async for c in await chat.create(model="gpt-own", messages=MSG, stream=True)]
    assert streamed and own.requests[-1]["headers"]["Authorization"] == f"Bearer {OWN_KEY}"
    # another organisation's key still goes out with the platform's key, and is refused
    with pytest.raises(openai.AuthenticationError):
        await gw.sdk().chat.completions.create(model="gpt-own", messages=MSG)

    listed = await call(gw, "GET", path, org.admin)
    listed_ids = {c["provider"]: c["id"] for c in listed.json()["data"]}
    assert listed_ids == {"fake": org.credential, "own": shown["id"]}  # populated set fake's
    assert OWN_KEY not in listed.text
    replaced = await call(
        gw, "POST", path, org.admin, json={"provider": "own", "api_key": "sk-another-key-9999"}
    )
    assert replaced.json()["id"] == shown["id"]  # one key per provider: replaced
    with pytest.raises(openai.AuthenticationError) as refused:
        await chat.create(model="gpt-own", messages=MSG)
    assert refused.value.code == "provider_credential_rejected"
    assert "provider_credentials" in refused.value.message

    gone = await call(gw, "DELETE", f"{path}/{shown['id']}", org.admin)
    assert gone.json() == {
        "object": "organization.project.provider_credential.deleted",
        "id": shown["id"],
        "deleted": True,
    }
    assert (await call(gw, "DELETE", f"{path}/{shown['id']}", org.admin)).status_code == 404
    left = (await call(gw, "GET", path, org.admin)).json()["data"]
    assert [c["id"] for c in left] == [org.credential]


async def test_a_credential_is_sealed_at_rest_and_kept_out_of_the_audit_log(byok):
    gw, _ = byok
    org = await populated(gw, "byok-rest")
    path = f"/v1/organization/projects/{org.project}/provider_credentials"
    await call(gw, "POST", path, org.admin, json={"provider": "own", "api_key": OWN_KEY})
    sessions = make_sessionmaker(gw.engine)
    async with sessions() as s:
        row = (
            await s.scalars(select(ProviderCredential).where(ProviderCredential.provider == "own"))
        ).one()
        audit = [a.content for a in await s.scalars(select(AuditLogEntry))]
    assert OWN_KEY not in row.sealed and row.key_id == gw.runtime.keyring.current
    assert gw.runtime.keyring.open(row.sealed, context_of(org.project, "own")) == OWN_KEY
    assert audit and not any(OWN_KEY in str(entry) for entry in audit)

    # rotation: a new key first, the old one kept; re-sealed, the old key can go
    old = gw.runtime.keyring
    new_entry = new_key_entry("next")
    rotated = Keyring.parse(new_entry + "," + _entry_of(old))
    assert await CredentialStore(sessions, rotated).reseal() == 2  # "own", and populated's
    async with sessions() as s:
        row = (
            await s.scalars(select(ProviderCredential).where(ProviderCredential.provider == "own"))
        ).one()
    assert row.key_id == "next"
    assert Keyring.parse(new_entry).open(row.sealed, context_of(org.project, "own")) == OWN_KEY
    assert await CredentialStore(sessions, rotated).reseal() == 0


def _entry_of(keyring: Keyring) -> str:
    from tests.unit.harness import TEST_KEYRING

    assert keyring.current == TEST_KEYRING.split(":")[0]
    return TEST_KEYRING


async def test_bad_credentials_are_refused_with_the_field_named(byok):
    gw, _ = byok
    org = await populated(gw, "byok-bad")
    path = f"/v1/organization/projects/{org.project}/provider_credentials"
    for body, param in (
        ({"provider": "nowhere", "api_key": OWN_KEY}, "provider"),
        ({"provider": "own"}, "api_key"),
        ({"provider": "own", "api_key": ""}, "api_key"),
        ({"provider": "own", "api_key": "x" * 5000}, "api_key"),
        ({"provider": "own", "api_key": OWN_KEY, "extra": 1}, "extra"),
    ):
        resp = await call(gw, "POST", path, org.admin, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param, resp.text
        assert OWN_KEY not in resp.text
    elsewhere = "/v1/organization/projects/proj_nowhere/provider_credentials"
    assert (await call(gw, "GET", elsewhere, org.admin)).status_code == 404
    await call(gw, "POST", f"/v1/organization/projects/{org.project}/archive", org.admin)
    archived = await call(gw, "POST", path, org.admin, json={"provider": "own", "api_key": OWN_KEY})
    assert archived.status_code == 400
