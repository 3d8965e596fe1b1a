"""An event-stream response that always closes its source.

Starlette's StreamingResponse (ASGI spec >= 2.4) notices a departed client only when a
write fails, and leaves closing the generator to garbage collection. Here a disconnect
cancels the stream at once, and the source is closed (shielded from that cancellation),
so the upstream call is cancelled and the usage record written promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from forge.errors import ServiceUnavailable
from forge.protocol.sse import DONE, error_event
from gateway.drain import SHUTTING_DOWN, Drain


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self, source: AsyncIterator[bytes], headers: Mapping[str, str], drain: Drain | None = None
    ) -> None:
        self.status_code = 200
        self.background = None
        self._source = source
        self._drain = drain
        self.raw_headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((k.encode(), v.encode()) for k, v in headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = ended = False
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                async def watch_drain(expired: asyncio.Event) -> None:
                    await expired.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                if self._drain is not None:
                    tg.start_soon(watch_drain, self._drain.expired_event())
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                started = True
                async for chunk in self._source:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                ended = True
                tg.cancel_scope.cancel()
        except OSError:
            pass  # the client went away between our writes
        finally:
            with anyio.CancelScope(shield=True):
                await self._source.aclose()  # type: ignore[attr-defined]
                if started and not ended and self._drain is not None and self._drain.expired:
                    await self._end_for_drain(send)

    @staticmethod
    async def _end_for_drain(send: Send) -> None:
        """The drain timeout passed with this stream still open: say so, then [DONE]."""
        error = ServiceUnavailable(
            "The platform is shutting down; this stream was ended before it finished.",
            retry_after=1,
            code=SHUTTING_DOWN,
        )
        with contextlib.suppress(OSError):
            await send(
                {
                    "type": "http.response.body",
                    "body": error_event(error.to_body()),
                    "more_body": True,
                }
            )
            await send({"type": "http.response.body", "body": DONE, "more_body": False})
