"""Reading request bodies without trusting them: small urlencoded forms, and the multipart upload
streamed to disk under a size cap (413 before the rest is read)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from grader.submission.filekind import EXTERNAL_DATA_WINDOW, HEAD_BYTES, uses_external_data

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FORM_FIELD_CAP = 4096  # bytes of a non-file form field
MULTIPART_OVERHEAD = 64 * 1024
SMALL_FORM_CAP = 16384


class TooLarge(Exception):
    pass


class BadForm(Exception):
    pass


class Upload:
    """What :func:`receive` read: the small fields, and of the file its SHA-256, size, first bytes
    and whether an external-data reference was seen (``uses_external_data``, scanned while streaming)."""

    def __init__(self, fields: dict[str, str], sha256: str, size: int, head: bytes, external: bool):
        self.fields, self.sha256, self.size, self.head, self.external = fields, sha256, size, head, external


async def small_form(request: Request) -> dict[str, str] | None:
    """A urlencoded form of at most 16 kB (login, logout, regrade)."""
    from urllib.parse import parse_qsl

    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > SMALL_FORM_CAP:
            return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return None


class _PartReader:
    """The multipart parser's callbacks: the part named ``file`` streamed to ``out`` (hashed, capped,
    its first bytes kept and scanned for external-data references), small fields kept in memory."""

    def __init__(self, out: BinaryIO, cap: int):
        self.out, self.cap = out, cap
        self.fields: dict[str, str] = {}
        self.digest = hashlib.sha256()
        self.headers: dict[str, bytes] = {}
        self.field, self.value = b"", b""
        self.name: str | None = None
        self.is_file = False
        self.buf = bytearray()
        self.size = self.files = self.parts = 0
        self.head = bytearray()
        self.tail = b""
        self.external = False

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > 20:
            raise BadForm("too many form fields")
        self.headers, self.name, self.is_file, self.buf = {}, None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field.decode("latin-1").lower()] = self.value
        self.field, self.value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self.name = name
        self.is_file = name == "file"
        if self.is_file:
            self.files += 1
            if self.files > 1:
                raise BadForm("send exactly one file")
        # The client's file name (params[b'filename']) is deliberately ignored.

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.is_file:
            self._file_data(chunk)
            return
        self.buf += chunk
        if len(self.buf) > FORM_FIELD_CAP:
            raise BadForm("a form field is too long")

    def _file_data(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise TooLarge()
        self.digest.update(chunk)
        self.out.write(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        if not self.external:
            window = self.tail + chunk
            self.external = uses_external_data(window)
            self.tail = window[-EXTERNAL_DATA_WINDOW:]

    def on_part_end(self) -> None:
        if not self.is_file and self.name:
            self.fields[self.name] = bytes(self.buf).decode("utf-8", "replace")


async def receive(request: Request, boundary: bytes, tmp: Path, cap: int) -> Upload:
    """Stream a multipart body: the part named ``file`` goes to ``tmp`` (at most ``cap`` bytes,
    else :class:`TooLarge` before the rest is read), small fields are returned."""
    out = open(tmp, "wb")  # noqa: SIM115 - closed below
    os.chmod(tmp, 0o600)
    reader = _PartReader(out, cap)
    parser = MultipartParser(boundary, reader.callbacks())
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > cap + MULTIPART_OVERHEAD:
                raise TooLarge()
            try:
                parser.write(chunk)
            except (TooLarge, BadForm):
                raise
            except Exception as exc:  # noqa: BLE001 - malformed multipart
                raise BadForm(f"malformed multipart body ({type(exc).__name__})") from None
        parser.finalize()
    finally:
        out.close()
    if reader.files == 0:
        raise BadForm("no 'file' field in the form")
    return Upload(reader.fields, reader.digest.hexdigest(), reader.size, bytes(reader.head), reader.external)
