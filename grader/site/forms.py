"""Reading request bodies without trusting them: small urlencoded forms, and the multipart upload
streamed to disk under a size cap (413 before the rest is read)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from grader.submission.filekind import EXTERNAL_DATA_WINDOW, HEAD_BYTES, uses_external_data

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


async def receive(request: Request, boundary: bytes, tmp: Path, cap: int) -> Upload:
    """Stream a multipart body: the part named ``file`` goes to ``tmp`` (at most ``cap`` bytes,
    else :class:`TooLarge` before the rest is read), small fields are returned."""
    fields: dict[str, str] = {}
    digest = hashlib.sha256()
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "name": None, "is_file": False, "buf": bytearray(),
                             "size": 0, "files": 0, "parts": 0, "head": bytearray(), "tail": b"", "external": False}
    out = open(tmp, "wb")  # noqa: SIM115 - closed below
    os.chmod(tmp, 0o600)

    def on_part_begin():
        state["parts"] += 1
        if state["parts"] > 20:
            raise BadForm("too many form fields")
        state["headers"], state["name"], state["is_file"], state["buf"] = {}, None, False, bytearray()

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, params = parse_options_header(state["headers"].get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        state["is_file"] = name == "file"
        if state["is_file"]:
            state["files"] += 1
            if state["files"] > 1:
                raise BadForm("send exactly one file")
        # The client's file name (params[b'filename']) is deliberately ignored.

    def on_part_data(data, start, end):
        chunk = data[start:end]
        if state["is_file"]:
            state["size"] += len(chunk)
            if state["size"] > cap:
                raise TooLarge()
            digest.update(chunk)
            out.write(chunk)
            if len(state["head"]) < HEAD_BYTES:
                state["head"] += chunk[:HEAD_BYTES - len(state["head"])]
            if not state["external"]:
                window = state["tail"] + chunk
                state["external"] = uses_external_data(window)
                state["tail"] = window[-EXTERNAL_DATA_WINDOW:]
        else:
            state["buf"] += chunk
            if len(state["buf"]) > FORM_FIELD_CAP:
                raise BadForm("a form field is too long")

    def on_part_end():
        if not state["is_file"] and state["name"]:
            fields[state["name"]] = bytes(state["buf"]).decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
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
    if state["files"] == 0:
        raise BadForm("no 'file' field in the form")
    return Upload(fields, digest.hexdigest(), state["size"], bytes(state["head"]), state["external"])
