"""Key changes reach every replica's key cache at once (the feed, and a second replica's
watcher beside the in-process gateway), not after the cache's TTL."""

from __future__ import annotations

import asyncio
import time

import pytest

from forge.errors import AuthenticationFailed, PermissionDenied
from forge.key_changes import HISTORY, ChangeFeed
from gateway.auth import KeyVerifier
from gateway.key_changes import KeyChangeWatcher
from tests.unit.harness import in_process_gateway, platform_config


async def test_a_new_reader_learns_the_epoch_and_then_hears_each_change():
    feed = ChangeFeed()
    first = await feed.since(None, 0, 0.01)
    assert (first.feed_id, first.epoch, first.key_ids) == (feed.feed_id, 0, [])
    waiting = asyncio.create_task(feed.since(feed.feed_id, 0, 5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # a long poll: nothing changed yet
    feed.publish(["key_a", "key_b"])
    heard = await asyncio.wait_for(waiting, 0.5)
    assert heard.epoch == 1 and heard.key_ids == ["key_a", "key_b"]
    quiet = await feed.since(feed.feed_id, 1, 0.01)
    assert quiet.key_ids == [] and quiet.epoch == 1


async def test_anything_it_cannot_account_for_means_forget_everything():
    feed = ChangeFeed()
    feed.publish(["k1"])
    feed.publish(None)  # an organisation suspended
    assert (await feed.since(feed.feed_id, 0, 0.01)).key_ids is None
    assert (await feed.since("another-feed", 5, 0.01)).key_ids is None  # directory restarted
    for i in range(HISTORY + 1):
        feed.publish([f"k{i}"])
    assert (await feed.since(feed.feed_id, 2, 0.01)).key_ids is None  # fell behind history
    assert (await feed.since(feed.feed_id, feed.epoch - 1, 0.01)).key_ids == [f"k{HISTORY}"]


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def until_refused(verifier: KeyVerifier, key: str, within_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        try:
            await verifier.verify(key)
        except (AuthenticationFailed, PermissionDenied):
            return time.monotonic() - t0
        await asyncio.sleep(0.01)
    raise AssertionError(f"still accepted after {within_s} s")


async def test_a_revocation_and_a_suspension_reach_another_replica_before_its_cache_expires(gw):
    """The other replica caches keys for a minute: only the push can refuse within 10 s
    (normally tens of milliseconds; the bound is for a loaded machine)."""
    other = KeyVerifier(gw.keys.lookup, ttl_s=60.0)
    watcher = KeyChangeWatcher(gw.runtime.directory.key_changes, other)
    task = asyncio.create_task(watcher.run())
    try:
        created = await gw.keys.create_key("doomed")
        await other.verify(created.key)  # cached there
        await asyncio.sleep(0.05)  # the watcher's first poll learned the epoch
        revoked = await gw.http.delete(
            f"/admin/keys/{created.info.id}", headers={"authorization": f"Bearer {gw.admin_key}"}
        )
        assert revoked.status_code == 200
        assert await until_refused(other, created.key, 10.0) < 10.0
        org = await gw.http.post(
            "/admin/organizations",
            json={"name": "soon-suspended"},
            headers={"authorization": f"Bearer {gw.operator_key}"},
        )
        admin_key = org.json()["admin_key"]
        await other.verify(admin_key)
        await gw.http.post(
            f"/admin/organizations/{org.json()['organization']['id']}",
            json={"status": "suspended"},
            headers={"authorization": f"Bearer {gw.operator_key}"},
        )
        assert await until_refused(other, admin_key, 10.0) < 10.0
    finally:
        task.cancel()


async def test_a_watcher_that_loses_the_directory_forgets_everything_and_retries():
    calls = 0
    forgotten: list[str | None] = []

    async def flaky(feed_id, epoch, timeout_s):
        nonlocal calls
        calls += 1
        raise ConnectionError("directory restarting")

    class Recording(KeyVerifier):
        def forget(self, key_id=None):
            forgotten.append(key_id)

    watcher = KeyChangeWatcher(flaky, Recording(lambda digest: None))  # type: ignore[arg-type]
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(0.05)
    task.cancel()
    assert calls == 1 and forgotten == [None]
