"""The bytes of every graded submission, kept by ``grade batch`` in ``OUT/submissions/<student>/<digest>/``.

A later download replaces the class folder; ``grade final`` still grades any submission of the term
(the last or the best) from here. One folder per digest, written once (a temporary folder renamed
into place): the files by role (``0.bin`` ...) and ``submission.json`` (names, label, notes).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from grader.submission.bundle import NamedBytes, Submission

ARCHIVE = "submissions"
_MANIFEST = "submission.json"


def archive_dir(out: Path, student: str, digest: str) -> Path:
    return out / ARCHIVE / student / digest[:32]


def archive_submission(out: Path, sub: Submission, digest: str) -> None:
    """Keep a graded submission's bytes (once per digest) so that ``grade final`` can grade it again
    after the class folder has been replaced by a later download."""
    target = archive_dir(out, sub.student, digest)
    if (target / _MANIFEST).is_file():
        return
    tmp = target.parent / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    files = []
    items = [("model", sub.model), ("notebook", sub.notebook), *(("weights", w) for w in sub.weights)]
    for i, (role, item) in enumerate(items):
        if item is None:
            continue
        (tmp / f"{i}.bin").write_bytes(item.data)
        files.append({"role": role, "name": item.name, "file": f"{i}.bin"})
    manifest = {"label": sub.label, "notes": list(sub.notes), "problems": [list(p) for p in sub.problems],
                "files": files}
    (tmp / _MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
    try:
        os.rename(tmp, target)
    except OSError:  # kept meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)


def load_archived(out: Path, student: str, digest: str) -> Submission | None:
    """The archived submission, or None when it was not kept."""
    folder = archive_dir(out, student, digest)
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    roles: dict[str, Any] = {"model": None, "notebook": None, "weights": []}
    for f in manifest["files"]:
        item = NamedBytes(f["name"], (folder / f["file"]).read_bytes())
        if f["role"] == "weights":
            roles["weights"].append(item)
        else:
            roles[f["role"]] = item
    return Submission(student=student, label=manifest["label"], model=roles["model"], notebook=roles["notebook"],
                      weights=tuple(roles["weights"]), notes=tuple(manifest["notes"]),
                      problems=tuple(tuple(p) for p in manifest["problems"]))
