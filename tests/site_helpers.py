"""Helpers shared by the site tests: tiny models, a 3-episode rubric, tokens, a real server."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np

GRADING_SEEDS = [977101, 977102, 977103]  # distinctive numbers, easy to look for in pages
PUBLIC_SEEDS = [0, 1, 2]


def lunarlander_model_bytes(seed: int = 0, hidden: int = 16) -> bytes:
    """A random LunarLander MLP: float32 [b, 8] -> [b, 4], built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, hidden)).astype(np.float32), "W1"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (hidden, 4)).astype(np.float32), "W2"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["obs", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "W2", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="site-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_rubric(path: Path, *, show_names: bool = False, episodes: int = 3) -> Path:
    path.write_text(f"""
id = "site-test"
task = "lunarlander"
title = "LunarLander site test"
episodes = {episodes}
selfcheck_episodes = 3
show_names = {'true' if show_names else 'false'}

[seeds]
public = "{PUBLIC_SEEDS[0]}-{PUBLIC_SEEDS[-1]}"
grading = "{GRADING_SEEDS[0]}-{GRADING_SEEDS[-1]}"

[scoring]
statistic = "mean"
zero = -800.0
full = 200.0
points = 10

[[bands]]
name = "solved"
min_fraction = 1.0

[[bands]]
name = "trying"
min_fraction = 0.0
""")
    return path


def make_tokens(db: Path, students: list[tuple[str, str]]) -> tuple[dict[str, str], str]:
    from grader.site.store import SiteStore

    store = SiteStore(db)
    tokens = {sid: store.upsert_student(sid, name) for sid, name in students}
    return tokens, store.new_admin_token()


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(config, *, timeout: float = 30.0):
    """A real uvicorn server on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    from grader.site.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning",
                                           limit_concurrency=200, backlog=256))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value (synchronisation on state, not on time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def lunar_rubric_with_notebook(tmp_path: Path, *, use: str = "optional") -> Path:
    """The shipped LunarLander rubric with its Keras notebook graded too (``[parts] notebook = use``
    and the notebook checks' points), beside a copy of its baselines file."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "baselines").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(repo / "rubrics" / "baselines" / "lunarlander.json", tmp_path / "baselines" / "lunarlander.json")
    text = (repo / "rubrics" / "lunarlander.toml").read_text()
    text = text.replace('"../reference/', f'"{repo}/reference/')
    text = text.replace('[parts]\nmodel = "required"', f'[parts]\nmodel = "required"\nnotebook = "{use}"')
    assert f'notebook = "{use}"' in text
    text += "\n[notebook.points]\ncells_parse = 1\nactor_input = 1\nactor_output = 2\n"
    path = tmp_path / "lunarlander-notebook.toml"
    path.write_text(text)
    return path



def grade_on_the_site(rubric: Path, tmp: Path, name: str, data: bytes):
    """Upload ``data`` as ``name`` for one student of a private site (an in-process TestClient) and
    return the finished attempt's GradeResult, or ``(status code, text)`` when the upload is refused."""
    import warnings

    from grader.classroom.gradebook import Gradebook
    from grader.scoring.rubric import load_rubric
    from grader.site.app import SiteConfig, create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    db = tmp / "site.sqlite"
    tokens, _ = make_tokens(db, [("alice", "Alice")])
    config = SiteConfig(db=db, rubric=load_rubric(rubric), data_dir=tmp / "site", workers=1, video=False, poll_s=0.2)
    with TestClient(create_app(config)) as client:
        r = client.post("/upload", headers={"Authorization": f"Bearer {tokens['alice']}"},
                        files={"file": (name, data, "application/octet-stream")})
        if r.status_code not in (200, 202):
            return r.status_code, r.text
        gb = Gradebook(db)
        try:
            attempt = wait_for(lambda: next((a for a in gb.attempts(student="alice")
                                             if a.status in ("graded", "invalid", "error")), None),
                               timeout=120, what="the site's grading")
        finally:
            gb.close()
    return attempt.result()
