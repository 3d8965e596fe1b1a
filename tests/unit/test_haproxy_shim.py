"""The HAProxy Serve starts, patched: nothing on every interface, errors in OpenAI's shape."""

from __future__ import annotations

import json
import subprocess

from serve.haproxy_shim import (
    ERRORS,
    MUX_MESSAGES,
    MUX_STATUSES,
    error_file_text,
    patch_builtin_errors,
    patch_config,
    prepare,
    real_haproxy,
)

SERVE_STYLE = """global
    stats socket /tmp/x/admin.sock mode 666 level admin expose-fd listeners
defaults
    mode http
    errorfile 502 /tmp/x/500.http
    errorfile 503 /tmp/x/500.http
    errorfile 504 /tmp/x/500.http
frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind 127.0.0.1:8000
backend b
    server s1 127.0.0.1:30001 check
listen stats
  bind *:8404
  stats enable
"""


def test_listeners_move_to_the_platform_host_and_errors_become_ours(tmp_path):
    files = {s: tmp_path / f"forge-{s}.http" for s in ERRORS}
    patched = patch_config(SERVE_STYLE, "127.0.0.1", files)
    binds = [line.split()[1] for line in patched.splitlines() if line.strip().startswith("bind")]
    assert binds == ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8404"]
    assert "/tmp/x/500.http" not in patched
    assert f"errorfile 503 {files[503]}" in patched
    assert patched.index("defaults") < patched.index("errorfile 400")


def test_error_pages_are_openai_shaped_http_responses():
    for status in ERRORS:
        head, body = error_file_text(status).split("\r\n\r\n", 1)
        lines = head.split("\r\n")
        assert lines[0].startswith(f"HTTP/1.1 {status} ")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        assert int(headers["Content-Length"]) == len(body.encode())
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
    assert "Retry-After: 1" in error_file_text(503)
    for status in MUX_STATUSES:
        text = error_file_text(status, MUX_MESSAGES.get(status), compact=True)
        head, body = text.split("\r\n\r\n", 1)
        assert "Content-Type: application/json" in head
        assert f"Content-Length: {len(body.encode())}" in head
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}


def test_every_built_in_error_of_the_installed_haproxy_is_rewritten_in_place():
    """HAProxy 2.8 answers what its HTTP/1 parser rejects with compiled-in HTML, whatever
    errorfile says: each of those messages must be found once and fit its slot."""
    from pathlib import Path

    original = Path(real_haproxy()).read_bytes()
    patched, statuses = patch_builtin_errors(original)
    assert statuses == list(MUX_STATUSES)
    assert len(patched) == len(original)
    assert b"Your browser sent an invalid request" not in patched


def test_the_real_haproxy_answers_no_ready_replica_with_a_503_in_openais_shape(tmp_path):
    """A request that finds no ready replica used to get HAProxy's plain-text 500."""
    import time

    import httpx2

    from serve.haproxy_shim import write_error_files
    from tests.fakes.server import free_port

    port, dead = free_port(), free_port()
    config = f"""global
    tune.bufsize 16384
defaults
    mode http
    timeout client 5s
    timeout server 5s
    timeout connect 1s
    errorfile 503 /tmp/x/500.http
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend b
backend b
    server s1 127.0.0.1:{dead}
listen stats
  bind *:{free_port()}
  stats enable
"""
    path = tmp_path / "haproxy.cfg"
    path.write_text(patch_config(config, "127.0.0.1", write_error_files(tmp_path)))
    haproxy = subprocess.Popen([real_haproxy(), "-db", "-f", str(path)])
    try:
        for _ in range(100):
            try:
                resp = httpx2.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={})
                break
            except httpx2.ConnectError:
                time.sleep(0.05)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert resp.json()["error"]["code"] == "no_ready_replica"
    finally:
        haproxy.terminate()
        haproxy.wait(10)


def test_the_real_haproxy_answers_what_its_parser_rejects_in_openais_shape(tmp_path):
    """Oversized headers and a malformed request line are rejected by HAProxy 2.8's HTTP/1
    parser before any errorfile applies: they used to get its HTML 400."""
    import contextlib
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.fakes.server import free_port

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    backend = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    path = tmp_path / "haproxy.cfg"
    path.write_text(f"""global
    tune.bufsize 16384
defaults
    mode http
    timeout client 5s
    timeout server 5s
    timeout connect 1s
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend b
backend b
    server s1 127.0.0.1:{backend.server_address[1]}
""")

    def exchange(raw: bytes) -> tuple[int, dict[str, str], bytes]:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        with conn:
            # OSError: HAProxy may answer and close before it has read it all
            with contextlib.suppress(OSError):
                conn.sendall(raw)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
        return int(status_line.split()[1]), headers, body

    haproxy = subprocess.Popen(prepare(["-db", "-f", str(path)]))
    try:
        big = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        for raw in (big, b"\x01\x02 not http at all\r\n\r\n"):
            status, headers, body = exchange(raw)
            assert status in (400, 431)
            assert headers["content-type"] == "application/json"
            assert int(headers["content-length"]) == len(body)
            error = json.loads(body)["error"]
            assert error["type"] == "invalid_request_error" and error["code"] == "bad_request"
            assert error["message"]
        status, _, body = exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (status, body) == (200, b"ok")
    finally:
        haproxy.terminate()
        haproxy.wait(10)
        backend.shutdown()


def test_haproxy_dies_with_the_process_that_started_it(tmp_path):
    """Serve's HAProxyManager SIGKILLed (or its node stopped) used to leave HAProxy
    listening on the ingress port as an orphan."""
    import sys
    import time

    from serve.processes import is_running
    from tests.fakes.server import free_port

    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        f"    timeout connect 1s\nfrontend f\n    bind 127.0.0.1:{free_port()}\n"
    )
    # A parent that starts forge-haproxy as Serve's actor does, says its pid, and is killed.
    shim = [sys.executable, "-m", "serve.haproxy_shim", "-db", "-f", str(config)]
    parent = (
        "import os, signal, subprocess, time\n"
        f"child = subprocess.Popen({shim!r})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(1.5)\n"  # HAProxy is up
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60)
    haproxy = int(run.stdout.split()[0])
    deadline = time.monotonic() + 10
    while is_running(haproxy) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_running(haproxy), "HAProxy outlived the process that started it"


def test_patched_copies_are_kept_once_per_user(tmp_path, monkeypatch):
    import os

    from serve.haproxy_shim import patched_binaries_dir

    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    folder = patched_binaries_dir()
    assert folder == tmp_path / f"forge-haproxy-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)  # writable by others: not trusted
    assert patched_binaries_dir() is None
