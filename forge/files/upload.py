"""`POST /v1/files`'s body, read as it arrives: a multipart form whose file part goes
to storage chunk by chunk (hashed, counted and validated on the way), never whole in
memory, and never to a temporary file first (Starlette's form parser spools big parts to
disk and would make every upload two writes).

The form is OpenAI's: ``purpose`` and ``file`` (the SDKs send ``purpose`` first; if a
client sends the file first, its validation reads it back from storage at the end).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from forge.errors import InvalidRequest, PayloadTooLarge
from forge.files.storage import FileWriter
from forge.files.validation import FileCheck, JsonlValidator, Purpose

PURPOSES: tuple[Purpose, ...] = ("fine-tune", "batch")
MAX_FIELD_BYTES = 1024
MAX_FILENAME = 255


def bad_form(message: str, param: str = "file") -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_request")


def purpose_of(value: str | None) -> Purpose:
    if value is None:
        raise bad_form("Missing required parameter: 'purpose'.", "purpose")
    for purpose in PURPOSES:
        if value == purpose:
            return purpose
    raise bad_form(
        f"Invalid 'purpose': {value[:40]!r}; this platform accepts {', '.join(PURPOSES)}.",
        "purpose",
    )


@dataclass
class ReceivedFile:
    """What the upload held: the file part's name, size and hash, the form's text
    fields, and the validation verdict (None: the purpose came after the file)."""

    filename: str
    size: int
    sha256: str
    fields: dict[str, str]
    check: FileCheck | None


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    text: bytearray = field(default_factory=bytearray)


class _Events:
    """python-multipart's callbacks, queued: they are synchronous, the writes are not."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, Any]] = []
        self._field = b""
        self._value = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": lambda: self.queue.append(("begin", None)),
            "on_header_field": self._on_field,
            "on_header_value": self._on_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": lambda: self.queue.append(("headers", None)),
            "on_part_data": lambda data, start, end: self.queue.append(
                ("data", bytes(data[start:end]))
            ),
            "on_part_end": lambda: self.queue.append(("end", None)),
        }

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self.queue.append(("header", (self._field.lower(), self._value)))
        self._field = self._value = b""


class UploadReader:
    """Reads one upload; ``open_writer`` is called once, when the file part begins."""

    def __init__(
        self,
        content_type: str,
        open_writer: Callable[[], Awaitable[FileWriter]],
        *,
        max_bytes: int,
    ) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise bad_form("The body must be multipart/form-data with 'purpose' and 'file'.")
        self._events = _Events()
        self._parser = MultipartParser(boundary, self._events.callbacks())
        self._open_writer = open_writer
        self._max_bytes = max_bytes
        self._part: _Part | None = None
        self._fields: dict[str, str] = {}
        self._writer: FileWriter | None = None
        self._filename: str | None = None
        self._size = 0
        self._hash = hashlib.sha256()
        self._validator: JsonlValidator | None = None

    async def read(self, body: AsyncIterator[bytes]) -> ReceivedFile:
        """The whole upload, stored; raises a 400/413 (after removing what was written)
        for a malformed form or one past ``max_bytes``."""
        try:
            async for chunk in body:
                try:
                    self._parser.write(chunk)
                except Exception as exc:  # python-multipart's parse errors
                    raise bad_form(f"The multipart body is malformed: {exc}.") from None
                await self._drain_events()
            self._parser.finalize()
            await self._drain_events()
            if self._writer is None or self._filename is None:
                raise bad_form("Missing required parameter: 'file'.")
            await self._writer.commit()
        except BaseException:
            if self._writer is not None:
                await self._writer.abort()
            raise
        check = self._validator.finish() if self._validator is not None else None
        return ReceivedFile(self._filename, self._size, self._hash.hexdigest(), self._fields, check)

    async def _drain_events(self) -> None:
        events, self._events.queue = self._events.queue, []
        for kind, value in events:
            if kind == "begin":
                self._part = _Part()
            elif self._part is None:
                continue
            elif kind == "header":
                self._part.headers[value[0]] = value[1]
            elif kind == "headers":
                await self._start_part(self._part)
            elif kind == "data":
                await self._part_data(self._part, value)
            elif kind == "end":
                if self._part.filename is None:
                    self._fields[self._part.name] = self._part.text.decode("utf-8", "replace")
                self._part = None

    async def _start_part(self, part: _Part) -> None:
        disposition = part.headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            return
        if part.name != "file":
            raise bad_form(f"Unexpected file field {part.name[:40]!r}; send it as 'file'.")
        if self._writer is not None:
            raise bad_form("Send one file per upload.")
        name = filename.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
        if not name or len(name) > MAX_FILENAME:
            raise bad_form(f"The file's name must be 1 to {MAX_FILENAME} characters.")
        part.filename = self._filename = name
        purpose = self._fields.get("purpose")
        if purpose is not None:
            self._validator = JsonlValidator(purpose_of(purpose))
        self._writer = await self._open_writer()

    async def _part_data(self, part: _Part, data: bytes) -> None:
        if part.filename is None:
            if len(part.text) + len(data) > MAX_FIELD_BYTES:
                raise bad_form(f"The form field {part.name[:40]!r} is too long.", part.name)
            part.text += data
            return
        self._size += len(data)
        if self._size > self._max_bytes:
            raise PayloadTooLarge(
                f"The file is larger than this platform's limit of {self._max_bytes} bytes.",
                param="file",
            )
        self._hash.update(data)
        if self._validator is not None:
            self._validator.feed(data)
        assert self._writer is not None
        await self._writer.write(data)
