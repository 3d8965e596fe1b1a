"""One base model, many LoRA adapters, one batch: each row runs through its own adapter.

PEFT's mixed-batch forward (``adapter_names``, one name per row; ``__base__`` for none)
computes the base layers once for the whole batch and each adapter's low-rank update on
its rows only, so requests for different adapters share every decode step. Adapters are
added and removed in place, over the same base tensors. With no adapter loaded the LoRA
wrappers are taken out again (``unload``): on the tiny model they cost ~0.7 of a 1.5 ms
step even when every row is ``__base__``.

Not thread-safe: the batch loop owns it and changes it between two steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
# Loads run on the batch loop's thread and pause every stream: skip PEFT's random init of
# the new LoRA matrices that the saved weights overwrite anyway (a 13 MB rank-64 adapter
# on the small model: 32-40 ms instead of 44-55 ms on this CPU).
LOAD_OPTIONS = {"is_trainable": False, "low_cpu_mem_usage": True}


class MultiLoraModel:
    def __init__(self, model: Any) -> None:
        self._base = model
        self._peft: Any = None  # a PeftModel while at least one adapter is loaded
        # Public name -> PEFT's name for it: PEFT refuses dots in adapter names and
        # gives ``__base__`` its own meaning, and our names allow both.
        self._names: dict[str, str] = {}
        self._ids = itertools.count()

    @property
    def config(self) -> Any:
        return self._base.config

    @property
    def device(self) -> Any:
        return self._base.device

    @property
    def adapters(self) -> list[str]:
        return list(self._names)

    def __call__(self, adapters: Sequence[str | None], **inputs: Any) -> Any:
        """The model's forward over ``inputs``, row i through ``adapters[i]``."""
        if self._peft is None:
            return self._base(**inputs)
        names = [BASE if a is None else self._names[a] for a in adapters]
        return self._peft(**inputs, adapter_names=names)

    def add(self, name: str, path: Path) -> None:
        """Load the PEFT LoRA adapter at ``path`` as ``name``, replacing one of that name."""
        from peft import PeftModel

        self.remove(name)
        internal = f"adapter{next(self._ids)}"
        try:
            if self._peft is None:
                peft = PeftModel.from_pretrained(
                    self._base, str(path), adapter_name=internal, **LOAD_OPTIONS
                )
                self._peft = peft.eval()
            else:
                self._peft.load_adapter(str(path), adapter_name=internal, **LOAD_OPTIONS)
        except Exception:
            self._discard(internal)  # half-injected LoRA layers would change other rows
            raise
        self._names[name] = internal

    def remove(self, name: str) -> None:
        """Drop ``name``; the last one out takes PEFT's wrappers with it."""
        internal = self._names.pop(name, None)
        if internal is not None:
            self._delete(internal)

    def _delete(self, internal: str) -> None:
        if len(self._peft.peft_config) == 1:
            self._base = self._peft.unload()  # the base modules back, unmerged
            self._peft = None
            return
        self._peft.delete_adapter(internal)
        # PEFT may leave the deleted adapter active (when the others target other
        # modules), and every later forward would then fail on it.
        self._peft.set_adapter(next(iter(self._peft.peft_config)), inference_mode=True)

    def _discard(self, internal: str) -> None:
        if self._peft is not None:
            if internal in self._peft.peft_config:
                self._delete(internal)
            return
        from peft.tuners.tuners_utils import BaseTunerLayer

        for parent in list(self._base.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, BaseTunerLayer):
                    setattr(parent, child_name, child.get_base_layer())
        # PEFT also left its config on the model; the next load would find the ghost.
        self._base.__dict__.pop("peft_config", None)
