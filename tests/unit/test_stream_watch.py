"""The watchdog that ends streams whose batching loop stopped without answering them."""

from __future__ import annotations

import asyncio

import pytest

from forge.errors import ServiceUnavailable
from serve.models import stream_watch
from serve.models.stream_watch import StreamWatch, next_result


class Loop:
    def __init__(self) -> None:
        self.running = True

    def is_running(self) -> bool:
        return self.running


async def test_streams_of_a_stopped_loop_get_a_503_and_the_others_wait_on(monkeypatch):
    monkeypatch.setattr(stream_watch, "CHECK_EVERY_S", 0.01)
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
    assert streams[2].empty()  # its loop runs: nothing put there
    for queue in streams:
        watch.discard(queue)
    task = watch._task
    await asyncio.wait_for(task, 5)  # no stream left: the watchdog ends
    watch.add(streams[2], alive)  # and a new stream starts another
    assert watch._task is not task and not watch._task.done()
    watch.discard(streams[2])
