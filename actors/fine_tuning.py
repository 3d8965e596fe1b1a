"""The fine-tuning job manager actor: one per cluster, created when the first
fine-tuning call comes (or when a gateway starts and finds unfinished jobs), so that an
install that never fine-tunes keeps a process less.

A Ray shell over ``forge.finetune.manager.JobManager``, whose methods it serves as they
are (clients: ``actors.remote.remote(handle, JobManager)``); the launcher comes from the
composition root (``serve``), which alone may import ``train``. The database holds the
jobs: a restart (``max_restarts``) recovers the ones that were running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ray

from forge.adapters import AdapterRegistry
from forge.config import PlatformConfig
from forge.credentials.sealing import Keyring
from forge.db.engine import make_engine, make_sessionmaker
from forge.files.store import FileStore
from forge.finetune.manager import JobManager
from forge.finetune.runs import Launcher
from forge.finetune.store import JobStore
from forge.settings import Settings
from forge.webhooks.store import WebhookStore


# enable_task_events is missing from Ray's typing overloads, not from Ray.
@ray.remote(  # type: ignore[call-overload]
    max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False
)
class FineTuningActor(JobManager):
    def __init__(self, config: PlatformConfig, launcher: Launcher) -> None:
        settings = Settings()
        self._engine = make_engine(settings.resolved_database_url())
        sessions = make_sessionmaker(self._engine)
        webhooks = WebhookStore(sessions, Keyring.of(settings))
        root = config.fine_tuning.storage or str(settings.data_dir / "fine_tuning")
        super().__init__(
            JobStore(sessions, webhooks.emit),
            FileStore.on(sessions, config.files, settings.data_dir),
            AdapterRegistry(sessions),
            config,
            launcher,
            Path(root).resolve(),
        )
        # an async actor's __init__ runs on its event loop: the queue watch starts here,
        # after every restart too
        self._watch: Any = asyncio.get_running_loop().create_task(self.serve_forever())
