"""LoRA adapters for a model replica: fetch (local dir or any fsspec URL), check, cache.

``AdapterCache`` is the replica's truth about which adapters its engine holds: at most
``capacity``, least recently used evicted first, but never one that a running request
uses (eviction waits for its last lease). Loads of the same adapter coalesce. Serve's
model multiplexing routes a request to a replica that already holds its adapter and calls
``evict`` when it drops one, so the two agree on what is loaded where. ``prune`` (run by
each replica at its health check) unloads what was deleted from the registry since.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import shutil
import struct
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge.adapters import AdapterMismatch, AdapterNotFound, AdapterSpec, adapter_version
from forge.errors import InvalidRequest

ADAPTER_CONFIG = "adapter_config.json"
# The adapter_config.json fields an adapter may set: what plain LoRA inference reads, and
# training-time options (initialisations, dropout, which layers) that leave it plain. Any
# other field set (DoRA, modules_to_save, trainable tokens, LoRA biases, alpha patterns,
# aLoRA, ... and whatever PEFT adds next) changes the forward: refused rather than served
# wrong. `bias` must be "none".
PLAIN_LORA_FIELDS = frozenset(
    {
        "peft_type", "peft_version", "task_type", "auto_mapping", "base_model_name_or_path",
        "revision", "inference_mode", "r", "lora_alpha", "use_rslora", "rank_pattern",
        "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",
        "lora_dropout", "init_lora_weights", "loftq_config", "eva_config", "corda_config",
        "lora_ga_config", "qalora_group_size", "megatron_core", "ensure_weight_tying", "bias",
    }
)  # fmt: skip
# Initialisations after which the saved A and B are the whole story. PiSSA, OLoRA, CorDA
# and LoftQ rewrite the base weights when PEFT loads an unconverted adapter (a converted
# one is saved with `true`): served over the untouched base they would answer wrong.
PLAIN_LORA_INITS = (True, False, "gaussian", "orthogonal", "eva", "mica")
# The admin route loads an adapter on a replica before it registers it: a prune in between
# must not undo that load, so an adapter never yet seen registered is pruned only this
# long after it loaded.
PRUNE_SETTLE_S = 10.0
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def fetch_adapter(source: str, cache_dir: Path) -> Path:
    """A local directory holding the adapter: ``source`` itself when local, else a copy
    under ``cache_dir`` (downloaded once per source URL)."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, root = fsspec.core.url_to_fs(source)
    except (ValueError, ImportError) as exc:
        raise InvalidRequest(
            f"Cannot open adapter source {source!r}: {exc}", param="source"
        ) from None
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        local = Path(root)
    else:
        local = cache_dir / hashlib.sha256(source.encode()).hexdigest()[:20]
        if not (local / ADAPTER_CONFIG).exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=local.name + ".", dir=cache_dir))
            try:  # a download of its own, renamed into place: concurrent fetches are safe
                fs.get(root + "/", str(partial) + "/", recursive=True)
                with contextlib.suppress(OSError):  # another fetch got there first
                    partial.rename(local)
            except (FileNotFoundError, OSError) as exc:
                raise InvalidRequest(
                    f"Cannot fetch adapter from {source!r}: {exc}", param="source"
                ) from None
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    if not (local / ADAPTER_CONFIG).is_file() or not (local / ADAPTER_WEIGHTS).is_file():
        raise InvalidRequest(
            f"{source!r} is not a PEFT LoRA adapter (needs {ADAPTER_CONFIG} and "
            f"{ADAPTER_WEIGHTS}).",
            param="source",
        )
    return local


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header, without loading a tensor."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def projection_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of a decoder layer's linear projections, from a HF config."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    inter = config.get("intermediate_size", 4 * hidden)
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv * head_dim),
        "v_proj": (hidden, kv * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


@dataclass(frozen=True, slots=True)
class AdapterShape:
    rank: int
    target_modules: tuple[str, ...]


def check_adapter(path: Path, base_config: dict[str, Any], max_rank: int) -> AdapterShape:
    """400 unless ``path`` is a LoRA adapter whose shapes fit this base model."""
    cfg = json.loads((path / ADAPTER_CONFIG).read_text())
    if cfg.get("peft_type") != "LORA":
        raise InvalidRequest(
            f"Only LoRA adapters are served; this one is {cfg.get('peft_type')!r}.",
            param="source",
        )
    extras = sorted(k for k, v in cfg.items() if v and k not in PLAIN_LORA_FIELDS)
    if cfg.get("bias", "none") != "none":
        extras.append(f"bias={cfg['bias']!r}")
    if cfg.get("init_lora_weights", True) not in PLAIN_LORA_INITS:
        extras.append(f"init_lora_weights={cfg['init_lora_weights']!r}")
    if extras:
        raise InvalidRequest(
            f"Only plain LoRA adapters are served; this one uses {', '.join(extras)} "
            "(neither vLLM nor a mixed-adapter batch can run them).",
            param="source",
            code="unsupported_adapter",
        )
    rank = max([int(cfg.get("r", 0)), *map(int, (cfg.get("rank_pattern") or {}).values())])
    if rank > max_rank:
        raise InvalidRequest(
            f"The adapter's rank {rank} exceeds this model's max_lora_rank {max_rank}.",
            param="source",
        )
    expected = projection_shapes(base_config)
    layers = int(base_config.get("num_hidden_layers", 0))
    modules: set[str] = set()
    for key, shape in _safetensors_shapes(path / ADAPTER_WEIGHTS).items():
        layer = _LAYER.search(key)
        module = next((m for m in expected if f".{m}.lora_" in key), None)
        fits = layer is None or int(layer.group(1)) < layers
        if module is not None and fits:
            modules.add(module)
            features_in, features_out = expected[module]
            if ".lora_A." in key:
                fits = shape[-1] == features_in
            elif ".lora_B." in key:
                fits = shape[0] == features_out
        if not fits:
            base = cfg.get("base_model_name_or_path") or "unknown"
            raise AdapterMismatch(
                f"The adapter's weights do not fit this model: {key} has shape "
                f"{list(shape)}. (Its config names {base!r} as its base.)",
                param="source",
            )
    return AdapterShape(rank=rank, target_modules=tuple(sorted(modules)))


@dataclass(slots=True)
class _Entry:
    version: str = ""  # forge.adapters.adapter_version of what was loaded
    replacing: bool = False  # a newer copy waits for this one's requests to end
    leases: int = 0
    evicted: bool = False
    registered: bool = False  # seen in the registry with this version
    loaded_at: float = field(default_factory=time.monotonic)


class AdapterCache:
    """LRU of the adapters an engine holds, with leases so no request loses its adapter."""

    def __init__(
        self,
        capacity: int,
        *,
        resolve: Callable[[str], Awaitable[AdapterSpec | None]],
        prepare: Callable[[AdapterSpec], Awaitable[Path]],
        load: Callable[[str, Path], Awaitable[None]],
        unload: Callable[[str], Awaitable[None]],
    ) -> None:
        self.capacity = capacity
        self._resolve = resolve
        self._prepare = prepare
        self._load = load
        self._unload = unload
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loading: dict[str, asyncio.Future[None]] = {}

    def loaded(self) -> list[str]:
        """Adapter names, least recently used first."""
        return list(self._entries)

    @asynccontextmanager
    async def lease(
        self, name: str, version: str | None = None, *, registered: bool = False
    ) -> AsyncIterator[None]:
        """Hold ``name`` loaded while the block runs (loading it first when needed).
        ``registered``: the caller found this version in the registry (the gateway did)."""
        await self.ensure(name, version=version, lease=True, registered=registered)
        entry = self._entries[name]  # ensure returned right after taking the lease
        try:
            yield
        finally:
            entry.leases -= 1
            if entry.leases == 0 and entry.evicted:
                await self._drop(name)
            else:
                await self._trim()

    async def ensure(
        self,
        name: str,
        spec: AdapterSpec | None = None,
        *,
        version: str | None = None,
        lease: bool = False,
        registered: bool = False,
        reload: bool = False,
    ) -> None:
        """Load ``name`` unless that registration of it is loaded (``spec``'s, or the one
        ``version`` names: ``forge.adapters.adapter_version``), reloading if it changed,
        or with ``reload`` (the admin route: the files at the source may have changed);
        404 for an adapter nobody registered. With ``lease``, the lease is taken before
        returning, with no await in between, so no trim can drop it first."""
        while True:
            entry = self._entries.get(name)
            if entry is not None and (
                reload
                or (spec is not None and entry.version != adapter_version(spec))
                or (version is not None and entry.version != version)
            ):
                if not reload and spec is None:
                    current = await self._resolve(name)
                    if current is not None and adapter_version(current) == entry.version:
                        version = None  # the asker's view is stale (a gateway's cache):
                        continue  # the loaded copy is the registered one
                reload = False  # the copy to replace is this one, not the next
                if entry.leases == 0:
                    await self._drop(name)  # registered again: reload
                    continue
                entry.evicted = entry.replacing = True  # in use: it drains, then reload
                return await self._when_drained(
                    name, spec=spec, version=version, lease=lease, registered=registered
                )
            if entry is not None and entry.replacing:  # not to be revived: wait it out
                return await self._when_drained(
                    name, spec=spec, version=version, lease=lease, registered=registered
                )
            if entry is not None:  # loaded, or evicted but still draining: keep it
                entry.evicted = False
                entry.registered |= registered
                self._entries.move_to_end(name)
                if lease:
                    entry.leases += 1
                return
            task = self._loading.get(name)
            if task is None:
                # Its own task: a caller that leaves (client gone) must not cancel the
                # load that other requests wait on.
                task = asyncio.ensure_future(self._load_new(name, spec))
                self._loading[name] = task
                task.add_done_callback(lambda t, n=name: self._loaded(n, t))
            await asyncio.shield(task)  # then loop: take it, or load again if dropped
            reload = False  # what is loaded now was read from the files just now

    async def _load_new(self, name: str, spec: AdapterSpec | None) -> None:
        registered = spec is None
        spec = spec or await self._resolve(name)
        if spec is None:
            raise AdapterNotFound(f"The adapter {name!r} does not exist.", param="model")
        path = await self._prepare(spec)
        await self._load(name, path)
        self._entries[name] = _Entry(version=adapter_version(spec), registered=registered)
        await self._trim(keep=name)

    def _loaded(self, name: str, task: asyncio.Task[None]) -> None:
        self._loading.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters re-raise it, nobody else has to

    async def _when_drained(self, name: str, **ensure: Any) -> None:
        """``ensure(name, **ensure)`` once the copy now loaded has been dropped (not
        while any copy is: another waiter may have loaded the next one already)."""
        draining = self._entries.get(name)
        while draining is not None and self._entries.get(name) is draining:
            await asyncio.sleep(0.05)
        await self.ensure(name, **ensure)

    async def evict(self, name: str, version: str | None = None) -> None:
        """Drop ``name`` now, or when its last running request ends (only the copy from
        the source ``version`` names, when given)."""
        entry = self._entries.get(name)
        if entry is None or (version is not None and entry.version != version):
            return
        entry.evicted = True
        if entry.leases == 0:
            await self._drop(name)

    async def prune(self, settle_s: float = PRUNE_SETTLE_S) -> list[str]:
        """Unload the adapters whose registration the registry no longer holds (deleted,
        or registered again); returns their names. One
        under a running request goes when that request ends; one never yet seen
        registered (just loaded by the admin route) only ``settle_s`` after its load."""
        stale: list[str] = []
        for name, entry in list(self._entries.items()):
            try:
                spec = await self._resolve(name)
            except Exception:  # this one next time; the others now
                continue
            if spec is not None and adapter_version(spec) == entry.version:
                entry.registered = True
            elif entry.registered or time.monotonic() - entry.loaded_at >= settle_s:
                await self.evict(name, version=entry.version)  # that copy only
                stale.append(name)
        return stale

    async def _trim(self, keep: str | None = None) -> None:
        """Unload idle adapters, least recently used first, down to capacity; never
        ``keep`` (just loaded for a request about to lease it). Re-reads the entries
        after every unload: other requests run meanwhile."""
        while len(self._entries) > self.capacity:
            idle = (n for n, e in self._entries.items() if e.leases == 0 and n != keep)
            victim = next(idle, None)
            if victim is None:
                return
            await self._drop(victim)

    async def _drop(self, name: str) -> None:
        if self._entries.pop(name, None) is not None:
            await self._unload(name)
