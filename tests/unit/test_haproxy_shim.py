"""The HAProxy Serve starts, patched: nothing on every interface, errors in OpenAI's shape."""

from __future__ import annotations

import json
import subprocess

from serve.haproxy_shim import ERRORS, error_file_text, patch_config, real_haproxy

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
