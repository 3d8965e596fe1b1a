"""Sending the outbox: each gateway replica runs one sender; they share the work through
the store's claims. A failed try is retried on a schedule (Standard Webhooks' advice,
by default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), then the delivery is ``failed``
until someone replays it. Any 2xx is delivered; anything else, a timeout or a refused
connection is a failed try."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx2
import orjson

from forge.webhooks.formats import render
from forge.webhooks.signing import signed_headers
from forge.webhooks.store import Outgoing, WebhookStore

log = logging.getLogger(__name__)
USER_AGENT = "PromptForge-Webhooks/1"
ERROR_BODY = 200  # bytes of a refusal's body kept in the delivery's last_error


class WebhookSender:
    def __init__(
        self,
        store: WebhookStore,
        schedule_s: list[float],
        *,
        poll_s: float = 1.0,
        timeout_s: float = 10.0,
        lease_s: float = 60.0,
        batch: int = 16,
        http: httpx2.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self.schedule_s = schedule_s
        self.poll_s = poll_s
        self.lease_s = max(lease_s, timeout_s * 2)
        self.batch = batch
        self._timeout_s = timeout_s
        self._http = http
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was emitted here: send without waiting for the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.store.collect_spend_alerts()
                await self.store.collect_budget_thresholds()
                while await self.tick() == self.batch:
                    pass  # a full batch: more may be due
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: the next poll tries again
                log.warning("webhook sending failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def tick(self) -> int:
        """Send what is due now; returns how many were claimed."""
        claimed = await self.store.claim_due(self.batch, self.lease_s)
        if claimed:
            await asyncio.gather(*(self.send(o) for o in claimed))
        return len(claimed)

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = httpx2.AsyncClient(
                timeout=self._timeout_s, follow_redirects=False, headers={"user-agent": USER_AGENT}
            )
        return self._http

    async def send(self, outgoing: Outgoing) -> bool:
        """One try, within ``timeout_s`` in all (a receiver that trickles its answer is
        cut off before its claim can expire), reading at most ``ERROR_BODY`` bytes."""
        body = orjson.dumps(render(outgoing.kind, outgoing.event))
        if outgoing.secret is not None:
            headers = signed_headers(outgoing.secret, outgoing.id, int(time.time()), body)
        else:
            headers = {"content-type": "application/json"}
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                request = self._client().stream("POST", outgoing.url, content=body, headers=headers)
                async with request as resp:
                    status = resp.status_code
                    if not 200 <= status < 300:
                        head = b""
                        async for chunk in resp.aiter_bytes():
                            head += chunk
                            if len(head) >= ERROR_BODY:
                                break
                        text = head[:ERROR_BODY].decode(errors="replace")
                        error = f"HTTP {status}: {text}"
        except TimeoutError:
            error = f"no answer within {self._timeout_s:g} s"
        except Exception as exc:  # refused, reset, a URL the client cannot send to…
            error = f"{type(exc).__name__}: {exc}"[:300]
        retry_at = None
        if error is not None and outgoing.attempts < len(self.schedule_s):
            delay = self.schedule_s[outgoing.attempts]
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        await self.store.settle(outgoing, status, error, retry_at)
        return error is None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
