"""torch's external-data sidecar: read only when it is one of the same student's files.

The course's real shapes: torch 2.13's default export (``model.onnx`` + ``model.onnx.data``)
downloaded from Canvas (each file with its own attachment id) and from Moodle without folders
(both files prefixed). The attacks: a model whose external data names a classmate's file, the
roster, ``../x``, a link, a file in another student's folder. Each is refused with a specific
message, and the named file is never opened (an audit hook records every open).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import onnx
import onnx_fixtures as F
import pytest

from grader.classroom.classdir import scan_class
from grader.cli import main
from grader.submission.bundle import gather, read_bundle

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _opened.append(args[0].decode() if isinstance(args[0], bytes) else str(args[0]))  # as asked: links unresolved


sys.addaudithook(_audit)


def _read_recording(bundle):
    """read_bundle(bundle) and the paths it opened."""
    global _opened
    _opened = []
    try:
        return read_bundle(bundle), list(_opened)
    finally:
        _opened = None


@pytest.fixture(scope="module")
def torch_export(tmp_path_factory) -> tuple[bytes, bytes]:
    """torch 2.13's default two-file export of a LunarLander-shaped policy: (model.onnx, model.onnx.data)."""
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    torch.onnx.export(net, (torch.zeros(1, 8),), str(folder / "model.onnx"), external_data=True)
    model, data = (folder / "model.onnx").read_bytes(), (folder / "model.onnx.data").read_bytes()
    assert b"model.onnx.data" in model and len(data) >= 8 * 64 * 4  # the shape this file is about
    return model, data


def _pointing_at(model: bytes, location: str) -> bytes:
    """``model`` (a torch export) with every external tensor's location changed to ``location``."""
    proto = onnx.load_from_string(model)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    return proto.SerializeToString()


CANVAS = {"model": "doejohn_1236_56791_model.onnx", "data": "doejohn_1236_56792_model.onnx.data"}
MOODLE = {"model": "John Doe_1234567_assignsubmission_file_model.onnx",
          "data": "John Doe_1234567_assignsubmission_file_model.onnx.data"}


@pytest.mark.parametrize("names,key", [(CANVAS, "canvas-1236"), (MOODLE, "moodle-1234567")], ids=["canvas", "moodle"])
def test_a_lms_renamed_sidecar_travels_with_its_model(tmp_path, torch_export, names, key):
    model, data = torch_export
    (tmp_path / names["model"]).write_bytes(model)
    (tmp_path / names["data"]).write_bytes(data)
    cf = scan_class(tmp_path)
    (bundle,) = cf.bundles
    assert bundle.student == key and bundle.model.name == names["model"]
    sub, opened = _read_recording(bundle)
    assert not sub.problems, sub.problems
    assert b"model.onnx.data" not in sub.model.data and data[:64] in sub.model.data  # inlined
    assert str(tmp_path / names["data"]) in opened


def test_canvas_flat_download_graded_and_a_classmate_pointing_at_it_refused(tmp_path, torch_export):
    """End to end through `grade batch`: John's renamed two-file export earns its points; Mallory's
    graph-only model whose weights name John's file is invalid, and her result holds none of his bytes."""
    model, data = torch_export
    d = tmp_path / "class"
    d.mkdir()
    (d / CANVAS["model"]).write_bytes(model)
    (d / CANVAS["data"]).write_bytes(data)
    (d / "evilmallory_1240_56800_model.onnx").write_bytes(_pointing_at(model, CANVAS["data"]))
    (d / "evileve_1241_56801_model.onnx").write_bytes(_pointing_at(model, "model.onnx.data"))  # John's original name
    from benchmarks import classgen as g

    rubric = g.lunarlander_rubric(tmp_path / "r.toml", episodes=2)
    out = tmp_path / "out"
    assert main(["batch", str(d), "--rubric", str(rubric), "--out", str(out), "--no-video", "--no-progress",
                 "--workers", "1"]) == 0
    rows = {r["student_id"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert rows["canvas-1236"]["status"] == "graded", rows["canvas-1236"]
    for thief in ("canvas-1240", "canvas-1241"):
        assert rows[thief]["status"] == "invalid", rows[thief]
        assert "not one of this submission's files" in rows[thief]["note"]
        (result,) = (out / "reports" / thief).glob("*/result.json")
        text = json.loads(result.read_text())
        assert text["status"] == "invalid" and text["episodes"] == [] and text["score"] == 0


def _external(path: Path, location: str) -> Path:
    F.external_data(path, location)  # a 8x4 weight (128 bytes) said to live in `location`
    return path


ATTACKS = {
    "classmate_flat": ("alice.onnx", "bob.onnx", "not one of this submission's files"),
    "roster": ("alice.onnx", "roster.csv", "not one of this submission's files"),
    "parent": ("alice.onnx", "../secret.bin", "not a file name beside the model"),
    "other_folder": ("mallory/model.onnx", "../bob/model.onnx", "not a file name beside the model"),
    "absolute": ("alice.onnx", "/etc/passwd", "not a file name beside the model"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_model_naming_another_file_is_refused_unread(tmp_path, attack):
    model_name, location, message = ATTACKS[attack]
    d = tmp_path / "class"
    (d / "bob").mkdir(parents=True)
    (d / "mallory").mkdir()
    victims = [d / "bob.onnx", d / "roster.csv", tmp_path / "secret.bin", d / "bob" / "model.onnx"]
    for v in victims:
        v.write_bytes(b"\x01" * 4096)
    _external(d / model_name, location)
    bundle, _ = gather(d / model_name)
    sub, opened = _read_recording(bundle)
    assert sub.model is None and sub.problems[0][0] == "no_external_data"
    assert message in sub.problems[0][1], sub.problems
    assert not set(opened) & {str(v) for v in victims}, opened


def test_a_flat_class_folder_keeps_each_students_sidecar_to_themselves(tmp_path):
    """alice.onnx naming bob's sidecar by its file name, in a flat class folder: refused; bob's own is read."""
    d = tmp_path / "class"
    d.mkdir()
    _external(d / "bob.onnx", "bob.onnx.data")
    (d / "bob.onnx.data").write_bytes(b"\0" * 128)
    _external(d / "alice.onnx", "bob.onnx.data")
    bundles = {b.student: b for b in scan_class(d).bundles}
    bob, _ = _read_recording(bundles["bob"])
    assert not bob.problems and bob.model is not None
    alice, opened = _read_recording(bundles["alice"])
    assert "not one of this submission's files" in alice.problems[0][1]
    assert str(d / "bob.onnx.data") not in opened


def test_a_link_as_sidecar_is_refused_unread(tmp_path):
    """The student's own sidecar name, but a link (to a classmate's model): refused, the target never opened."""
    d = tmp_path / "class"
    d.mkdir()
    (d / "bob.onnx").write_bytes(b"\x02" * 4096)
    _external(d / "alice.onnx", "alice.onnx.data")
    (d / "alice.onnx.data").symlink_to(d / "bob.onnx")
    bundle, _ = gather(d / "alice.onnx")
    sub, opened = _read_recording(bundle)
    assert "a link or not a regular file" in sub.problems[0][1], sub.problems
    assert str(d / "bob.onnx") not in opened
    # in a class folder, the link is not the student's file at all
    (alice,) = [b for b in scan_class(d).bundles if b.student == "alice"]
    sub, opened = _read_recording(alice)
    assert "not one of this submission's files" in sub.problems[0][1]
    assert str(d / "bob.onnx") not in opened


def test_in_a_students_own_folder_any_own_file_is_the_sidecar(tmp_path, torch_export):
    model, data = torch_export
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "policy.onnx").write_bytes(model)
    (folder / "model.onnx.data").write_bytes(data)
    bundle, _ = gather(folder)
    sub, _ = _read_recording(bundle)
    assert not sub.problems and data[:64] in sub.model.data
