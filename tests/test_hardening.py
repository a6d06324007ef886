"""Attacks on the paths a student's bytes travel outside the sandboxes: the output folder, the
terminal, the CSV files; and the messages a student gets for the usual export mistakes."""

from __future__ import annotations

import re
from pathlib import Path

import onnx_fixtures as F
import pytest

from grader.api import grade
from grader.cli import main

REPO = Path(__file__).resolve().parent.parent
LUNAR = REPO / "reference" / "models" / "lunarlander_improved.onnx"


# --- output folders -------------------------------------------------------------------------------
@pytest.mark.parametrize("planted", ["result.json", "report.html", "best_seed0.mp4", "notebook_stdout.txt"])
def test_a_link_planted_in_the_output_folder_is_never_written_through(tmp_path, planted):
    """The folder arrived with the student's files, holding a link at a name the grader writes."""
    model = tmp_path / "model.onnx"
    model.write_bytes(LUNAR.read_bytes())
    victim = tmp_path / "victim.txt"
    victim.write_text("the instructor's file")
    out = tmp_path / "model.onnx.grading"
    out.mkdir()
    (out / planted).symlink_to(victim)
    from grader.outputs.fsutil import OutputDirError

    with pytest.raises(OutputDirError, match="did not write"):  # the default folder, beside the submission
        grade(model, seeds=[0, 1, 2], video=True)
    assert victim.read_text() == "the instructor's file" and (out / planted).is_symlink()


def test_a_folder_the_grader_did_not_write_is_refused_and_left_alone(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(LUNAR.read_bytes())
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main([str(model), "--out", str(out), "--episodes", "2", "--no-video"]) == 1
    assert "holds files the grader did not write" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_a_folder_the_grader_wrote_is_replaced_and_its_links_unlinked(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(LUNAR.read_bytes())
    out = tmp_path / "out"
    assert grade(model, out=out, seeds=[0, 1], video=False).status == "graded"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "result.json").unlink()
    (out / "result.json").symlink_to(victim)  # planted after a grading, the marker still there
    (out / ".report.html.1234.part").symlink_to(victim)  # at a temporary name too
    assert grade(model, out=out, seeds=[0, 1], video=False).status == "graded"
    assert victim.read_text() == "keep"
    assert not (out / "result.json").is_symlink() and not (out / ".report.html.1234.part").exists()


def test_the_output_folder_itself_may_not_be_a_link(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(LUNAR.read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "model.onnx.grading").symlink_to(elsewhere)
    assert main([str(model), "--episodes", "2", "--no-video"]) == 1
    assert "is a symbolic link" in " ".join(capsys.readouterr().err.split()) and not list(elsewhere.iterdir())


# --- the terminal ---------------------------------------------------------------------------------
def _evil_names(path: Path) -> Path:
    import onnx

    model = onnx.load(str(F.mlp(path)))
    model.graph.input[0].name = model.graph.node[0].input[0] = "x\x1b[2J\x1b[32mscore: 10 / 10\x07"
    model.producer_name = "evil\x1b]0;owned\x07"
    onnx.save(model, str(path))
    return path


def test_control_characters_from_a_model_never_reach_the_terminal(tmp_path, capsys):
    path = _evil_names(tmp_path / "model.onnx")
    main([str(path), "--out", str(tmp_path / "o"), "--episodes", "2", "--no-video"])
    out = capsys.readouterr()
    assert "\x1b[2J" not in out.out + out.err and "\x07" not in out.out + out.err
    assert "[2J" in out.out and "score: 10 / 10" in out.out  # shown, defused (repr or "?")


def test_the_terminal_never_prints_hidden_grading_seeds(tmp_path, capsys):
    from grader.scoring.rubric import load_rubric

    seeds = load_rubric(REPO / "rubrics" / "lunarlander.toml").grading_seeds()[:3]
    model = tmp_path / "model.onnx"
    model.write_bytes(LUNAR.read_bytes())
    assert main([str(model), "--out", str(tmp_path / "o"), "--episodes", "3"]) == 0  # with videos
    out = capsys.readouterr().out
    assert "video best: episode" in out
    assert not any(re.search(rf"(?<!\d){s}(?!\d)", out) for s in seeds), out


# --- export mistakes get their own message ----------------------------------------------------------
def test_an_exported_critic_is_called_the_critic(tmp_path):
    path = F.mlp(tmp_path / "critic.onnx", n_out=1)
    result = grade(path, task="lunarlander", write=False, seeds=[0])
    assert result.status == "invalid" and "critic" in result.error and "export the actor" in result.error


def test_a_pytorch_checkpoint_is_recognised_by_its_signature(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(8, 4)
    for name in ("policy.pt", "renamed.onnx"):
        torch.save(net.state_dict(), tmp_path / name)
        result = grade(tmp_path / name, task="lunarlander", write=False)
        assert result.status == "invalid" and "PyTorch checkpoint" in result.error, result.error
        assert "torch.onnx.export" in result.error and "protobuf" not in result.error


def test_a_folder_is_not_called_missing(tmp_path, capsys):
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "notes.txt").write_text("no model yet")
    assert main(["check", str(folder)]) == 2
    out = capsys.readouterr().out
    assert "nothing to grade" in out and "no such file" not in out


def test_an_output_folder_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(LUNAR.read_bytes())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([str(model), "--out", str(blocker / "out"), "--episodes", "2", "--no-video"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot use the output folder" in err and "Traceback" not in err
