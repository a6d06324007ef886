"""Write the example class: ``python examples/make_class.py`` (re-creates ``examples/class/``).

A handful of LunarLander submissions an instructor meets in a real class, built from the shipped
reference models so that nothing is downloaded or trained:

| student | hands in | what the grader says |
|---|---|---|
| ``ada`` | the strong reference (PPO) as ``model.onnx`` | graded, full episode points |
| ``boris`` | the course notebook's agent | graded, partial points |
| ``chen`` | a truncated file (an upload that broke off) | invalid: "protobuf parse failed", re-export |
| ``dana`` | a copy of ada's file | graded, flagged *identical* with ada |
| ``emil`` | ``homework.ipynb`` and ``model.onnx`` in one folder | one submission: the model's episodes (the shipped rubric grades the model only; the notebook is noted, not graded) |
| ``fatima.ipynb`` | a notebook only (flat file) | invalid: the required model is not handed in |
| ``gleb`` | torch's default export: ``model.onnx`` + ``model.onnx.data`` | graded: the sidecar is read and inlined |
| ``hana`` | ``policy.pt``, a PyTorch checkpoint, renamed ``model.onnx`` | invalid: "a PyTorch checkpoint", how to export |

plus ``roster.csv`` beside the folder (with a student who handed in nothing, and Cyrillic names).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "reference" / "models"
CLASS = HERE / "class"

LUNAR_NOTEBOOK_CELLS = [
    "import numpy as np\nimport gymnasium as gym\nimport keras\nfrom keras import layers\n",
    "num_inputs = 8\nnum_actions = 4\nnum_hidden = 128\n",
    "inputs = layers.Input(shape=(num_inputs,))\ncommon = layers.Dense(num_hidden, activation='relu')(inputs)\n"
    "action = layers.Dense(num_actions, activation='softmax')(common)\ncritic = layers.Dense(1)(common)\n"
    "model = keras.Model(inputs=inputs, outputs=[action, critic])\nactor_model = keras.Model(inputs=inputs, outputs=action)\n",
    "env = gym.make('LunarLander-v3')\nfor episode in range(1000):\n    pass  # training: never run by the grader\n",
    "actor_model.export('model.onnx', format='onnx')\n",
]


def notebook(cells: list[str]) -> str:
    return json.dumps({
        "cells": [{"cell_type": "markdown", "id": "m0", "metadata": {}, "source": ["# LunarLander: actor-critic\n"]}]
        + [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
            "source": c.splitlines(keepends=True)} for i, c in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}, indent=1)


def torch_style_checkpoint() -> bytes:
    """The shape of a ``torch.save`` file (a zip holding ``archive/data.pkl``), written without torch."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # fixed timestamps: the same bytes at every run
        z.writestr(zipfile.ZipInfo("archive/data.pkl", date_time=(1980, 1, 1, 0, 0, 0)), b"\x80\x02}q\x00.")
        z.writestr(zipfile.ZipInfo("archive/version", date_time=(1980, 1, 1, 0, 0, 0)), b"3\n")
    return buf.getvalue()


def split_external(model_bytes: bytes, sidecar: str) -> tuple[bytes, bytes]:
    """The model with its initializers moved into ``sidecar`` (the layout torch writes by default)."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    blob = bytearray()
    for t in proto.graph.initializer:
        raw = t.raw_data or onnx.numpy_helper.to_array(t).tobytes()
        offset = len(blob)
        blob += raw
        for field in ("float_data", "int64_data", "int32_data", "double_data"):
            t.ClearField(field)
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", sidecar), ("offset", str(offset)), ("length", str(len(raw)))):
            e = t.external_data.add()
            e.key, e.value = k, v
    return proto.SerializeToString(), bytes(blob)


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def main() -> None:
    if CLASS.exists():
        shutil.rmtree(CLASS)
    strong = (MODELS / "lunarlander_improved.onnx").read_bytes()
    weak = (MODELS / "lunarlander_seed.onnx").read_bytes()
    write(CLASS / "ada" / "model.onnx", strong)
    write(CLASS / "boris" / "model.onnx", weak)
    write(CLASS / "chen" / "model.onnx", strong[: len(strong) // 3])
    write(CLASS / "dana" / "model.onnx", strong)
    write(CLASS / "emil" / "homework.ipynb", notebook(LUNAR_NOTEBOOK_CELLS))
    write(CLASS / "emil" / "model.onnx", weak)
    write(CLASS / "fatima.ipynb", notebook(LUNAR_NOTEBOOK_CELLS[:3]))
    model, data = split_external(strong, "model.onnx.data")
    write(CLASS / "gleb" / "model.onnx", model)
    write(CLASS / "gleb" / "model.onnx.data", data)
    write(CLASS / "hana" / "model.onnx", torch_style_checkpoint())
    write(HERE / "roster.csv", "id,name,email\r\n" + "".join(f"{sid},{name},{sid}@example.edu\r\n" for sid, name in [
        ("ada", "Ada Lovelace"), ("boris", "Борис Петров"), ("chen", "Chen Wei"), ("dana", "Dana Scully"),
        ("emil", "Emil Artin"), ("fatima", "Fatima al-Fihri"), ("gleb", "Глеб Иванов"), ("hana", "Hana Novak"),
        ("ivan", "Иван Сидоров")]))
    print(f"wrote {CLASS} and {HERE / 'roster.csv'}")


if __name__ == "__main__":
    main()
