"""The embedded default model, built locally: no model hub is reachable on every machine.

A tiny Llama-shaped causal LM (random weights, head_dim 64 so vLLM's CPU build accepts it)
and a byte-level BPE tokenizer trained on the Python standard library's own source, with
a chat template, saved with ``save_pretrained`` so that it loads back through the same
``from_pretrained`` path as any real model.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from pydantic import BaseModel, Field

# Hermes-style tools (as Qwen's template): the tools listed in a system turn, calls as
# ``<tool_call>`` JSON in the assistant's turn, results as ``<tool_response>`` in a user
# turn. The tags are plain text, not special tokens: decoding keeps them.
CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|system|>\\n# Tools\\n<tools>\\n' }}"
    "{% for tool in tools %}{{ tool | tojson }}{{ '\\n' }}{% endfor %}"
    '{{ \'</tools>\\nTo call a function, answer <tool_call>{"name": <name>, '
    '"arguments": <arguments>}</tool_call>.</s>\\n\' }}{% endif %}'
    "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}"
    "{{ '<|user|>\\n<tool_response>\\n' + message['content'] + '\\n</tool_response></s>\\n' }}"
    "{% else %}{{ '<|' + message['role'] + '|>\\n' + (message['content'] or '') }}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{{ '<tool_call>' }}{{ {'name': call['function']['name'], "
    "'arguments': call['function']['arguments']} | tojson }}{{ '</tool_call>' }}"
    "{% endfor %}{{ '</s>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


class TinyModelSpec(BaseModel):
    """Shape of the tiny model; defaults build in a few seconds on a laptop CPU."""

    vocab_size: int = Field(1000, ge=len(SPECIAL_TOKENS) + 256)
    hidden_size: int = Field(256, ge=64)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(512, ge=64)
    max_position_embeddings: int = Field(2048, ge=128)
    corpus_files: int = Field(200, ge=1, description="Standard-library files to train on.")
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads


def _corpus(limit: int) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.is_file())[:limit]
    return [str(p) for p in files]


def build_tokenizer(spec: TinyModelSpec):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(_corpus(spec.corpus_files), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Build the tokenizer and model and save both to ``out_dir``; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec)
    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def is_built(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").exists() and (path / "tokenizer.json").exists()


def refresh_chat_template(path: str | Path) -> bool:
    """Give a tiny model built by an earlier version the current chat template (tools
    came later); True when it changed."""
    template = Path(path) / "chat_template.jinja"
    if template.exists() and template.read_text() == CHAT_TEMPLATE:
        return False
    template.write_text(CHAT_TEMPLATE)
    return True


def build_tiny_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    rank: int = 8,
    seed: int = 1,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj", "o_proj"),
) -> Path:
    """A random LoRA adapter for a (tiny) base model, saved by PEFT like a trained one.

    ``init_lora_weights=False`` makes both LoRA matrices random, so the adapter visibly
    changes what the model says: what tests and demos of adapter serving need."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=list(target_modules),
        init_lora_weights=False,
    )
    out = Path(out_dir)
    get_peft_model(model, lora).save_pretrained(out)
    return out
