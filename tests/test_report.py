"""The HTML report: structure, videos, escaping of student strings, hidden seeds, Jupyter fragment."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from report_fixtures import EVIL_INPUT, EVIL_NAME, EVIL_OUTPUT, EVIL_PRODUCER, GRADING_SEEDS, lunarlander_model, write_rubric

from grader.api import grade
from grader.outputs.report import SeedPolicy, baseline_values, render_inline_html, returns_plot_svg, write_report
from grader.result import CheckResult, GradeResult
from grader.scoring.rubric import load_rubric


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], []

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, tag: str | None = None, **attrs):
        for n in self.iter():
            if (tag is None or n.tag == tag) and all(attr_has(n, k.rstrip("_"), v) for k, v in attrs.items()):
                yield n

    def find(self, tag: str | None = None, **attrs):
        return next(self.find_all(tag, **attrs), None)

    def text_content(self) -> str:
        return "".join(self.text) + "".join(c.text_content() for c in self.children)

    def full_text(self) -> str:  # text and children's text in document order is not needed here
        return " ".join(" ".join(n.text) for n in self.iter())


def attr_has(node: Node, name: str, value: str) -> bool:
    got = node.attrs.get(name)
    if got is None:
        return False
    return value in got.split() if name == "class" else got == value


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class TreeBuilder(HTMLParser):
    """A small DOM from the standard library's tokenizer; checks that tags are balanced."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is None:
            self.errors.append(f"stray </{tag}>")
            return
        if n is not self.cur:
            self.errors.append(f"<{self.cur.tag}> closed by </{tag}>")
        self.cur = n.parent

    def handle_data(self, data):
        self.cur.text.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    assert not builder.errors, builder.errors
    assert builder.cur is builder.root, f"unclosed <{builder.cur.tag}>"
    return builder.root


def assert_inert(html: str, root: Node) -> None:
    """No script can run: no script elements, no event handlers, no javascript: URLs, nothing external."""
    assert not list(root.find_all("script"))
    assert not list(root.find_all("iframe")) and not list(root.find_all("object")) and not list(root.find_all("embed"))
    for node in root.iter():
        for name, value in node.attrs.items():
            assert not name.startswith("on"), f"event handler {name} on <{node.tag}>"
            if name in ("src", "href", "xlink:href", "action", "poster", "data"):
                assert value is not None
                assert not re.match(r"\s*(javascript|https?|ftp|data):|//", value, re.I), f"{node.tag} {name}={value}"
    assert "<script" not in html.lower()


# --- one real grading, shared -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    model = lunarlander_model(base / "model.onnx")
    rubric_path = write_rubric(base / "rubric")
    out = base / "out"
    result = grade(model, rubric=rubric_path, out=out, workers=1, display_name=EVIL_NAME)
    html = (out / "report.html").read_text(encoding="utf-8")
    return result, out, html, parse(html), load_rubric(rubric_path)


def test_output_folder(graded):
    result, out, html, root, _ = graded
    assert result.status == "graded", result.error
    names = sorted(p.name for p in out.iterdir())
    assert "report.html" in names and "result.json" in names
    # only the grader's own marker (grader.outputs.fsutil.MARKER) is hidden; no temporary file is left
    assert [n for n in names if n.startswith(".") or n.endswith(".part")] == [".rl-grader-output"], names
    assert len(result.videos) >= 2
    for v in result.videos:
        assert (out / v.path).is_file()
    assert GradeResult.from_json((out / "result.json").read_text()).videos == result.videos


def test_structure(graded):
    result, out, html, root, _ = graded
    assert html.startswith("<!DOCTYPE html>")
    assert root.find("html").attrs.get("lang") == "en"
    assert root.find("meta", charset="utf-8") is not None
    assert root.find("title").text_content().startswith(EVIL_NAME)
    assert root.find("h1").text_content() == EVIL_NAME
    for section in ("summary", "checks", "episodes", "videos", "model", "reproduce"):
        assert root.find(id=section) is not None, section
    # Score and band.
    summary = root.find(id="summary").full_text()
    assert f"{result.score:.2f}" in summary and "/ 10 points" in summary
    assert result.band in summary
    # Every check, with its mark.
    rows = list(root.find(id="checks").find_all("tr"))
    assert len(rows) == len(result.checks)
    for row, check in zip(rows, result.checks):
        assert check.name in row.full_text()
        assert row.find("span", class_="mark").text_content() == ("✓" if check.passed else "✗")
    # Statistics, plot, episode table.
    episodes = root.find(id="episodes")
    text = episodes.full_text()
    for label in ("mean ± std", "median", "IQM", "95% CI", "success rate"):
        assert label in text
    svg = episodes.find("svg")
    assert svg is not None and "plot" in svg.attrs["class"]
    svg_text = svg.full_text()
    assert "0 pts at" in svg_text and "full pts at" in svg_text and "mean" in svg_text
    body_rows = list(episodes.find("tbody").find_all("tr"))
    assert len(body_rows) == len(result.episodes)
    # Videos, with the proof of determinism.
    videos = list(root.find(id="videos").find_all("video"))
    assert [v.attrs["src"] for v in videos] == [v.path for v in result.videos]
    assert all("controls" in v.attrs for v in videos)
    assert root.find(id="videos").full_text().count("re-run matches ✓") == len(result.videos)
    # Model card.
    card = root.find(id="model").full_text()
    for fact in (result.model.sha256, "opset", "IR version", f"{result.model.parameters:,}", "Gemm", "Softmax", "Tanh"):
        assert fact in card
    # Reproducibility.
    repro = root.find(id="reproduce").full_text()
    assert result.command in repro and f"{len(GRADING_SEEDS)} episodes" in repro and "grading seeds" in repro
    for name, version in result.versions.items():
        assert name in repro and version in repro


def test_self_contained(graded):
    result, out, html, root, _ = graded
    assert_inert(html, root)
    assert root.find("link") is None
    assert not re.search(r"https?://(?!www\.w3\.org/)", html), "no external URL (SVG namespaces aside)"
    assert "@import" not in html and not re.search(r"url\(\s*['\"]?(?!#)", html), "only in-page url(#id) references"


def test_untrusted_strings_escaped(graded):
    result, out, html, root, _ = graded
    assert result.model.outputs[0].name == EVIL_OUTPUT and result.model.inputs[0].name == EVIL_INPUT
    assert_inert(html, root)
    assert not list(root.find_all("img"))
    # The strings arrive as text, not as markup.
    text = root.full_text()
    for evil in (EVIL_OUTPUT, EVIL_INPUT, EVIL_NAME):
        assert evil in text
    assert EVIL_PRODUCER in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not [n for n in root.iter() if n.tag == "img"]
    # The plot holds our labels only.
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert "alert" not in svg and "onerror" not in svg


def test_hidden_grading_seeds_never_shown(graded):
    result, out, html, root, _ = graded
    assert result.rubric.seed_set == "grading"
    assert [e.seed for e in result.episodes] == GRADING_SEEDS
    for seed in GRADING_SEEDS:
        assert str(seed) not in html
        for p in out.iterdir():
            assert str(seed) not in p.name
    keys = [row.find("td").text_content() for row in root.find(id="episodes").find("tbody").find_all("tr")]
    assert keys == [str(i) for i in range(1, len(GRADING_SEEDS) + 1)]
    assert "episode" in root.find(id="videos").full_text()


def test_hidden_seeds_scrubbed_from_text(graded):
    result, out, html, root, _ = graded
    seed = result.episodes[2].seed
    leaky = result.model_copy(deep=True)
    leaky.warnings = [f"could not record the best episode (seed {seed}): boom", f"seed={seed}; again {seed}"]
    leaky.checks.append(CheckResult(name="x", passed=False, severity="warning", message=f"odd at {seed}", hint=f"seed {seed}"))
    leaky.command = f"grade m.onnx --seeds {seed}"
    leaky.videos[0].path = f"best_seed{seed}.mp4"
    (out / leaky.videos[0].path).write_bytes((out / result.videos[0].path).read_bytes())
    page = write_report(leaky, out / "leaky", baselines={}).read_text()
    assert str(seed) not in page
    assert "episode 3" in page
    assert leaky.videos[0].label == "best" and 'src="best.mp4"' in page


def test_public_seeds_are_shown(graded):
    result, out, html, root, _ = graded
    public = result.model_copy(deep=True)
    public.rubric.seed_set = "public"
    page = write_report(public, out / "public", baselines={}).read_text()
    tree = parse(page)
    keys = [row.find("td").text_content() for row in tree.find(id="episodes").find("tbody").find_all("tr")]
    assert keys == [str(s) for s in GRADING_SEEDS]
    assert SeedPolicy(public).label(GRADING_SEEDS[0]) == f"seed {GRADING_SEEDS[0]}"


def test_videos_decode_with_right_frame_counts(graded):
    import imageio.v3 as iio

    from grader.runtime.video import frame_count
    from grader.tasks import get_task

    STRIDE = get_task("lunarlander").video_stride
    assert STRIDE == 2  # 50 Hz physics shown at 25 fps

    result, out, html, root, _ = graded
    lengths = {e.seed: e.length for e in result.episodes}
    for v in result.videos:
        path = out / v.path
        frames = iio.imread(path, plugin="pyav") if _has_pyav() else iio.imread(path, plugin="FFMPEG")
        assert frames.shape[0] == v.frames == frame_count(lengths[v.seed], STRIDE), (v, frames.shape)
        assert frames.shape[1:] == (400, 600, 3)
        assert v.matches and v.rerun_return == v.scored_return
        assert path.stat().st_size < 400 * 1024


@pytest.mark.parametrize("stride", [1, 3])
def test_frame_recorder_keeps_every_stride_th_step_and_the_last(tmp_path, stride):
    import gymnasium as gym
    import imageio.v3 as iio

    from grader.runtime.video import FrameRecorder, frame_count

    path = tmp_path / "v.mp4"
    with FrameRecorder(gym.make("CartPole-v1", render_mode="rgb_array"), str(path), fps=25, stride=stride) as env:
        env.reset(seed=4)  # 23 steps
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(steps % 2)
            steps, done = steps + 1, terminated or truncated
        last = env.render()
    assert steps % 3 != 0  # the last step is not on the stride: it must still be shown
    frames = iio.imread(path, plugin="pyav") if _has_pyav() else iio.imread(path, plugin="FFMPEG")
    assert len(frames) == env.frames == frame_count(steps, stride)
    assert abs(frames[-1].astype(int) - last.astype(int)).mean() < 3  # the final frame is the final state
    with pytest.raises(ValueError, match="stride"):
        FrameRecorder(gym.make("CartPole-v1", render_mode="rgb_array"), str(tmp_path / "w.mp4"), fps=25, stride=0)


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def test_baselines_marked(graded):
    result, out, html, root, rubric = graded
    values = baseline_values(result)  # carried by the result: no rubric lookup
    assert set(values) == {"random", "reference"}
    assert values["reference"] == pytest.approx((250.0 + 240.5 + 262.0) / 3)
    page = write_report(result, out / "with-baselines").read_text()
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "random" in svg and "reference" in svg
    assert "Baselines" in page


def test_baselines_absent_is_fine_and_a_broken_file_is_refused_at_load(graded, tmp_path):
    from grader.scoring.rubric import RubricError

    result, out, html, root, _ = graded
    rubric = load_rubric(write_rubric(tmp_path / "nob", with_baselines=False))
    assert rubric.baseline_marks == {}
    broken = write_rubric(tmp_path / "broken")
    (tmp_path / "broken" / "baselines.json").write_text("{not json")
    with pytest.raises(RubricError, match="baselines"):
        load_rubric(broken)
    bare = result.model_copy(update={"rubric": result.rubric.model_copy(update={"baselines": {}})})
    assert baseline_values(bare) == {}
    assert baseline_values(result.model_copy(update={"rubric": None})) == {}
    page = write_report(bare, tmp_path / "o").read_text()
    assert "Baselines" not in page and "<svg" in page


def test_write_is_atomic_and_repeatable(graded, tmp_path):
    result, out, html, root, _ = graded
    first = write_report(result, tmp_path, baselines={})
    second = write_report(result, tmp_path, baselines={})
    assert first == second == tmp_path / "report.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_inline_html_for_jupyter(graded):
    result, out, html, root, _ = graded
    fragment = render_inline_html(result)
    tree = parse(fragment)
    assert_inert(fragment, tree)
    assert tree.find("html") is None and tree.find("video") is None
    assert EVIL_NAME in tree.full_text()
    assert f"{result.score:.2f}" in tree.full_text()
    assert len(list(tree.find_all("tr"))) == len(result.checks)
    for seed in GRADING_SEEDS:
        assert str(seed) not in fragment


def test_invalid_submission_report(tmp_path):
    model = lunarlander_model(tmp_path / "three.onnx", outputs=3, input_name="x", output_name="y", producer="p")
    result = grade(model, task="lunarlander", out=tmp_path / "out", workers=1)
    assert result.status == "invalid" and not result.episodes
    html = (tmp_path / "out" / "report.html").read_text()
    root = parse(html)
    assert_inert(html, root)
    banner = root.find(class_="banner")
    assert banner is not None and "invalid" in banner.full_text()
    failed = result.failed_checks[0]
    assert failed.name in banner.full_text() and failed.hint and failed.hint in banner.full_text()
    assert root.find(id="episodes") is None and root.find(id="videos") is None
    assert root.find(id="model") is not None
    assert "✗" in root.find(id="checks").full_text()
    assert "invalid" in render_inline_html(result)


def test_unreadable_and_error_results_render(tmp_path):
    bare = GradeResult(submission="<x>.onnx", task=None, status="error", error="internal grader error (<boom>)")
    page = write_report(bare, tmp_path).read_text()
    root = parse(page)
    assert_inert(page, root)
    assert "internal grader error (<boom>)" in root.full_text()
    invalid = GradeResult(submission="a.onnx", task=None, status="invalid", error="cannot read",
                          checks=[CheckResult(name="readable", passed=False, message="cannot read the submission",
                                              hint="check the path")])
    root = parse(write_report(invalid, tmp_path / "b").read_text())
    assert "check the path" in root.find(class_="banner").full_text()
    parse(render_inline_html(invalid))


def test_plot_svg_is_plain():
    svg = returns_plot_svg([1.0, 2.0, float("nan"), 3.5], zero=0.0, full=10.0, statistic=("mean", 2.2),
                           baselines={"random": 0.5, "<script>": 9.0})
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<script" not in svg and "&lt;script&gt;" in svg
    assert returns_plot_svg([]) == ""
    assert returns_plot_svg([5.0, 5.0]).startswith("<svg")


def test_jupyter_renders_a_result_as_the_inline_report(graded):
    """`from grader import check` registers the HTML formatter in a running IPython shell."""
    pytest.importorskip("IPython")
    from IPython.testing.globalipapp import start_ipython

    import grader

    shell = start_ipython()
    grader.__getattr__("check")
    result = graded[0]
    printer = shell.display_formatter.formatters["text/html"].lookup(result)  # what a notebook's frontend calls
    assert printer(result) == render_inline_html(result)
