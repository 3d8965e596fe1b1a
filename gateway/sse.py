"""An event-stream response that always closes its source.

Starlette's StreamingResponse (ASGI spec >= 2.4) notices a departed client only when a
write fails, and leaves closing the generator to garbage collection. Here a disconnect
cancels the stream at once, and the source is closed (shielded from that cancellation),
so the upstream call is cancelled and the usage record written promptly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, source: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self._source = source
        self.raw_headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((k.encode(), v.encode()) for k, v in headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                async for chunk in self._source:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        except OSError:
            pass  # the client went away between our writes
        finally:
            with anyio.CancelScope(shield=True):
                await self._source.aclose()  # type: ignore[attr-defined]
