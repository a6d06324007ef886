"""Which top-level statements of a notebook run in the sandbox: definitions only, never training.

Rules, applied to each top-level statement of each code cell (see docs/notebooks.md):

* kept: ``import`` / ``from .. import``; ``def`` / ``async def`` / ``class`` (their bodies are not
  inspected: a class body or a default argument runs at definition time, in the sandbox, under
  its time limit); ``pass``, ``global``, ``del``;
* kept: assignments (``=``, ``+=``, annotated), including attribute and subscript targets such as
  ``Agent.preprocess_observation = preprocess_observation`` or ``params['n_actions'] = 5``, when
  the value calls nothing, or only calls from :data:`ALLOWED_CALLS` (``torch.device(...)``,
  ``namedtuple(...)``, ``dict(...)``, ...); lambdas count as definitions (their body is not run);
* kept: bare calls from :data:`ALLOWED_STATEMENT_CALLS` (seeding, ``setattr(Agent, ...)``,
  ``warnings.filterwarnings``);
* kept: ``if`` / ``try`` blocks whose test is allowed and whose statements are all kept by these
  rules (``try: import cv2 except ImportError: ...``);
* everything else is skipped and listed: loops (``while True: agent.run_episode()``), ``with``,
  other calls (``gym.make``, ``env.reset``, ``model.fit``, ``plt.plot``, ``print``), assignments
  that call anything else (``env = gym.make(...)``, ``policy = DQN(...).to(device)``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from grader.notebook.reader import CodeCell

ALLOWED_CALLS = {
    # builtins that build values
    "dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "bytes", "range",
    "len", "min", "max", "abs", "round", "sorted", "zip", "enumerate", "reversed", "sum", "pow",
    "slice", "object", "type", "getattr", "isinstance", "divmod",
    # collections / typing
    "namedtuple", "collections.namedtuple", "deque", "collections.deque", "typing.NamedTuple",
    "defaultdict", "collections.defaultdict", "OrderedDict", "collections.OrderedDict",
    # torch device / dtype helpers
    "torch.device", "torch.cuda.is_available", "torch.backends.mps.is_available", "torch.cuda.device_count",
    "torch.tensor", "torch.zeros", "torch.ones", "torch.full", "torch.arange", "torch.as_tensor",
    "torch.get_default_dtype",
    # numpy values
    "np.finfo", "numpy.finfo", "np.iinfo", "np.float32", "np.array", "np.zeros", "np.ones", "np.full",
    "np.arange", "np.asarray", "np.dtype", "numpy.array", "numpy.zeros", "numpy.float32",
    # misc
    "os.environ.get", "os.getenv", "Path", "pathlib.Path", "os.path.join", "math.exp", "math.log",
    "math.sqrt", "math.pow", "math.ceil", "math.floor", "np.exp", "np.log", "np.sqrt",
}
ALLOWED_STATEMENT_CALLS = {
    "torch.manual_seed", "random.seed", "np.random.seed", "numpy.random.seed", "torch.set_default_dtype",
    "warnings.filterwarnings", "warnings.simplefilter", "setattr", "torch.set_grad_enabled",
    "torch.use_deterministic_algorithms", "os.environ.setdefault", "os.environ.update",
}


@dataclass
class Statement:
    line: int  # first line (decorators included), 1-based in its cell
    source: str  # the statement's exact text
    is_import: bool = False
    node: ast.stmt | None = field(default=None, repr=False, compare=False)


@dataclass
class CellPlan:
    cell: CodeCell
    run: list[Statement] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, first line of the statement)
    syntax_error: str | None = None  # message for the student, when the cell does not parse
    syntax_line: int | None = None
    tree: ast.Module | None = field(default=None, repr=False)  # the parsed cell, when it parses


def dotted_name(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call):  # torch.device(...).type etc.: name the inner call
        inner = dotted_name(node.func)
        return inner and inner + "()." + ".".join(reversed(parts))
    return None


def _calls(node: ast.AST):
    """Call nodes evaluated when ``node`` is evaluated (lambda bodies are not)."""
    if isinstance(node, ast.Lambda):
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            yield from _calls(d)
        return
    if isinstance(node, ast.Call):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _calls(child)


def _value_allowed(node: ast.AST | None) -> bool:
    if node is None:
        return True
    for call in _calls(node):
        if dotted_name(call.func) not in ALLOWED_CALLS:
            return False
    return True


def _kept(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                         ast.Pass, ast.Global, ast.Nonlocal, ast.Delete)):
        return True
    if isinstance(stmt, ast.Assign):
        return _value_allowed(stmt.value) and all(_value_allowed(t) for t in stmt.targets)
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        return _value_allowed(stmt.value) and _value_allowed(stmt.target)
    if isinstance(stmt, ast.Expr):
        v = stmt.value
        if isinstance(v, ast.Constant):  # a docstring or a bare value: nothing to run
            return False
        if isinstance(v, ast.Call) and dotted_name(v.func) in ALLOWED_STATEMENT_CALLS:
            return all(_value_allowed(a) for a in v.args) and all(_value_allowed(k.value) for k in v.keywords)
        return False
    if isinstance(stmt, ast.If):
        return _value_allowed(stmt.test) and all(_kept(s) for s in stmt.body + stmt.orelse)
    if isinstance(stmt, ast.Try):
        body = stmt.body + stmt.orelse + stmt.finalbody + [s for h in stmt.handlers for s in h.body]
        return all(_kept(s) for s in body)
    return False


def _segment(lines: list[str], stmt: ast.stmt) -> tuple[int, str]:
    start_line, start_col = stmt.lineno, stmt.col_offset
    for dec in getattr(stmt, "decorator_list", []):
        if dec.lineno < start_line:
            start_line, start_col = dec.lineno, dec.col_offset - 1  # the '@'
    end_line, end_col = stmt.end_lineno or start_line, stmt.end_col_offset  # parsed code has both
    if start_line == end_line:
        text = lines[start_line - 1][start_col:end_col]
    else:
        text = "\n".join([lines[start_line - 1][start_col:], *lines[start_line:end_line - 1], lines[end_line - 1][:end_col]])
    return start_line, text


def _parse(source: str) -> tuple[ast.Module | None, str | None, int | None]:
    """(tree, None, None), or (None, message, line) when the cell does not parse.

    Source nested too deeply for the parser (``"(" * 200000``, a 100000-term expression) is the
    submission's problem: it is reported like a syntax error, never raised.
    """
    try:
        return ast.parse(source), None, None
    except SyntaxError as exc:
        return None, f"{exc.msg}", exc.lineno
    except (RecursionError, MemoryError):
        return None, "the code is nested too deeply for the Python parser", None
    except ValueError as exc:  # e.g. null bytes, on some Python versions
        return None, str(exc)[:200], None


def plan_cell(cell: CodeCell) -> CellPlan:
    plan = CellPlan(cell)
    if cell.skipped_magic:
        plan.skipped.append((1, f"{cell.skipped_magic} cell magic (the whole cell)"))
        return plan
    tree, plan.syntax_error, plan.syntax_line = _parse(cell.source)
    if tree is None:
        return plan
    plan.tree = tree
    lines = cell.source.splitlines()
    try:
        for stmt in tree.body:
            line, text = _segment(lines, stmt)
            if _kept(stmt):
                plan.run.append(Statement(line, text, isinstance(stmt, (ast.Import, ast.ImportFrom)), stmt))
            else:
                first = text.strip().splitlines()[0] if text.strip() else ""
                plan.skipped.append((line, first[:100]))
    except RecursionError:  # an expression deep enough to parse but not to walk
        return CellPlan(cell, syntax_error="the code is nested too deeply for the grader to analyse")
    return plan


def plan_notebook(cells: list[CodeCell]) -> list[CellPlan]:
    return [plan_cell(c) for c in cells]


def defined_names(plans: list[CellPlan]) -> tuple[set[str], set[str]]:
    """(function names, class names) defined by the statements that run, at any depth.

    The grader's own view of what the notebook defines: a probe report naming anything else
    did not come from these definitions.
    """
    functions: set[str] = set()
    classes: set[str] = set()
    for plan in plans:
        for st in plan.run:
            for node in ast.walk(st.node) if st.node is not None else ():
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions.add(node.name)
                elif isinstance(node, ast.ClassDef):
                    classes.add(node.name)
    return functions, classes
