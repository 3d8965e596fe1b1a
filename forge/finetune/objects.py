"""The fine-tuning API's objects in OpenAI's shapes (``FineTuningJob``,
``FineTuningJobEvent``, ``FineTuningJobCheckpoint``, ``CreateFineTuningJobRequest``),
plus the platform's extras: LoRA settings among the hyperparameters, a priority, the
workers a job gets, and deploying the result when it succeeds."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"validating_files", "queued", "running"})
SUFFIX_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"


class Hyperparameters(BaseModel):
    """OpenAI's three, each ``"auto"`` or a value; then the LoRA extras (defaults from
    the platform's config when left out)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=100)] = "auto"
    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=50)] = "auto"
    lora_rank: int | None = Field(None, ge=1, le=256, description="LoRA rank r.")
    lora_alpha: int | None = Field(None, ge=1, le=1024, description="LoRA alpha.")
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    lora_target_modules: list[str] | None = Field(
        None, min_length=1, max_length=16, description="Module names to adapt."
    )


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised"] = Field(description="Only supervised fine-tuning runs here.")
    supervised: Supervised = Field(default_factory=Supervised)


class Resources(BaseModel):
    """What each of the job's Ray Train workers gets."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(
        1, ge=1, le=64, description="Training workers: data parallel, each its share of a step."
    )
    cpus_per_worker: float = Field(1.0, ge=0, le=256)
    gpus_per_worker: float = Field(0.0, ge=0, le=16)


class CreateJob(BaseModel):
    """``POST /v1/fine_tuning/jobs``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    training_file: str = Field(min_length=1, max_length=40)
    validation_file: str | None = Field(None, max_length=40)
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2_147_483_647)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(
        None, description="Deprecated by OpenAI in favour of method; still accepted."
    )
    integrations: list[dict[str, Any]] | None = Field(None, max_length=0)
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first.")
    resources: Resources = Field(default_factory=Resources)
    deploy: bool = Field(False, description="Serve the model as soon as the job succeeds.")

    def chosen_hyperparameters(self) -> Hyperparameters:
        if self.method is not None:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class ResolvedHyperparameters(BaseModel):
    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int


class JobObject(BaseModel):
    """OpenAI's ``FineTuningJob``, with ``status`` also ``paused``."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: ResolvedHyperparameters
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Status
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    suffix: str | None = None
    priority: int = 0


class EventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] = Field(default_factory=dict)


class CheckpointObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int


class ListOf(BaseModel):
    """A list page without first/last ids (OpenAI's jobs, events and checkpoints lists)."""

    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool
    first_id: str | None = Field(None, exclude_if=lambda v: v is None)
    last_id: str | None = Field(None, exclude_if=lambda v: v is None)
