"""The watchdog that ends streams whose batching loop stopped without answering them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from forge.errors import ServiceUnavailable
from serve.models import stream_watch
from serve.models.stream_watch import StreamWatch, next_result


class Loop:
    def __init__(self) -> None:
        self.running = True

    def is_running(self) -> bool:
        return self.running


@pytest.fixture(autouse=True)
def fast_checks(monkeypatch):
    monkeypatch.setattr(stream_watch, "CHECK_EVERY_S", 0.01)


async def test_streams_of_a_stopped_loop_get_one_503_and_the_others_wait_on():
    watch, dead, alive = StreamWatch(), Loop(), Loop()
    streams = [asyncio.Queue(), asyncio.Queue(), asyncio.Queue()]
    for queue, loop in zip(streams, (dead, dead, alive), strict=True):
        watch.add(queue, loop)
    streams[2].put_nowait("token")
    assert await next_result(streams[2]) == "token"
    dead.running = False
    for queue in streams[:2]:
        with pytest.raises(ServiceUnavailable) as err:
            await asyncio.wait_for(next_result(queue), 5)
        assert err.value.status_code == 503
    await asyncio.sleep(0.1)
    assert streams[0].empty() and streams[2].empty()  # ended once; the live one untouched
    watch.discard(streams[2])
    task = watch._loops[asyncio.get_running_loop()].task
    await asyncio.wait_for(task, 5)  # no stream left: the watchdog ends
    watch.add(streams[2], alive)  # and a new stream starts another
    assert watch._loops[asyncio.get_running_loop()].task is not task
    watch.discard(streams[2])


async def test_a_result_delivered_just_before_the_loop_stopped_is_read_first():
    watch, dead = StreamWatch(), Loop()
    queue: asyncio.Queue = asyncio.Queue()
    watch.add(queue, dead)
    dead.running = False
    await asyncio.sleep(0.015)  # one check has seen it stopped: not yet ended
    queue.put_nowait("final")  # what the loop delivered as it stopped
    assert await next_result(queue) == "final"
    watch.discard(queue)


def test_each_event_loop_watches_only_its_own_streams():
    """One engine serves requests from several event loops: one watchdog each, and no
    queue touched from another loop's thread."""
    watch, dead = StreamWatch(), Loop()
    dead.running = False
    seen: dict[str, object] = {}

    def serve(name: str) -> None:
        async def one() -> None:
            queue: asyncio.Queue = asyncio.Queue()
            watch.add(queue, dead)
            with pytest.raises(ServiceUnavailable):
                await asyncio.wait_for(next_result(queue), 5)
            seen[name] = asyncio.get_running_loop()

        asyncio.run(one())

    threads = [threading.Thread(target=serve, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert set(seen) == {"a", "b"} and seen["a"] is not seen["b"]
    assert not watch._loops  # both watchdogs ended with their streams
