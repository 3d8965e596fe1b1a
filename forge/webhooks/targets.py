"""Which URLs an endpoint may have: http(s) only, and never the platform itself (an
event delivered to its own API would act with no caller, or loop)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from forge.errors import InvalidRequest

RESOLVE_TIMEOUT_S = 2.0
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="url", code="invalid_webhook_url")


def _local(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_loopback or ip.is_unspecified


async def _addresses(host: str) -> list[str]:
    """The host's addresses, best effort: a name that does not resolve from here may
    well resolve where the sender runs, so it is not refused for that."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_S,
        )
    except (OSError, TimeoutError):
        return []
    return [str(info[4][0]) for info in infos]


async def check_url(url: str, own_host: str, own_port: int) -> str:
    """``url`` if an endpoint may have it; a 400 naming ``url`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse(f"{url!r} is not a URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse("A webhook URL is http:// or https:// with a host.")
    if parts.username or parts.password:
        raise _refuse("A webhook URL carries no user name or password.")
    host = parts.hostname.lower().rstrip(".")
    port = port or (443 if parts.scheme == "https" else 80)
    if port != own_port:
        return url
    mine = {own_host.lower(), socket.gethostname().lower(), *LOCAL_NAMES}
    if host in mine:
        raise _refuse("A webhook URL may not point at this platform itself.")
    own_addresses = set(await _addresses(own_host))
    for address in await _addresses(host):
        if address in own_addresses or _local(address):
            raise _refuse("A webhook URL may not point at this platform itself.")
    return url
