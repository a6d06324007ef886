"""What kind of file a student handed in, from its first bytes, and what to tell them when it is not ONNX.

A policy must be one ONNX file. Students often hand in something else: a PyTorch checkpoint
(``torch.save``), the notebook, a zip of their folder, the ``model.onnx.data`` sidecar of an
export with external data. Those are recognised from a few bytes at the start of the file, before
anything is parsed, so that the site can refuse them at once (without queueing them or counting
them against the upload limit) and the command line can say what went wrong.

* :func:`sniff_file_kind` -- ``head`` (the first :data:`HEAD_BYTES` bytes or fewer) -> a kind;
* :func:`describe_wrong_kind` -- a kind -> ``(message, hint)`` for the student;
* :func:`uses_external_data` -- whether ONNX bytes name an external-data file (a cheap byte scan).

The sniffing is deliberately lenient about ONNX: anything whose first bytes could start a
protobuf ``ModelProto`` is ``"onnx"`` and goes on to the real checks, which say precisely what is
wrong. Only files that are clearly something else get another kind.
"""

from __future__ import annotations

import re

HEAD_BYTES = 4096  # enough for every signature below (a zip's first entry name, a notebook's first keys)

ONNX = "onnx"
KINDS = ("onnx", "empty", "torch_zip", "torch_pickle", "pickle", "zip", "notebook", "json", "safetensors",
         "hdf5", "numpy", "gzip", "tflite", "text", "unknown")

# First tags of a ModelProto as protobuf writes them (field number << 3 | wire type), in field
# order: ir_version(1, varint), producer_name(2), producer_version(3), domain(4), model_version(5,
# varint), doc_string(6), graph(7), opset_import(8), metadata_props(14). Serializers write fields
# in number order, so a real export starts with 0x08 (ir_version).
_MODEL_FIRST_TAGS = {0x08: "varint", 0x12: "len", 0x1A: "len", 0x22: "len", 0x28: "varint", 0x32: "len", 0x3A: "len",
                     0x42: "len", 0x72: "len"}


def _varint(head: bytes, i: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while i < len(head) and shift < 64:
        b = head[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
    return None


def _looks_like_onnx(head: bytes) -> bool:
    wire = _MODEL_FIRST_TAGS.get(head[0])
    if wire is None:
        return False
    parsed = _varint(head, 1)
    if parsed is None:
        return len(head) < 11  # cut off inside the varint: give it the benefit of the doubt
    value, _ = parsed
    if head[0] == 0x08:
        return 1 <= value <= 1000  # an IR version (11 in 2025)
    return True if wire == "varint" else value > 0


def _zip_names(head: bytes) -> list[str]:
    """File names of the local headers found in ``head`` (a zip's first entries)."""
    names: list[str] = []
    i = 0
    while True:
        i = head.find(b"PK\x03\x04", i)
        if i < 0 or i + 30 > len(head):
            return names
        n = int.from_bytes(head[i + 26:i + 28], "little")
        names.append(head[i + 30:i + 30 + n].decode("utf-8", "replace"))
        i += 30 + n


def sniff_file_kind(head: bytes) -> str:
    """The kind of a file from its first bytes (pass at least the first 512; :data:`HEAD_BYTES` is plenty).

    One of :data:`KINDS`: ``onnx`` (could be an ONNX model: check it further), ``empty``,
    ``torch_zip`` (``torch.save``'s zip format, with a ``data.pkl`` entry), ``torch_pickle``
    (an old ``torch.save`` file or any pickle of protocol 2+: refuse), ``zip``, ``notebook``
    (a Jupyter ``.ipynb``), ``json``, ``safetensors``, ``hdf5`` (Keras ``.h5``), ``numpy`` (``.npy``),
    ``gzip``, ``tflite``, ``text`` (a script or other text) or ``unknown``.
    """
    head = bytes(head[:HEAD_BYTES])
    if not head:
        return "empty"
    for sniff in (_container_kind, _magic_kind, _json_kind):
        kind = sniff(head)
        if kind is not None:
            return kind
    if _looks_like_onnx(head):
        return ONNX
    return "text" if _is_text(head) else "unknown"


def _container_kind(head: bytes) -> str | None:
    """A zip (torch's or another) or a pickle (torch's old format or another)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        names = _zip_names(head)
        if any(n == "data.pkl" or n.endswith("/data.pkl") or n.endswith("/version") or n.endswith("/byteorder")
               or n.endswith("/.format_version") for n in names):
            return "torch_zip"
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        # torch.save(..., _use_new_zipfile_serialization=False) pickles a magic number first (protocol 2).
        return "torch_pickle" if head[1] == 2 and head[2:3] == b"\x8a" else "pickle"
    return None


_MAGIC = ((b"\x89HDF\r\n\x1a\n", "hdf5"), (b"\x93NUMPY", "numpy"), (b"\x1f\x8b", "gzip"))


def _magic_kind(head: bytes) -> str | None:
    """Formats known by their first bytes: HDF5, numpy, gzip, TFLite, safetensors."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"TFL3":
        return "tflite"
    if len(head) >= 10 and head[8:10] == b'{"':
        n = int.from_bytes(head[:8], "little")
        if 0 < n < 100_000_000:
            return "safetensors"
    return None


def _json_kind(head: bytes) -> str | None:
    """A Jupyter notebook or other JSON (after a BOM and white space)."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] not in (b"{", b"["):
        return None
    text = stripped[:HEAD_BYTES].decode("utf-8", "replace")
    if re.search(r'"(cells|nbformat|metadata)"\s*:', text) and ("nbformat" in text or '"cells"' in text):
        return "notebook"
    return "json"


def _is_text(head: bytes) -> bool:
    """Mostly printable UTF-8 (a multi-byte character cut at the end of a full head is allowed)."""
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        if len(head) < HEAD_BYTES:
            return False
        decoded = head[:-4].decode("utf-8", "ignore")
    return bool(decoded) and sum(ch.isprintable() or ch in "\r\n\t" for ch in decoded) >= 0.95 * len(decoded)


def _zeros(task_input_shape: str) -> str:
    dims = ", ".join(d for d in re.split(r"[^0-9]+", task_input_shape or "") if d)
    return f"torch.zeros(1, {dims})" if dims else "torch.zeros(1, *obs_shape)"


def export_advice(task_input_shape: str) -> str:
    """The one-line torch export we recommend, for a task whose state has ``task_input_shape`` (e.g. ``"8"``)."""
    return (f"torch.onnx.export(model.eval(), {_zeros(task_input_shape)}, 'model.onnx', "
            "external_data=False)")


def describe_wrong_kind(kind: str, task_input_shape: str) -> tuple[str, str]:
    """``(message, hint)`` for a file of ``kind`` handed in where an ONNX model was expected.

    ``task_input_shape`` is one state's shape without the batch axis, as text (``"8"`` or
    ``"5, 44, 40"``); it goes into the export command of the hint. For ``onnx`` the message is empty.
    """
    export = export_advice(task_input_shape)
    if kind == ONNX:
        return "", ""
    if kind == "empty":
        return "The file is empty.", "Choose your exported model.onnx and upload it again."
    if kind in ("torch_zip", "torch_pickle"):
        return ("This is a PyTorch checkpoint (a file written by torch.save), not an ONNX model. The grader does not "
                "run PyTorch code or unpickle files.",
                f"Export the policy network to ONNX and upload model.onnx: {export}")
    if kind == "pickle":
        return ("This is a Python pickle, not an ONNX model. The grader never unpickles files (a pickle can run any code).",
                f"Export the policy network to ONNX and upload model.onnx: {export}")
    if kind == "notebook":
        return ("This is a Jupyter notebook, not the exported model.",
                f"Run the export cell of the notebook and upload the model.onnx it writes ({export}).")
    if kind == "zip":
        return ("This is a zip archive. Upload the model file itself, not an archive.",
                "Unzip it and upload model.onnx (one file, with the weights inside it).")
    if kind == "json":
        return ("This is a JSON file, not an ONNX model.", f"Upload the model.onnx written by {export}")
    if kind == "safetensors":
        return ("This is a safetensors file (weights only, without the network), not an ONNX model.",
                f"Load the weights into your network and export it: {export}")
    if kind == "hdf5":
        return ("This is an HDF5 file (for example a Keras .h5 model), not an ONNX model.",
                "Convert it to ONNX (for example with tf2onnx) and upload the model.onnx.")
    if kind == "numpy":
        return ("This is a NumPy array file (.npy), not an ONNX model.", f"Export the whole policy network: {export}")
    if kind == "gzip":
        return ("This is a gzip-compressed file.", "Upload the uncompressed model.onnx.")
    if kind == "tflite":
        return ("This is a TensorFlow Lite model, not an ONNX model.",
                "Convert it to ONNX (for example with tf2onnx --tflite) and upload the model.onnx.")
    if kind == "text":
        return ("This is a text file (a script?), not an ONNX model.", f"Run your export and upload the model.onnx it writes: {export}")
    return ("This file is not an ONNX model (its first bytes match no model format). If it is model.onnx.data, it is "
            "the weights half of an export with external data.",
            f"Export again into one file and upload that model.onnx: {export}")


# An external-data reference in a TensorProto: external_data (field 13, tag 0x6a) holds key/value
# entries, and the key "location" is required; protobuf writes the entry as 0x6a LEN 0x0a 0x08
# "location" (LEN: one or two varint bytes). Requiring the 0x6a keeps a model's metadata_props
# (field 14) with a "location" key from matching.
EXTERNAL_DATA_MARKER = b"\x0a\x08location"
EXTERNAL_DATA_WINDOW = len(EXTERNAL_DATA_MARKER) + 3  # bytes to keep between chunks when scanning a stream


def uses_external_data(data) -> bool:
    """Whether ONNX bytes (bytes, bytearray or an mmap) reference external data, by a byte scan without parsing.

    A model whose tensors live in ``model.onnx.data`` carries ``{key: "location", value: ...}``
    entries in its tensors. The scan could in theory meet these bytes inside a weight; that only
    costs a refusal with advice to export again, never a wrong grade (the grader refuses external
    data anyway).
    """
    i = data.find(EXTERNAL_DATA_MARKER)
    while i >= 0:
        if (i >= 2 and data[i - 2] == 0x6A and not data[i - 1] & 0x80) or \
                (i >= 3 and data[i - 3] == 0x6A and data[i - 2] & 0x80 and not data[i - 1] & 0x80):
            return True
        i = data.find(EXTERNAL_DATA_MARKER, i + 1)
    return False


def external_data_message(task_input_shape: str) -> tuple[str, str]:
    """``(message, hint)`` for an ONNX model whose weights are in a separate file."""
    return ("This ONNX model keeps its weights in a separate file (model.onnx.data). The grader takes one file and never "
            "opens files that a model names.",
            f"Export again with the weights inside the model: {export_advice(task_input_shape)} "
            "(or onnx.save_model(model, 'model.onnx', save_as_external_data=False)), then upload model.onnx alone.")
