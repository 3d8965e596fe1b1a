"""Adapter plumbing without an engine: fetching, shape checks, the per-replica LRU."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import fsspec
import pytest

from forge.adapters import AdapterMismatch, AdapterNotFound, AdapterSpec, source_digest
from forge.errors import InvalidRequest
from serve.models.adapters import AdapterCache, check_adapter, fetch_adapter


def base_config(model: Path) -> dict:
    return json.loads((model / "config.json").read_text())


def test_a_local_adapter_is_used_in_place(adapter_dirs, tmp_path):
    assert fetch_adapter(str(adapter_dirs["support"]), tmp_path) == adapter_dirs["support"]


def test_an_fsspec_url_is_downloaded_once(adapter_dirs, tmp_path):
    fs = fsspec.filesystem("memory")
    for f in adapter_dirs["support"].iterdir():
        fs.pipe(f"/bucket/support/{f.name}", f.read_bytes())
    local = fetch_adapter("memory://bucket/support", tmp_path)
    assert local.parent == tmp_path and (local / "adapter_config.json").is_file()
    fs.rm("/bucket/support", recursive=True)  # gone upstream: the cached copy still serves
    assert fetch_adapter("memory://bucket/support", tmp_path) == local


@pytest.mark.parametrize(
    "source", ["/no/such/adapter", "memory://bucket/missing", "nosuchproto://x/y"]
)
def test_unreachable_or_foreign_sources_are_400(source, tmp_path):
    with pytest.raises(InvalidRequest) as err:
        fetch_adapter(source, tmp_path)
    assert err.value.param == "source"


def test_a_directory_that_is_not_an_adapter_is_400(tiny_model, tmp_path):
    with pytest.raises(InvalidRequest, match="not a PEFT LoRA adapter"):
        fetch_adapter(str(tiny_model), tmp_path)


@pytest.mark.parametrize(
    "option",
    [
        {"use_dora": True},
        {"modules_to_save": ["lm_head"]},
        {"trainable_token_indices": [3]},
        {"init_lora_weights": "pissa"},  # rewrites the base weights when PEFT loads it
        {"alpha_pattern": {"q_proj": 4}},
        {"bias": "lora_only"},
        {"rank_pattern": {"q_proj": 64}},  # over max_lora_rank
    ],
)
def test_lora_variants_that_change_the_forward_are_400(tiny_model, adapter_dirs, tmp_path, option):
    import shutil

    path = shutil.copytree(adapter_dirs["support"], tmp_path / "variant")
    config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**config, **option}))
    with pytest.raises(InvalidRequest, match=r"plain LoRA|max_lora_rank") as err:
        check_adapter(path, base_config(tiny_model), max_rank=16)
    assert err.value.status_code == 400 and err.value.param == "source"


def test_shape_check_accepts_its_base_and_refuses_another(tiny_model, adapter_dirs):
    shape = check_adapter(adapter_dirs["support"], base_config(tiny_model), max_rank=16)
    assert shape.rank == 8 and shape.target_modules == ("o_proj", "q_proj", "v_proj")
    with pytest.raises(AdapterMismatch) as err:
        check_adapter(adapter_dirs["mismatched"], base_config(tiny_model), max_rank=16)
    assert err.value.status_code == 400 and err.value.code == "adapter_base_mismatch"
    with pytest.raises(InvalidRequest, match="rank 8 exceeds"):
        check_adapter(adapter_dirs["support"], base_config(tiny_model), max_rank=4)


def test_credentials_in_an_adapter_url_are_refused():
    with pytest.raises(ValueError, match="credentials"):
        AdapterSpec(name="a", base_model="m", source="s3://key:secret@bucket/a")


class FakeEngineSide:
    """Records what the cache asks the engine to load and unload."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.loaded: set[str] = set()

    async def resolve(self, name: str) -> AdapterSpec | None:
        if name not in self.known:
            return None
        return AdapterSpec(name=name, base_model="m", source=f"/adapters/{name}")

    async def prepare(self, spec: AdapterSpec) -> Path:
        await asyncio.sleep(0.01)  # a download: concurrent asks must coalesce
        return Path(spec.source)

    async def load(self, name: str, path: Path) -> None:
        self.loads.append(name)
        self.loaded.add(name)

    async def unload(self, name: str) -> None:
        self.unloads.append(name)
        self.loaded.discard(name)

    def cache(self, capacity: int) -> AdapterCache:
        return AdapterCache(
            capacity,
            resolve=self.resolve,
            prepare=self.prepare,
            load=self.load,
            unload=self.unload,
        )


async def test_the_cache_evicts_least_recently_used_and_coalesces_loads():
    side = FakeEngineSide({"a", "b", "c"})
    cache = side.cache(2)
    await asyncio.gather(*(cache.ensure("a") for _ in range(5)))
    assert side.loads == ["a"]
    await cache.ensure("b")
    await cache.ensure("a")  # a is now the most recent
    await cache.ensure("c")
    assert side.unloads == ["b"] and cache.loaded() == ["a", "c"]
    assert side.loaded == {"a", "c"}


async def test_an_adapter_in_use_is_never_unloaded_under_a_request():
    side = FakeEngineSide({"a", "b", "c"})
    cache = side.cache(1)
    async with cache.lease("a"):
        await cache.ensure("b")  # over capacity, but a is busy: b stays, a stays
        assert "a" in side.loaded
        await cache.evict("a")  # Serve dropped it: deferred until the lease ends
        assert "a" in side.loaded
    assert "a" not in side.loaded and cache.loaded() == ["b"]
    async with cache.lease("c"):
        assert side.loaded == {"c"}


async def test_unknown_adapters_are_404_for_every_waiter():
    side = FakeEngineSide(set())
    cache = side.cache(2)
    results = await asyncio.gather(
        *(cache.ensure("ghost") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, AdapterNotFound) and r.status_code == 404 for r in results)
    assert side.loads == [] and cache.loaded() == []


async def test_a_caller_leaving_does_not_fail_the_others_waiting_on_its_load():
    side = FakeEngineSide({"a"})
    cache = side.cache(2)
    first = asyncio.create_task(cache.ensure("a"))
    second = asyncio.create_task(cache.ensure("a"))
    await asyncio.sleep(0)
    first.cancel()  # its client went away while the adapter downloaded
    await second
    assert side.loads == ["a"] and cache.loaded() == ["a"]


async def test_concurrent_loads_over_capacity_all_get_their_adapter():
    side = FakeEngineSide({"a", "b", "c"})
    cache = side.cache(1)
    await cache.ensure("a")

    async def use(name: str) -> str:
        async with cache.lease(name):
            assert name in side.loaded
            await asyncio.sleep(0.01)
            return name

    assert await asyncio.gather(use("b"), use("c")) == ["b", "c"]
    assert len(cache.loaded()) == 1


async def test_a_re_registered_source_is_loaded_again():
    side = FakeEngineSide({"a"})
    cache = side.cache(2)
    await cache.ensure("a", AdapterSpec(name="a", base_model="m", source="/v1"))
    await cache.ensure("a", AdapterSpec(name="a", base_model="m", source="/v1"))
    await cache.ensure("a", AdapterSpec(name="a", base_model="m", source="/v2"))
    assert side.loads == ["a", "a"] and side.unloads == ["a"]


async def test_the_admin_route_reloads_a_source_whose_files_changed_even_in_use():
    """Registering the same source again (its files rewritten, or deleted and registered
    anew) reloads it once, after the requests on the old copy end."""
    side = FakeEngineSide({"a"})
    cache = side.cache(2)
    spec = AdapterSpec(name="a", base_model="m", source="/v1")
    await cache.ensure("a", spec)
    await cache.ensure("a", spec, reload=True)
    assert side.loads == ["a", "a"] and side.unloads == ["a"]
    async with cache.lease("a"):
        reload = asyncio.create_task(cache.ensure("a", spec, reload=True))
        await asyncio.sleep(0.1)
        assert side.loads == ["a", "a"]  # the running request keeps its copy
    await reload
    assert side.loads == ["a", "a", "a"] and cache.loaded() == ["a"]


async def test_a_request_for_another_source_version_reloads_and_serve_evicts_only_its_copy():
    side = FakeEngineSide({"a"})
    cache = side.cache(2)
    await cache.ensure("a", AdapterSpec(name="a", base_model="m", source="/v1"))
    await cache.ensure("a", version=source_digest("/v1"))
    assert side.loads == ["a"]
    await cache.evict("a", version=source_digest("/elsewhere"))  # a stale copy's eviction
    assert cache.loaded() == ["a"]
    await cache.ensure("a", version=source_digest("/adapters/a"))  # the registry's source now
    assert side.loads == ["a", "a"] and side.unloads == ["a"]


async def test_prune_unloads_what_the_registry_deleted_and_waits_for_running_requests():
    side = FakeEngineSide({"a", "b", "c"})
    cache = side.cache(3)
    for name in ("a", "b", "c"):
        await cache.ensure(name)  # found in the registry
    side.known = {"b"}  # a and c deleted
    async with cache.lease("c"):
        assert await cache.prune() == ["a", "c"]
        assert side.loaded == {"b", "c"}  # c's request still runs on it
    assert side.loaded == {"b"} and cache.loaded() == ["b"]


async def test_prune_unloads_an_adapter_registered_again_from_elsewhere():
    side = FakeEngineSide({"a"})
    cache = side.cache(2)
    await cache.ensure("a", AdapterSpec(name="a", base_model="m", source="/old"))
    async with cache.lease("a", version=source_digest("/old"), registered=True):
        pass  # a request the gateway routed: it was registered
    assert await cache.prune() == ["a"]  # the registry now says /adapters/a
    assert side.unloads == ["a"] and cache.loaded() == []


async def test_prune_spares_an_admin_load_not_yet_registered_until_it_settles():
    side = FakeEngineSide(set())  # loaded by the admin route, registration on its way
    cache = side.cache(2)
    await cache.ensure("a", AdapterSpec(name="a", base_model="m", source="/adapters/a"))
    await cache.ensure("a", version=source_digest("/adapters/a"))  # Serve's multiplexer
    assert await cache.prune() == [] and side.loaded == {"a"}
    assert await cache.prune(settle_s=0) == ["a"]  # never registered: the load failed over

    await cache.ensure("b", AdapterSpec(name="b", base_model="m", source="/adapters/b"))
    side.known = {"b"}
    assert await cache.prune() == []  # registered now: from here on, a deletion unloads it
    side.known = set()
    assert await cache.prune() == ["b"] and cache.loaded() == []


async def test_each_registration_is_a_version_of_its_own():
    """A name registered again from the same source (after a delete) is another version:
    a replica holding the old one reloads on a request for the new one, and prune drops
    the old one once the registry holds the new one."""
    from datetime import UTC, datetime, timedelta

    from forge.adapters import adapter_version

    first = AdapterSpec(name="a", base_model="m", source="/v1", created_at=datetime.now(UTC))
    again = first.model_copy(update={"created_at": first.created_at + timedelta(seconds=1)})
    assert adapter_version(first) != adapter_version(again)
    assert adapter_version(first.model_copy(update={"created_at": None})) == source_digest("/v1")

    side = FakeEngineSide({"a"})
    registry = {"a": first}
    side.resolve = lambda name: asyncio.sleep(0, registry.get(name))
    cache = side.cache(2)
    await cache.ensure("a", version=adapter_version(first))
    registry["a"] = again
    assert await cache.prune(settle_s=0) == ["a"] and cache.loaded() == []
    await cache.ensure("a", version=adapter_version(again))
    await cache.ensure("a", version=adapter_version(again))
    assert side.loads == ["a", "a"]


async def test_a_request_naming_an_older_version_is_served_the_registered_one():
    """A gateway's cache may name the version the registry held seconds ago: the replica
    serves the registered copy it holds instead of reloading it (in a loop, as it did)."""
    from datetime import UTC, datetime, timedelta

    from forge.adapters import adapter_version

    old = AdapterSpec(name="a", base_model="m", source="/v1", created_at=datetime.now(UTC))
    new = old.model_copy(update={"created_at": old.created_at + timedelta(seconds=1)})
    side = FakeEngineSide({"a"})
    side.resolve = lambda name: asyncio.sleep(0, new)
    cache = side.cache(2)
    await cache.ensure("a", version=adapter_version(new))
    await asyncio.wait_for(cache.ensure("a", version=adapter_version(old)), 5)
    async with cache.lease("a", adapter_version(old)):
        pass
    assert side.loads == ["a"] and side.unloads == []


async def test_a_copy_being_replaced_is_not_revived_by_requests_arriving_meanwhile():
    """While an admin reload waits for the requests on the old copy, new requests must
    not keep that copy alive (the reload would wait forever): they wait for the new one.
    And an admin load of an adapter not held yet loads it once."""
    side = FakeEngineSide({"a"})
    cache = side.cache(2)
    spec = AdapterSpec(name="a", base_model="m", source="/v1")
    await cache.ensure("a", spec, reload=True)
    assert side.loads == ["a"]  # loaded once, not loaded and reloaded
    async with cache.lease("a"):
        admin = asyncio.create_task(cache.ensure("a", spec, reload=True))
        await asyncio.sleep(0.02)
        newcomer = asyncio.create_task(cache.ensure("a", lease=True))
        await asyncio.sleep(0.02)
        assert not newcomer.done()  # it waits for the new copy
    await asyncio.wait_for(asyncio.gather(admin, newcomer), 5)
    assert side.loads == ["a", "a"] and side.unloads == ["a"]
