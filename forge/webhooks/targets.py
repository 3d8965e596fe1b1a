"""Which URLs an endpoint may have: http(s) only, and never the platform itself (an
event delivered to its own API would act with no caller, or loop)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx2

from forge.errors import InvalidRequest

RESOLVE_TIMEOUT_S = 2.0
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="url", code="invalid_webhook_url")


def _local(address: str, own: set[str]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_loopback or ip.is_unspecified or str(ip) in own


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
    except UnicodeError:  # an empty or over-long label: not a host name at all
        raise _refuse(f"{host!r} is not a valid host name.") from None
    except (OSError, TimeoutError):
        return []
    return [str(info[4][0]) for info in infos]


async def check_url(url: str, own_host: str, own_port: int) -> str:
    """``url`` if an endpoint may have it; a 400 naming ``url`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx2.URL(url)  # what the sender will parse it with
    except (ValueError, httpx2.InvalidURL):
        raise _refuse(f"{url!r} is not a URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse("A webhook URL is http:// or https:// with a host.")
    if parts.username or parts.password:
        raise _refuse("A webhook URL carries no user name or password.")
    host = parts.hostname.lower().rstrip(".")
    port = port or (443 if parts.scheme == "https" else 80)
    if port != own_port:
        return url
    if len(host) > 253:
        raise _refuse("A webhook URL's host name is at most 253 characters.")
    machine = socket.gethostname().lower()
    if host in {own_host.lower(), machine, *LOCAL_NAMES}:
        raise _refuse("A webhook URL may not point at this platform itself.")
    # the platform listens on own_host (every interface, for 0.0.0.0): this machine's
    # own addresses count as the platform too
    own = set(await _addresses(own_host)) | set(await _addresses(machine))
    for address in await _addresses(host):
        if _local(address, own):
            raise _refuse("A webhook URL may not point at this platform itself.")
    return url
