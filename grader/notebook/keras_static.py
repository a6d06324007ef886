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


def analyse(trees: list[ast.Module], sources: list[str]) -> KerasModel:
    m = KerasModel()
    consts: dict[str, object] = {}
    layer_of: dict[str, Layer] = {}
    models: dict[str, tuple] = {}
    for tree, _src in zip(trees, sources):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                v = _const(node.value, consts)
                if isinstance(v, (int, str)):
                    consts[node.targets[0].id] = v
    for tree, src in zip(trees, sources):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            target = node.targets[0].id if isinstance(node.targets[0], ast.Name) else None
            val = node.value
            seg = (ast.get_source_segment(src, node) or "").strip().splitlines()[0][:120]
            # x = layers.Dense(n, activation=..)(prev)
            if isinstance(val, ast.Call) and isinstance(val.func, ast.Call) and _is(val.func, "Dense"):
                inner = val.func
                prev = val.args[0].id if val.args and isinstance(val.args[0], ast.Name) else None
                layer = Layer(target, _kw(inner, "units", 0, consts), _kw(inner, "activation", 1, consts), prev, seg)
                m.dense.append(layer)
                if target:
                    layer_of[target] = layer
            elif isinstance(val, ast.Call) and _is(val, "Input", "InputLayer"):
                shape = _kw(val, "shape", 0, consts)
                if shape is None:
                    shape = _kw(val, "input_shape", None, consts)
                m.inputs.append((target, shape if isinstance(shape, tuple) else (shape,) if shape is not None else None))
            elif isinstance(val, ast.Call) and _is(val, "Model", "Functional"):
                outs = None
                for k in val.keywords:
                    if k.arg == "outputs":
                        outs = k.value
                if outs is None and len(val.args) > 1:
                    outs = val.args[1]
                out_var = outs.id if isinstance(outs, ast.Name) else None
                if target:
                    models[target] = ("functional", out_var)
            elif isinstance(val, ast.Call) and _is(val, "Sequential") and val.args and isinstance(val.args[0], ast.List):
                last = None
                for el in val.args[0].elts:
                    if isinstance(el, ast.Call) and _is(el, "Dense"):
                        seg2 = (ast.get_source_segment(src, el) or "")[:120]
                        last = Layer(None, _kw(el, "units", 0, consts), _kw(el, "activation", 1, consts), None, seg2)
                        m.dense.append(last)
                    elif isinstance(el, ast.Call) and _is(el, "Input", "InputLayer"):
                        shape = _kw(el, "shape", 0, consts)
                        m.inputs.append((None, shape if isinstance(shape, tuple) else (shape,) if shape is not None else None))
                if target:
                    models[target] = ("sequential", last)
    actor_names = sorted(models, key=lambda n: ("actor" not in n.lower(), n))
    for name in actor_names:
        kind, ref = models[name]
        layer = layer_of.get(ref) if kind == "functional" else ref
        if layer is None:
            continue
        if "critic" in name.lower() and len(models) > 1:
            m.critic_output = layer
            continue
        if m.actor_output is None:
            m.actor_output, m.actor_name = layer, name
    if m.actor_output is None:  # no Model(...) found: the softmax Dense is the actor's output
        soft = [d for d in m.dense if d.activation == "softmax"]
        if soft:
            m.actor_output = soft[-1]
    return m


def hidden_sizes(m: KerasModel) -> list:
    outs = {id(m.actor_output), id(m.critic_output)}
    return [d.units for d in m.dense if id(d) not in outs and d.units != 1]
