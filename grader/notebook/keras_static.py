"""LunarLander notebooks: the Keras actor/critic read statically (Keras is not a dependency).

Nothing is executed. Integer constants (``num_inputs = 8``) are resolved, then ``Input`` /
``Dense`` calls and ``keras.Model(inputs=..., outputs=...)`` / ``keras.Sequential([...])`` are
followed to find the actor's input size, its output layer and the hidden layer sizes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from grader.notebook.astfilter import dotted_name


@dataclass
class Layer:
    var: str | None
    units: int | str | None
    activation: str | None
    input_var: str | None
    line: str


@dataclass
class KerasModel:
    inputs: list[tuple[str | None, tuple | None]] = field(default_factory=list)  # (var, shape)
    dense: list[Layer] = field(default_factory=list)
    actor_output: Layer | None = None
    actor_name: str | None = None
    critic_output: Layer | None = None
    notes: list[str] = field(default_factory=list)


def _const(node, consts):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    if isinstance(node, ast.Tuple):
        return tuple(_const(e, consts) for e in node.elts)
    if isinstance(node, ast.List):
        return tuple(_const(e, consts) for e in node.elts)
    return None


def _kw(call: ast.Call, name: str, pos: int | None, consts):
    for k in call.keywords:
        if k.arg == name:
            return _const(k.value, consts)
    if pos is not None and len(call.args) > pos:
        return _const(call.args[pos], consts)
    return None


def _is(call, *names):
    n = dotted_name(call.func) or ""
    return n.split(".")[-1] in names


@dataclass
class _ModelRef:
    """A ``keras.Model(...)`` (its output variable, resolved at the end) or a ``Sequential`` (its last Dense)."""

    functional: bool
    output_var: str | None = None
    output_layer: Layer | None = None


@dataclass
class _Reading:
    """What the walk over the notebook's assignments has found so far."""

    consts: dict[str, object]
    model: KerasModel = field(default_factory=KerasModel)
    layer_of: dict[str, Layer] = field(default_factory=dict)
    models: dict[str, _ModelRef] = field(default_factory=dict)


def analyse(trees: list[ast.Module], sources: list[str]) -> KerasModel:
    reading = _Reading(_constants(trees))
    for tree, src in zip(trees, sources):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                _read_assign(reading, node, src)
    _pick_outputs(reading)
    return reading.model


def _constants(trees: list[ast.Module]) -> dict[str, object]:
    """``name = constant`` assignments (ints and strings), in notebook order."""
    consts: dict[str, object] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                v = _const(node.value, consts)
                if isinstance(v, (int, str)):
                    consts[node.targets[0].id] = v
    return consts


def _read_assign(r: _Reading, node: ast.Assign, src: str) -> None:
    """One assignment: a Dense layer applied, an Input, a Model(...) or a Sequential([...])."""
    target = node.targets[0].id if isinstance(node.targets[0], ast.Name) else None
    val = node.value
    if not isinstance(val, ast.Call):
        return
    seg = (ast.get_source_segment(src, node) or "").strip().splitlines()[0][:120]
    # x = layers.Dense(n, activation=..)(prev)
    if isinstance(val.func, ast.Call) and _is(val.func, "Dense"):
        _read_dense(r, val.func, val, target, seg)
    elif _is(val, "Input", "InputLayer"):
        shape = _kw(val, "shape", 0, r.consts)
        if shape is None:
            shape = _kw(val, "input_shape", None, r.consts)
        r.model.inputs.append((target, _as_shape(shape)))
    elif _is(val, "Model", "Functional"):
        if target:
            r.models[target] = _ModelRef(functional=True, output_var=_model_output(val))
    elif _is(val, "Sequential") and val.args and isinstance(val.args[0], ast.List):
        last = _read_sequential(r, val.args[0], src)
        if target:
            r.models[target] = _ModelRef(functional=False, output_layer=last)


def _as_shape(shape: object) -> tuple | None:
    return shape if isinstance(shape, tuple) else (shape,) if shape is not None else None


def _read_dense(r: _Reading, inner: ast.Call, val: ast.Call, target: str | None, seg: str) -> None:
    """``target = Dense(units, activation)(prev)``: ``inner`` is the Dense call, ``val`` its application."""
    prev = val.args[0].id if val.args and isinstance(val.args[0], ast.Name) else None
    layer = Layer(target, _kw(inner, "units", 0, r.consts), _kw(inner, "activation", 1, r.consts), prev, seg)
    r.model.dense.append(layer)
    if target:
        r.layer_of[target] = layer


def _model_output(val: ast.Call) -> str | None:
    """The variable passed as ``outputs=`` (or the second argument) of ``keras.Model``."""
    outs = None
    for k in val.keywords:
        if k.arg == "outputs":
            outs = k.value
    if outs is None and len(val.args) > 1:
        outs = val.args[1]
    return outs.id if isinstance(outs, ast.Name) else None


def _read_sequential(r: _Reading, layers: ast.List, src: str) -> Layer | None:
    """The Dense layers and Inputs of ``Sequential([...])``; its last Dense (the model's output)."""
    last = None
    for el in layers.elts:
        if isinstance(el, ast.Call) and _is(el, "Dense"):
            seg = (ast.get_source_segment(src, el) or "")[:120]
            last = Layer(None, _kw(el, "units", 0, r.consts), _kw(el, "activation", 1, r.consts), None, seg)
            r.model.dense.append(last)
        elif isinstance(el, ast.Call) and _is(el, "Input", "InputLayer"):
            r.model.inputs.append((None, _as_shape(_kw(el, "shape", 0, r.consts))))
    return last


def _pick_outputs(r: _Reading) -> None:
    """The actor's output layer (a model named actor first) and the critic's; else the last softmax Dense."""
    m = r.model
    for name in sorted(r.models, key=lambda n: ("actor" not in n.lower(), n)):
        ref = r.models[name]
        layer = (r.layer_of.get(ref.output_var) if ref.output_var is not None else None) if ref.functional \
            else ref.output_layer
        if layer is None:
            continue
        if "critic" in name.lower() and len(r.models) > 1:
            m.critic_output = layer
            continue
        if m.actor_output is None:
            m.actor_output, m.actor_name = layer, name
    if m.actor_output is None:  # no Model(...) found: the softmax Dense is the actor's output
        soft = [d for d in m.dense if d.activation == "softmax"]
        if soft:
            m.actor_output = soft[-1]


def hidden_sizes(m: KerasModel) -> list:
    outs = {id(m.actor_output), id(m.critic_output)}
    return [d.units for d in m.dense if id(d) not in outs and d.units != 1]
