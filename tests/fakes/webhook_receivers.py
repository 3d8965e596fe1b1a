"""Fake webhook receivers that check what they are sent as each real one does.

- ``/standard/{name}``: a Standard Webhooks consumer verifying the signature with the
  reference library (``standardwebhooks``) and its secret (``secrets[name]``): 401 on a
  bad signature, as its docs advise; 2xx otherwise.
- ``/slack``: Slack's incoming webhook: 200 ``ok`` (text); 400 ``invalid_payload`` for a
  body without ``text``/``blocks`` or with a block Slack does not know, ``no_text``
  when blocks come without the ``text`` fallback.
- ``/discord``: Discord's execute-webhook: 204; 400 ``{"code": 50035, "message":
  "Invalid Form Body"}`` past its limits (content 2000, 10 embeds, title 256,
  description 4096, 25 fields, name 256, value 1024) or with neither content nor embeds.
- ``/teams``: a Teams Workflows webhook: 202; 400 unless a ``message`` whose attachments
  are Adaptive Cards (``type`` AdaptiveCard, a ``version``, a ``body`` list).
- ``/fail/{n}``: 500 for the first ``n`` posts, then 200 (retries); ``/down``: 503.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from tests.fakes.server import FakeUpstream

SLACK_BLOCKS = {"header", "section", "divider", "context", "actions", "image", "rich_text"}


def _discord_ok(body: dict[str, Any]) -> bool:
    content = body.get("content") or ""
    embeds = body.get("embeds") or []
    if (not content and not embeds) or len(content) > 2000 or len(embeds) > 10:
        return False
    for e in embeds:
        if len(e.get("title", "")) > 256 or len(e.get("description", "")) > 4096:
            return False
        fields = e.get("fields", [])
        if len(fields) > 25:
            return False
        if any(len(f["name"]) > 256 or len(f["value"]) > 1024 for f in fields):
            return False
        if not isinstance(e.get("color", 0), int):
            return False
    return True


def _teams_ok(body: dict[str, Any]) -> bool:
    if body.get("type") != "message" or not body.get("attachments"):
        return False
    for a in body["attachments"]:
        card = a.get("content") or {}
        if a.get("contentType") != "application/vnd.microsoft.card.adaptive":
            return False
        if card.get("type") != "AdaptiveCard" or not card.get("version"):
            return False
        if not isinstance(card.get("body"), list):
            return False
    return True


class FakeReceivers(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}
        self.received: dict[str, list[dict[str, Any]]] = {}
        self._posts: Counter[str] = Counter()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/standard/{name}", self.standard)
        app.router.add_post("/slack", self.slack)
        app.router.add_post("/discord", self.discord)
        app.router.add_post("/teams", self.teams)
        app.router.add_post("/fail/{n}", self.fail)
        app.router.add_post("/down", self.down)
        return app

    def _keep(self, where: str, body: Any, headers: Any) -> None:
        self.received.setdefault(where, []).append({"body": body, "headers": dict(headers)})

    async def standard(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        try:
            Webhook(self.secrets[name]).verify(raw, dict(request.headers))
        except (WebhookVerificationError, KeyError):
            return web.Response(status=401, text="bad signature")
        self._keep(f"standard/{name}", orjson.loads(raw), request.headers)
        return web.Response(status=204)

    async def slack(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        blocks = body.get("blocks")
        if not body.get("text") and not blocks:
            return web.Response(status=400, text="invalid_payload")
        if blocks is not None:
            if not body.get("text"):
                return web.Response(status=400, text="no_text")
            if any(b.get("type") not in SLACK_BLOCKS for b in blocks):
                return web.Response(status=400, text="invalid_blocks")
        self._keep("slack", body, request.headers)
        return web.Response(text="ok")

    async def discord(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if not _discord_ok(body):
            err = {"message": "Invalid Form Body", "code": 50035}
            return web.json_response(err, status=400)
        self._keep("discord", body, request.headers)
        return web.Response(status=204)

    async def teams(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if not _teams_ok(body):
            return web.json_response({"error": {"code": "InvalidRequestContent"}}, status=400)
        self._keep("teams", body, request.headers)
        return web.Response(status=202)

    async def fail(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        self._posts[request.path] += 1
        if self._posts[request.path] <= n:
            return web.Response(status=500, text="try later")
        self._keep(request.path.lstrip("/"), orjson.loads(await request.read()), request.headers)
        return web.Response(status=200)

    async def down(self, request: web.Request) -> web.Response:
        self._posts[request.path] += 1
        return web.Response(status=503)
