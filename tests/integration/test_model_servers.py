"""Self-hosted models on the real Serve app: LoRA adapters through model multiplexing,
per-model stats for `forge status`, and a crashed model replica replaced."""

from __future__ import annotations

import threading
import time

import httpx2
import openai
import ray

from actors.facets import running_facet
from forge.cli import model_stats
from serve.constants import APP_NAME
from tests.live_platform import ask, check_adapter_serving

PROMPT = [{"role": "user", "content": "def handler(event):"}]


def replica_stats() -> dict:
    directory = running_facet("directory")
    return model_stats(ray.get(directory.replica_stats.remote(), timeout=10))


def test_adapters_through_model_multiplexing_and_status(platform, adapter_dirs):
    check_adapter_serving(platform, "tiny-llama", str(adapter_dirs["support"]))

    deadline = time.monotonic() + 30  # replicas report at each health check (5 s)
    while time.monotonic() < deadline:
        local = replica_stats().get("local")
        if local and local["adapters"] == ["support"]:
            break
        time.sleep(0.5)
    assert local and local["adapters"] == ["support"], local
    assert local["replicas"] == 1 and local["waiting"] >= 0

    r = httpx2.delete(
        platform.url + "/admin/adapters/support",
        headers={"authorization": f"Bearer {platform.admin_key}"},
        timeout=30,
    )
    assert r.status_code == 204, r.text
    deadline = time.monotonic() + 30  # the replica prunes at its next health checks
    while time.monotonic() < deadline and local["adapters"]:
        time.sleep(0.5)
        local = replica_stats().get("local") or local
    assert local["adapters"] == [], local


def test_a_client_leaving_mid_stream_frees_its_slot(platform):
    from ray import serve

    replica = serve.get_deployment_handle("provider-local", app_name=APP_NAME)
    # Serve's fast data plane runs a handle's router on the caller's event loop; from a
    # plain test (no loop) it needs a loop of its own.
    replica._init(_run_router_in_separate_loop=True)
    body = {
        "model": "tiny-llama",
        "messages": PROMPT,
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    headers = {"authorization": f"Bearer {platform.user_key}"}
    with (
        httpx2.Client(timeout=60) as http,
        http.stream("POST", platform.url + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        lines = r.iter_lines()
        assert [next(lines) for _ in range(4)]
        assert replica.stats.remote().result().running == 1
    deadline = time.monotonic() + 15
    while replica.stats.remote().result().running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replica.stats.remote().result().running == 0


def _model_replica() -> ray.actor.ActorHandle:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "provider-local#" in actor["name"] and actor["name"].startswith("SERVE_REPLICA"):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise AssertionError("no replica of the tiny model's deployment")


def test_a_crashed_model_replica_fails_its_requests_and_is_replaced(platform):
    outcome: dict[str, object] = {}

    def long_request() -> None:
        try:
            platform.sdk(timeout=60).chat.completions.create(
                model="tiny-llama", messages=PROMPT, max_tokens=1500, temperature=0
            )
            outcome["error"] = None
        except openai.APIStatusError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(1.0)  # generating
    ray.kill(_model_replica(), no_restart=True)
    worker.join(60)
    assert not worker.is_alive(), "a request hung on a dead replica"
    error = outcome["error"]
    assert isinstance(error, openai.APIStatusError) and error.status_code == 503

    deadline = time.monotonic() + 120  # Serve starts a new replica; it loads the model
    while True:
        try:
            assert ask(platform, "tiny-llama") is not None
            break
        except openai.APIStatusError as exc:
            assert exc.status_code == 503
            assert time.monotonic() < deadline, "the model replica was never replaced"
            time.sleep(1)


def test_an_engine_whose_loop_died_fails_the_health_check_and_is_replaced(platform):
    """The replica process lives on, but its engine is dead: Serve's health check (every
    5 s for model servers) must fail and Serve must start a replacement."""
    assert ask(platform, "tiny-llama") is not None  # the engine has started
    replica = _model_replica()

    def break_the_engine(actor: object) -> str:
        # Serve's replica actor → our ModelServerDeployment (Ray internals, test only)
        deployment = actor._replica_impl._user_callable_wrapper._callable  # type: ignore[attr-defined]
        deployment.provider.engine._batch.error = RuntimeError("injected: the loop died")
        return deployment._replica

    broken = ray.get(replica.__ray_call__.remote(break_the_engine), timeout=30)
    deadline = time.monotonic() + 180
    while True:
        try:
            now = ray.get(_model_replica().__ray_call__.remote(_replica_id), timeout=10)
            if now != broken and ask(platform, "tiny-llama") is not None:
                break
        except (AssertionError, ray.exceptions.RayError, openai.APIStatusError):
            pass
        assert time.monotonic() < deadline, "the replica with a dead engine was not replaced"
        time.sleep(1)


def _replica_id(actor: object) -> str:
    return actor._replica_impl._user_callable_wrapper._callable._replica  # type: ignore[attr-defined]


def test_status_reports_the_embedding_server_and_the_usage_ledger(platform):
    """`forge status` left the embedding model server out, and said nothing of usage."""
    from forge.cli import usage_stats

    platform.sdk().embeddings.create(model="all-minilm-l6-v2", input="hello")
    directory = running_facet("directory")
    deadline = time.monotonic() + 30  # replicas report at each health check (5-10 s)
    while time.monotonic() < deadline:
        replicas = ray.get(directory.replica_stats.remote())
        usage = usage_stats(replicas, 0)
        embed = model_stats(replicas).get("local-embed")
        if embed and usage["per_replica"] and usage["shipped"] > 0:
            break
        time.sleep(0.5)
    assert embed and embed["replicas"] == 1 and embed["running"] == 0, embed
    assert usage["shipped"] > 0 and not usage["failing"], usage
    recorder = running_facet("usage")
    assert ray.get(recorder.rejected_count.remote()) == 0
