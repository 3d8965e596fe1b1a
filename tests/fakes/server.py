"""Run an aiohttp application on a loopback port in a background thread."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

# Outside the kernel's ephemeral range (32768-60999 here), Ray's worker ports
# (10002-19999) and Serve's direct-ingress ports (30000-31000, 40000-41000): a port
# handed to a process that binds it later (a Ray node, `forge up`) must not be taken in
# between by some other process's bind(0), or a request meant for this cluster reaches
# another one (the multinode test's 401 from a gateway that did not know its key).
_PORTS = range(20000, 30000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, never the same one twice in a process."""
    for _ in range(200):
        port = random.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 20000-29999")


class ThreadedServer:
    """An aiohttp app served from its own thread and event loop, so that both sync tests
    and other event loops (Ray, the gateway under test) can talk to it."""

    def __init__(self, make_app: Callable[[], web.Application], port: int | None = None) -> None:
        self._make_app = make_app
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Stop listening, then cancel handlers still running (e.g. a request that hangs)."""
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class FakeUpstream:
    """Base of the provider fakes: a served aiohttp app, the requests it saw, and how
    many streams lost their client (to check cancellation reaches the upstream)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.cancelled_streams = 0
        self.completed_streams = 0
        self._server = ThreadedServer(self._app)

    def _app(self) -> web.Application:
        raise NotImplementedError

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def restart(self) -> None:
        """Listen again on the same port after ``stop`` (an upstream outage that ends),
        keeping the requests seen so far."""
        self._server = ThreadedServer(self._app, port=self._server.port).start()

    @property
    def url(self) -> str:
        return self._server.url
