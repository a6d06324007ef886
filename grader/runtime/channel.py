"""The channel between the engine and its workers: plain data, never a pickle.

A message is ``MAGIC | u32 header length | JSON header | raw bytes of the arrays``: JSON-able data
in which numpy arrays and ``bytes`` may appear anywhere, travelling as raw bytes described in the
header by (dtype, shape, nbytes). :func:`decode` validates everything it reads (sizes, dtypes,
shapes, nesting) and raises :class:`MalformedMessage` otherwise: what a worker sends is untrusted.

numpy is imported only when an array is decoded, so that the engine's module (and the processes
it starts) can be imported before numpy: ``grade`` starts its workers first.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from grader import limits as L
from grader.errors import MalformedMessage

MAGIC = b"RLG1"
_DTYPES = frozenset({"|b1", "|u1", "|i1", "<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8"})
_MAX_BLOBS = 256
_MAX_NDIM = 8
_MAX_DEPTH = 16


def encode(kind: str, value: Any = None) -> bytes:
    """One message: ``MAGIC | u32 header length | JSON header | raw bytes of the arrays``.

    ``value`` is JSON-able data in which numpy arrays and ``bytes`` may appear anywhere; they
    travel as raw bytes, described in the header by (dtype, shape, nbytes).
    """
    np = sys.modules.get("numpy")  # not imported by this process: then no value is an array
    blobs: list[bytes] = []
    specs: list[list] = []

    def walk(v: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("message nested too deeply")
        if np is not None and isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            if a.dtype.str not in _DTYPES:
                raise ValueError(f"cannot send arrays of {a.dtype}")
            specs.append([a.dtype.str, list(a.shape), a.nbytes])
            blobs.append(a.tobytes())
            return {"$nd": len(specs) - 1}
        if isinstance(v, (bytes, bytearray, memoryview)):
            b = bytes(v)
            specs.append(["bytes", [len(b)], len(b)])
            blobs.append(b)
            return {"$nd": len(specs) - 1}
        if isinstance(v, dict):
            return {str(k): walk(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, depth + 1) for x in v]
        if np is not None and isinstance(v, np.generic):
            return v.item()
        return v

    header = json.dumps({"kind": kind, "value": walk(value), "blobs": specs}, separators=(",", ":")).encode()
    return b"".join([MAGIC, len(header).to_bytes(4, "little"), header, *blobs])


def decode(data: bytes, *, max_bytes: int) -> tuple[str, Any]:
    """Parse and validate one message from :func:`encode`; raises :class:`MalformedMessage`."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > max_bytes:
        raise MalformedMessage("message over the size limit")
    header, offset = _header(data)
    kind, specs = header["kind"], header["blobs"]
    if not isinstance(kind, str) or not 0 < len(kind) <= 32 or not isinstance(specs, list) or len(specs) > _MAX_BLOBS:
        raise MalformedMessage("bad kind or blob list")
    arrays: list[Any] = []
    for spec in specs:
        blob, offset = _blob(data, spec, offset)
        arrays.append(blob)
    if offset != len(data):
        raise MalformedMessage("trailing bytes after the blobs")
    return kind, _resolve(header["value"], arrays)


def _header(data: bytes | bytearray) -> tuple[dict[str, Any], int]:
    """The JSON header of a message and the offset of its first blob."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise MalformedMessage("not a grader message (bad magic)")
    hlen = int.from_bytes(data[4:8], "little")
    if hlen > L.CHANNEL_HEADER_BYTES or 8 + hlen > len(data):
        raise MalformedMessage("bad header length")
    try:
        header = json.loads(bytes(data[8 : 8 + hlen]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedMessage("the header is not JSON") from None
    if not isinstance(header, dict) or set(header) != {"kind", "value", "blobs"}:
        raise MalformedMessage("the header is not a grader header")
    return header, 8 + hlen


def _blob(data: bytes | bytearray, spec: Any, offset: int) -> tuple[Any, int]:
    """The blob ``spec`` describes at ``offset`` (bytes, or a copied numpy array) and the next offset."""
    if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str) and isinstance(spec[1], list)
            and type(spec[2]) is int and len(spec[1]) <= _MAX_NDIM
            and all(type(d) is int and 0 <= d < 2**40 for d in spec[1])):
        raise MalformedMessage("bad blob description")
    dtype, shape, nbytes = spec
    if dtype == "bytes":
        if len(shape) != 1 or shape[0] != nbytes:
            raise MalformedMessage("bad bytes blob")
        if offset + nbytes > len(data):
            raise MalformedMessage("blob size does not match its shape")
        return bytes(data[offset : offset + nbytes]), offset + nbytes
    if dtype not in _DTYPES:
        raise MalformedMessage(f"dtype {dtype[:20]!r} is not allowed")
    import numpy as np

    count = 1
    for d in shape:
        count *= d
    if count * np.dtype(dtype).itemsize != nbytes or offset + nbytes > len(data):
        raise MalformedMessage("blob size does not match its shape")
    array = np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape).copy()
    return array, offset + nbytes


def _resolve(v: Any, arrays: list[Any], depth: int = 0) -> Any:
    """The header's value with each ``{"$nd": i}`` replaced by blob ``i``."""
    if depth > _MAX_DEPTH:
        raise MalformedMessage("message nested too deeply")
    if isinstance(v, dict):
        if set(v) == {"$nd"}:
            i = v["$nd"]
            if type(i) is not int or not 0 <= i < len(arrays):
                raise MalformedMessage("bad blob reference")
            return arrays[i]
        return {k: _resolve(x, arrays, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_resolve(x, arrays, depth + 1) for x in v]
    return v
