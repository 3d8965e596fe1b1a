"""Where uploaded files' bytes live: any fsspec URL (a local folder by default,
``s3://``, ``gs://``, ``abfs://`` … in production, with that filesystem's package
installed). The database holds the metadata (``forge.files.store``).

fsspec's filesystems are blocking; each call runs in a worker thread, and writes are
gathered into blocks of ``BLOCK`` bytes first so that an upload of many small network
reads costs a few thread hops per MiB, not one per read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fsspec

BLOCK = 1 << 20


class FileWriter:
    """One object being written; ``commit`` closes it, ``abort`` removes what was written."""

    def __init__(self, fs: Any, path: str, handle: Any) -> None:
        self._fs = fs
        self._path = path
        self._handle = handle
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BLOCK:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            block = b"".join(self._pending)
            self._pending, self._pending_bytes = [], 0
            await asyncio.to_thread(self._handle.write, block)

    async def commit(self) -> None:
        await self._flush()
        await asyncio.to_thread(self._handle.close)

    async def abort(self) -> None:
        self._pending = []
        await asyncio.to_thread(self._handle.close)
        await asyncio.to_thread(_remove, self._fs, self._path)


def _remove(fs: Any, path: str) -> None:
    """Remove ``path`` if it is there (an aborted upload may not have created it)."""
    if fs.exists(path):
        fs.rm(path)


class FileStorage:
    """Objects named by a location relative to ``root`` (``<project>/<file id>``)."""

    def __init__(self, root: str) -> None:
        self._fs, self._root = fsspec.core.url_to_fs(root)
        self._fs.makedirs(self._root, exist_ok=True)

    def _path(self, location: str) -> str:
        return f"{self._root.rstrip('/')}/{location}"

    def url(self, location: str) -> str:
        """The object's full fsspec URL (``file:///…`` for a folder), for readers elsewhere
        in the cluster: a training run opens its data through it."""
        return str(self._fs.unstrip_protocol(self._path(location)))

    async def open_writer(self, location: str) -> FileWriter:
        path = self._path(location)
        parent = path.rsplit("/", 1)[0]
        await asyncio.to_thread(self._fs.makedirs, parent, True)
        handle = await asyncio.to_thread(self._fs.open, path, "wb")
        return FileWriter(self._fs, path, handle)

    async def read(self, location: str, block: int = BLOCK) -> AsyncIterator[bytes]:
        """The object's bytes, a block at a time (never the whole object in memory)."""
        handle = await asyncio.to_thread(self._fs.open, self._path(location), "rb")
        try:
            while data := await asyncio.to_thread(handle.read, block):
                yield data
        finally:
            await asyncio.to_thread(handle.close)

    async def read_range(self, location: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of the object (a batch's run of lines)."""
        return bytes(await asyncio.to_thread(self._fs.cat_file, self._path(location), start, end))

    async def delete(self, location: str) -> None:
        await asyncio.to_thread(_remove, self._fs, self._path(location))
