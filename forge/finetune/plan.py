"""From a create request to a run: which base model (a self-hosted one), its "auto"
hyperparameters resolved for the data set's size, and the ``ft:`` name it will get."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from forge.config import GENERATIVE_TYPES, FineTuningConfig, PlatformConfig, ProviderConfig
from forge.errors import InvalidRequest
from forge.finetune.objects import SUFFIX_PATTERN, CreateJob, ResolvedHyperparameters
from forge.finetune.settings import LoraSettings, TrainSettings

# OpenAI's documented rule for "auto" epochs: three, more for small sets so that the
# model sees about MIN_TARGET examples, fewer for large ones (about MAX_TARGET).
TARGET_EPOCHS, MIN_TARGET, MAX_TARGET, MAX_AUTO_EPOCHS = 3, 100, 25_000, 25


@dataclass(frozen=True)
class TunableBase:
    """A base model that can be fine-tuned: a self-hosted generative model's weights."""

    name: str
    model_path: str
    provider: ProviderConfig

    @property
    def serves_adapters(self) -> bool:
        return self.provider.max_adapters > 0


def tunable_base(config: PlatformConfig, name: str) -> TunableBase:
    """The configured model ``name`` if its weights are ours to train; else a 400."""
    model = next((m for m in config.models if m.name == name), None)
    if model is None:
        raise InvalidRequest(
            f"Model {name!r} does not exist or cannot be fine-tuned.",
            param="model",
            code="model_not_available",
        )
    provider = next(p for p in config.providers if p.name == model.provider)
    if provider.type not in GENERATIVE_TYPES or not provider.model_path:
        raise InvalidRequest(
            f"Model {name!r} cannot be fine-tuned: only self-hosted models can "
            f"(its provider {provider.name!r} is of type {provider.type!r}).",
            param="model",
            code="model_not_available",
        )
    return TunableBase(name, provider.model_path, provider)


def check_suffix(suffix: str | None) -> str | None:
    if suffix is not None and not re.fullmatch(SUFFIX_PATTERN, suffix):
        raise InvalidRequest(
            "Invalid 'suffix': up to 40 letters, digits, '-' and '_'.",
            param="suffix",
            code="invalid_value",
        )
    return suffix


def org_slug(org_name: str) -> str:
    """An organisation's name as it appears in a model name (OpenAI: ``ft:…:my-org:…``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", org_name.lower()).strip("-")
    return slug[:32] or "org"


def fine_tuned_name(base: str, org: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<org>:<suffix>:<id>``, OpenAI's shape (the id: the job's, shortened)."""
    return f"ft:{base}:{org}:{suffix or ''}:{job_id.removeprefix('ftjob-')[:8]}"


def checkpoint_name(model_name: str, step: int) -> str:
    return f"{model_name}:ckpt-step-{step}"


def auto_epochs(examples: int) -> int:
    if examples * TARGET_EPOCHS < MIN_TARGET:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET / max(1, examples)))
    if examples * TARGET_EPOCHS > MAX_TARGET:
        return max(1, MAX_TARGET // examples)
    return TARGET_EPOCHS


def auto_batch_size(examples: int) -> int:
    """Packed rows a step: about 0.2% of the set (OpenAI's rule of thumb), 1 to 8."""
    return max(1, min(8, round(examples * 0.002)))


@dataclass(frozen=True)
class RunPlan:
    hyperparameters: ResolvedHyperparameters
    lora: LoraSettings
    settings: TrainSettings


def plan_run(request: CreateJob, examples: int, seed: int, defaults: FineTuningConfig) -> RunPlan:
    """Concrete settings for ``request`` on a training file of ``examples`` lines."""
    asked = request.chosen_hyperparameters()
    resolved = ResolvedHyperparameters(
        batch_size=auto_batch_size(examples) if asked.batch_size == "auto" else asked.batch_size,
        learning_rate_multiplier=(
            1.0 if asked.learning_rate_multiplier == "auto" else asked.learning_rate_multiplier
        ),
        n_epochs=auto_epochs(examples) if asked.n_epochs == "auto" else asked.n_epochs,
    )
    lora = LoraSettings(
        rank=asked.lora_rank or defaults.lora_rank,
        alpha=asked.lora_alpha or defaults.lora_alpha,
        dropout=asked.lora_dropout or 0.0,
        target_modules=tuple(asked.lora_target_modules or defaults.lora_target_modules),
    )
    settings = TrainSettings(
        epochs=resolved.n_epochs,
        learning_rate=defaults.base_learning_rate * resolved.learning_rate_multiplier,
        batch_size=resolved.batch_size,
        max_len=defaults.max_len,
        seed=seed,
        eval_every_epoch=True,  # a validation loss per epoch, when there is a validation file
    )
    return RunPlan(resolved, lora, settings)
