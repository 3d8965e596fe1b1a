"""Keep pandas and pyarrow out of the platform's Ray processes.

``ray[train]`` installs pandas and pyarrow, and two optional imports then load them into
processes that never use them: Ray Serve's ``ray.serve._private.utils`` imports pandas
(to register a JSON encoder for DataFrames, which this platform never returns), and
every Ray worker's serialization setup (``ray._private.arrow_serialization``) imports
pyarrow (to register serializers for Ray Data's Arrow blocks, which only training
could pass). That cost each process ~66 and ~27 MiB resident: the `forge up` tree grew
from 1,661 to 2,147 MiB RSS when the train extra came in (bench/README.md).

``install`` puts a finder first on ``sys.meta_path`` that refuses those two modules to
those two importers only, as ``ModuleNotFoundError``, which both treat as "not
installed"; any other importer (Ray Train in the fine-tuning processes, a user's code)
gets them as usual. It runs in the driver (importing ``serve``) and, as the job's
``worker_process_setup_hook``, in every Ray worker before it loads any task or actor."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# a module → the only importer refused it
REFUSED = {"pandas": "ray.serve._private.utils", "pyarrow": "ray._private.arrow_serialization"}
# the job's runtime environment: ``install`` in every worker before it loads anything
WORKER_ENV = {"worker_process_setup_hook": "serve.lean_workers.install"}


class _OptionalImportsRefused(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname in REFUSED and _importer() == REFUSED[fullname]:
            raise ModuleNotFoundError(f"{fullname} is kept out (serve/lean_workers.py)")
        return None  # someone else's: the next finder finds it


def _importer() -> str:
    """The module whose ``import`` statement is running (past importlib's frames)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
        frame = frame.f_back  # type: ignore[assignment]
    return str(frame.f_globals.get("__name__", "")) if frame is not None else ""


def install() -> None:
    """Idempotent: one finder per process."""
    if not any(isinstance(f, _OptionalImportsRefused) for f in sys.meta_path):
        sys.meta_path.insert(0, _OptionalImportsRefused())
