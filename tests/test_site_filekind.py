"""grader.submission.filekind: what a handed-in file is, from its first bytes, and the advice for each kind."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
from site_helpers import lunarlander_model_bytes

from grader.submission.filekind import (  # noqa: E402
    HEAD_BYTES,
    KINDS,
    describe_wrong_kind,
    export_advice,
    external_data_message,
    sniff_file_kind,
    uses_external_data,
)

REPO = Path(__file__).resolve().parent.parent


def test_onnx_models_are_onnx():
    for path in sorted((REPO / "reference" / "models").glob("*.onnx")):
        data = path.read_bytes()
        assert sniff_file_kind(data[:HEAD_BYTES]) == "onnx", path.name
        assert not uses_external_data(data)
    assert sniff_file_kind(lunarlander_model_bytes(0)) == "onnx"
    # lenient: a file that merely starts like a ModelProto goes on to the real checks
    assert sniff_file_kind(b"\x08\x07not an onnx model" * 50) == "onnx"


def test_torch_checkpoints():
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(8, 4)
    for legacy, kind in ((False, "torch_zip"), (True, "torch_pickle")):
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf, _use_new_zipfile_serialization=not legacy)
        assert sniff_file_kind(buf.getvalue()[:HEAD_BYTES]) == kind
    full = io.BytesIO()
    torch.save(net, full)  # a whole pickled module
    assert sniff_file_kind(full.getvalue()[:512]) == "torch_zip"


def test_other_kinds():
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model.onnx", b"\x08\x08")
    cases = {
        b"": "empty",
        archive.getvalue(): "zip",
        pickle.dumps({"a": 1}): "pickle",
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4}, indent=1).encode(): "notebook",
        b'\xef\xbb\xbf{"nbformat": 4, "cells": []}': "notebook",
        b'{"weights": [1, 2]}': "json",
        b"\x89HDF\r\n\x1a\n" + b"\0" * 100: "hdf5",
        b"\x93NUMPY\x01\x00" + b"\0" * 100: "numpy",
        b"\x1f\x8b\x08\x00" + b"\0" * 100: "gzip",
        b"\x1c\x00\x00\x00TFL3" + b"\0" * 100: "tflite",
        (20).to_bytes(8, "little") + b'{"w":{"dtype":"F32"}}': "safetensors",
        b"import torch\nmodel = Net()\n": "text",
        b"\0" * 100: "unknown",
        bytes(range(256)) * 4: "unknown",
    }
    for head, kind in cases.items():
        assert sniff_file_kind(head) == kind, (head[:20], kind)
    assert sniff_file_kind(b"\xff" * 64) == "unknown"


def test_every_kind_has_a_message_with_a_fix():
    for kind in KINDS:
        message, hint = describe_wrong_kind(kind, "8")
        if kind == "onnx":
            assert (message, hint) == ("", "")
            continue
        assert message and hint, kind
    message, hint = describe_wrong_kind("torch_zip", "8")
    assert "PyTorch checkpoint" in message
    assert "torch.onnx.export(model.eval(), torch.zeros(1, 8), 'model.onnx', external_data=False, dynamo=False)" in hint
    assert "torch.zeros(1, 5, 44, 40)" in export_advice("5, 44, 40")
    assert "model.onnx" in describe_wrong_kind("notebook", "8")[1]
    message, hint = external_data_message("8")
    assert "separate file" in message and "external_data=False" in hint


def test_external_data_is_found_by_a_byte_scan():
    onnx = pytest.importorskip("onnx")
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load_from_string(lunarlander_model_bytes(1))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    data = model.SerializeToString()
    assert sniff_file_kind(data) == "onnx" and uses_external_data(data)
    assert not uses_external_data(lunarlander_model_bytes(1))


def test_a_metadata_key_named_location_is_not_external_data():
    onnx = pytest.importorskip("onnx")

    model = onnx.load_from_string(lunarlander_model_bytes(2))
    onnx.helper.set_model_props(model, {"location": "Lisbon"})
    data = model.SerializeToString()
    assert b"\x0a\x08location" in data and not uses_external_data(data)
    # a long external-data path (two-byte entry length) is still found
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="x" * 200 + ".data", size_threshold=0)
    assert uses_external_data(model.SerializeToString())
