"""Sandbox child: runs a notebook's definitions and probes them. Started by sandbox.py as
``python -I -u in/runner.py in/job.json FD BLOB_FD``; stdlib only until the probes import
numpy/torch.

It only produces evidence: the raw outputs of the student's functions on the inputs in
``in/frames.npz`` (raw frames for the preprocessing, ready-made states for the network; the
expected answers are not in the sandbox), as JSON lines on file descriptor FD, and the exported
ONNX files on BLOB_FD. Nothing it sends says that a check passed: the parent validates every
message (``grader/notebook/protocol.py``) and judges. The encoder and ``os.write`` are captured
before any student code runs, so replacing ``print``, ``json`` or builtins does not break the
channel; deliberate forgery is possible (the code shares this process) and gains nothing.

This file is copied into the sandbox folder; it must not import ``grader``.
"""

import os
import sys

_write = os.write
_exit = os._exit
_getpid = os.getpid
_FD = int(sys.argv[2])
_BLOB_FD = int(sys.argv[3])
_str, _int, _float, _bool, _type, _len, _list, _dict, _tuple = str, int, float, bool, type, len, list, dict, tuple
_frepr = float.__repr__
_ord = ord
_join = "".join
_MAX_MSG = 2_000_000
_INF = float("inf")
_memoryview = memoryview


def _esc(s):
    out = []
    for ch in s:
        o = _ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or o > 0x7E:
            out.append("\\u%04x" % o if o < 0x10000 else "\\u%04x\\u%04x" % (0xD800 + ((o - 0x10000) >> 10), 0xDC00 + ((o - 0x10000) & 0x3FF)))
        else:
            out.append(ch)
    return '"' + _join(out) + '"'


def _enc(o):
    t = _type(o)
    if o is None:
        return "null"
    if t is _bool:
        return "true" if o else "false"
    if t is _int:
        return int.__repr__(o)
    if t is _float:
        if o != o or o in (_INF, -_INF):
            return "null"
        return _frepr(o)
    if t is _str:
        return _esc(o)
    if t is _list or t is _tuple:
        return "[" + ",".join([_enc(x) for x in o]) + "]"
    if t is _dict:
        return "{" + ",".join([_esc(_str(k)) + ":" + _enc(v) for k, v in o.items()]) + "}"
    return _esc(_str(t.__name__))


_MAIN_PID = _getpid()


def _forked_child_guard():
    """A process forked by the notebook that came back into the runner: it must not report."""
    if _getpid() != _MAIN_PID:
        _exit(0)


def send(**msg):
    _forked_child_guard()
    data = (_enc(msg) + "\n").encode("ascii")
    if _len(data) > _MAX_MSG:
        data = (_enc({"ev": "oversize", "of": msg.get("ev")}) + "\n").encode("ascii")
    view = _memoryview(data)
    while _len(view):
        n = _write(_FD, view)
        view = view[n:]


def ship(name, path, limit):
    """Stream the file the exporter wrote to the model channel: a JSON header line, then the bytes.
    Returns None, or why it was not sent."""
    _forked_child_guard()
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if _len(data) > limit:
        return "the exported model is larger than the %.1f MB accepted" % (limit / 1048576.0)
    view = _memoryview((_enc({"name": name, "size": _len(data)}) + "\n").encode("ascii") + data)
    while _len(view):
        n = _write(_BLOB_FD, view)
        view = view[n:]
    return None


send(ev="start", pid=_getpid())

import base64  # noqa: E402
import builtins  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

_b64 = base64.b64encode
_format_exc_only = traceback.format_exception_only


class DeadlineExceeded(BaseException):
    """Raised by SIGALRM; a BaseException so `except Exception` in student code does not swallow it."""


def _alarm(signum, frame):
    raise DeadlineExceeded()


signal.signal(signal.SIGALRM, _alarm)
_setitimer = signal.setitimer
_ITIMER = signal.ITIMER_REAL


def _short(exc):
    try:
        text = _join(_format_exc_only(_type(exc), exc)).strip()
    except BaseException:
        text = _type(exc).__name__
    return text[-1500:]


def _student_line(exc, filename_prefix="<cell"):
    """The last line number of a traceback frame in the student's code."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(filename_prefix):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _student_frame_file(exc):
    tb, name = exc.__traceback__, None
    while tb is not None:
        fn = tb.tb_frame.f_code.co_filename
        if fn.startswith("<cell"):
            name = fn
        tb = tb.tb_next
    return name


class _Stub(types.ModuleType):
    """Stands in for a module the grader does not have (IPython, cv2, tqdm...)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubObj(self.__name__ + "." + name)


class _StubObj:
    def __init__(self, name):
        self._name = name

    def __call__(self, *a, **k):
        return _StubObj(self._name + "()")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubObj(self._name + "." + name)

    def __mro_entries__(self, bases):
        return (object,)


def run_definitions(job, ns):
    stubbed = []
    for cell in job["cells"]:
        for st in cell["stmts"]:
            fname = "<cell %d>" % cell["cell"]
            src = "\n" * (st["line"] - 1) + st["src"]
            send(ev="stmt", cell=cell["cell"], line=st["line"])
            for attempt in range(4):
                _setitimer(_ITIMER, st["timeout"] if attempt == 0 else 5)
                try:
                    try:
                        exec(compile(src, fname, "exec"), ns)
                    finally:
                        _forked_child_guard()
                    _setitimer(_ITIMER, 0)
                    break
                except DeadlineExceeded as exc:
                    _setitimer(_ITIMER, 0)
                    send(ev="stmt_timeout", cell=cell["cell"], line=_student_line(exc) or st["line"],
                         seconds=st["timeout"])
                    break
                except ModuleNotFoundError as exc:
                    _setitimer(_ITIMER, 0)
                    missing = (exc.name or "").split(".")[0]
                    if missing and missing not in sys.modules and attempt < 3 and missing not in job["no_stub"]:
                        sys.modules[missing] = _Stub(missing)
                        stubbed.append(missing)
                        continue
                    send(ev="stmt_error", cell=cell["cell"], line=_student_line(exc) or st["line"], error=_short(exc))
                    break
                except SystemExit as exc:
                    _setitimer(_ITIMER, 0)
                    send(ev="stmt_error", cell=cell["cell"], line=_student_line(exc) or st["line"],
                         error="SystemExit(%s): the code called exit() / sys.exit()" % (exc.code,), kind="exit")
                    break
                except BaseException as exc:
                    _setitimer(_ITIMER, 0)
                    send(ev="stmt_error", cell=cell["cell"], line=_student_line(exc) or st["line"], error=_short(exc))
                    break
    if stubbed:
        send(ev="stubbed", modules=sorted(set(stubbed))[:100])


# --- probes ---------------------------------------------------------------------------------
def _is_cuda_error(exc):
    text = _short(exc).lower()
    return any(k in text for k in ("cuda", "nvidia", "gpu", "torch not compiled with cuda"))


def _to_numpy(out):
    import numpy as np

    kind = _type(out).__module__ + "." + _type(out).__name__
    if hasattr(out, "detach") and hasattr(out, "cpu"):
        dev = _str(getattr(out, "device", "cpu"))
        arr = out.detach().cpu().numpy()
        return arr, kind, dev
    return np.asarray(out), kind, "cpu"


def _array_msg(out):
    """An output as evidence: its type, dtype and shape, and its values as float32 (when numeric, <= 40000)."""
    import numpy as np

    arr, kind, dev = _to_numpy(out)
    entry = {"type": kind[:200], "dtype": _str(arr.dtype)[:200], "shape": [_int(s) for s in arr.shape][:6]}
    if arr.dtype.kind in "biuf" and arr.ndim <= 6 and arr.size <= 40_000:
        entry["data"] = _b64(np.ascontiguousarray(arr, dtype="<f4").tobytes()).decode("ascii")
    return entry


def _call_limited(fn, seconds, *args):
    _setitimer(_ITIMER, seconds)
    try:
        return fn(*args)
    finally:
        _setitimer(_ITIMER, 0)


def _params(ns):
    p = ns.get("params")
    if _type(p) is _dict:
        out: dict = {}  # the notebook's own values: any type, filtered below
        for k, v in p.items():
            if _len(out) >= 200:
                break
            if _type(k) is _str and _len(k) <= 200 and (_type(v) in (_int, _bool) or _type(v) is _float and v == v
                                                      and v not in (_INF, -_INF) or _type(v) is _str and _len(v) <= 200):
                out[k] = v
        return out
    return None


def _nb_function(ns, obj):
    code = getattr(obj, "__code__", None)
    return code is not None and code.co_filename.startswith("<cell")


def _nargs(fn):
    code = fn.__code__
    n = code.co_argcount
    d = _len(fn.__defaults__ or ())
    return n - d, n


class _Self:
    """A stand-in `self` for a preprocessing method written as a free function."""

    device = "cpu"

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        g = _GLOBALS.get(name)
        if g is not None:
            return g
        raise AttributeError("the grader's stand-in for `self` has no attribute %r" % name)


_GLOBALS: dict = {}  # the notebook's device and the preprocessing the probes found (any values)


def find_preprocess(ns):
    """[(description, callable taking one frame, function name, class name or None)] in order of preference."""
    cands: list = []
    names = ("preprocess_observation", "preprocess", "preprocess_frame", "process_observation", "process_frame",
             "preprocess_obs", "preprocess_state")
    classes = [v for v in ns.values() if isinstance(v, _type) and _nb_class(v)]
    classes.sort(key=lambda c: c.__name__ != "Agent")
    for name in names:
        for cls in classes:
            fn = cls.__dict__.get(name)
            if fn is not None and callable(fn):
                def call(obs, cls=cls, name=name):
                    inst = cls.__new__(cls)
                    try:
                        inst.device = _GLOBALS.get("device", "cpu")
                    except BaseException:
                        pass
                    return getattr(inst, name)(obs)
                cands.append(("%s.%s(self, observation)" % (cls.__name__, name), call, _fname(fn), cls.__name__))
        fn = ns.get(name)
        if callable(fn) and _nb_function(ns, fn):
            lo, hi = _nargs(fn)
            if lo <= 1 <= hi:
                cands.append(("%s(observation)" % name, fn, _fname(fn), None))
            elif lo <= 2 <= hi:
                cands.append(("%s(self, observation)" % name, lambda obs, fn=fn: fn(_Self(), obs), _fname(fn), None))
    if not cands:  # any notebook function named *process* / *frame* taking one observation
        for name, fn in ns.items():
            if callable(fn) and _nb_function(ns, fn) and not isinstance(fn, _type):
                low = name.lower()
                if "process" in low or "frame" in low or "obs" in low:
                    lo, hi = _nargs(fn)
                    if lo <= 1 <= hi:
                        cands.append(("%s(observation)" % name, fn, _fname(fn), None))
                    elif lo <= 2 <= hi and fn.__code__.co_varnames[:1] == ("self",):
                        cands.append(("%s(self, observation)" % name, lambda obs, fn=fn: fn(_Self(), obs), _fname(fn), None))
    return cands


def _fname(fn):
    code = getattr(fn, "__code__", None)
    return _str(code.co_name) if code is not None else None


def _nb_class(cls):
    mod = getattr(cls, "__module__", "")
    return mod == "__notebook__"


def probe_preprocess(job, ns, np):
    frames = np.load("in/frames.npz")["frames"]
    cands = find_preprocess(ns)
    if not cands:
        send(ev="preprocess", found=False)
        return
    desc, fn, function, owner = cands[0]
    who = {"name": desc[:200], "function": function and function[:200], "owner": owner and owner[:200]}
    _GLOBALS["__preprocess__"] = None
    outputs = []
    for i in range(frames.shape[0]):
        frame = frames[i].copy()
        try:
            outputs.append(_array_msg(_call_limited(fn, job["call_timeout_s"], frame)))
        except DeadlineExceeded:
            send(ev="preprocess", found=True, error="did not return within %s s" % job["call_timeout_s"], timeout=True, **who)
            return
        except BaseException as exc:
            send(ev="preprocess", found=True, error=_short(exc), cuda=_is_cuda_error(exc),
                 cell=_student_frame_file(exc), line=_student_line(exc), **who)
            return
    send(ev="preprocess", found=True, outputs=outputs, **who)
    _GLOBALS["__preprocess__"] = fn  # the network is also probed on states it builds (job "own_states")


def probe_own_states(job, np, torch, model, seq, info):
    """The network on states stacked from the notebook's own preprocessing of other raw frames;
    returns those states (None when they could not be built)."""
    fn = _GLOBALS.get("__preprocess__")
    order = job["network_order"]
    xo = None
    try:
        net = np.load("in/frames.npz")["net_frames"]
        outs = [torch.as_tensor(_call_limited(fn, job["call_timeout_s"], net[i].copy())).detach().float().cpu()
                for i in range(net.shape[0])]
        xo = torch.stack([torch.stack([outs[order[(i + j) % len(order)]] for j in range(seq)]) for i in range(4)])
        info["own_shape"] = [_int(d) for d in xo.shape][:6]
        with torch.no_grad():
            info["own_batch"] = _array_msg(_call_limited(model, job["call_timeout_s"], xo))
            info["own_single"] = [_array_msg(_call_limited(model, job["call_timeout_s"], xo[i:i + 1])) for i in range(4)]
    except DeadlineExceeded:
        info["own_error"] = "the forward pass did not return within %s s" % job["call_timeout_s"]
    except BaseException as exc:
        info.pop("own_batch", None)
        info["own_single"] = []
        info["own_error"] = _short(exc)
    return xo

def find_network(ns, torch):
    Module = torch.nn.Module
    classes = [v for v in ns.values() if isinstance(v, _type) and _nb_class(v) and issubclass(v, Module)]
    classes.sort(key=lambda c: (c.__name__ != "DQN", "dqn" not in c.__name__.lower()))
    return classes


def _export(torch, model, x, path):
    """None when ``torch.onnx.export`` wrote ``path``, else the error text (TorchScript exporter first, then dynamo)."""
    import contextlib
    import io
    import warnings

    errors = []
    for kwargs in ({"dynamo": False}, {}):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                if kwargs.get("dynamo") is False:
                    torch.onnx.export(model, (x,), path, input_names=["observation"], output_names=["q_values"],
                                      dynamic_axes={"observation": {0: "batch"}, "q_values": {0: "batch"}},
                                      opset_version=17, dynamo=False)
                else:
                    batch = torch.export.Dim("batch", min=1, max=1024)
                    torch.onnx.export(model, (x,), path, input_names=["observation"], output_names=["q_values"],
                                      dynamic_shapes=({0: batch},))
            return None
        except BaseException as exc:
            if isinstance(exc, DeadlineExceeded):
                raise
            errors.append(_short(exc))
    return " / ".join(errors)


def _network_args(ns):
    """``(sequence_size, n_actions)`` of the notebook's params (5, 5 when absent or not ints)."""
    p = _params(ns) or {}
    seq = p.get("sequence_size", 5) if _type(p.get("sequence_size", 5)) is _int else 5
    nact = p.get("n_actions", 5) if _type(p.get("n_actions", 5)) is _int else 5
    return seq, nact


def _construct(job, classes, seq, nact):
    """The first of ``classes`` that builds with the params' arguments (then (5, 5)):
    ``(model, cls, args, None)``, or ``(None, None, None, (name, error, cuda, line))``."""
    arg_sets = [(5, 5)] if (seq, nact) == (5, 5) else [(seq, nact), (5, 5)]
    err = None
    for c in classes[:5]:
        for args in arg_sets:
            try:
                _setitimer(_ITIMER, job["call_timeout_s"])
                model = c(*args)
                _setitimer(_ITIMER, 0)
                return model, c, args, None
            except DeadlineExceeded:
                err = (c.__name__, "constructing it did not finish within %s s" % job["call_timeout_s"], False, None)
            except BaseException as exc:
                _setitimer(_ITIMER, 0)
                if err is None or c is classes[0]:
                    err = (c.__name__, _short(exc), _is_cuda_error(exc), _student_line(exc))
    return None, None, None, err


def _forward(job, model, x, info):
    """The network's outputs on the lesson's states ``x``: the batch, then each state alone."""
    try:
        model.eval()
        with _no_grad():
            info["out_batch"] = _array_msg(_call_limited(model, job["call_timeout_s"], x))
            info["out_single"] = [_array_msg(_call_limited(model, job["call_timeout_s"], x[i:i + 1]))
                                  for i in range(x.shape[0])]
    except DeadlineExceeded:
        info["forward_error"] = "the forward pass did not return within %s s" % job["call_timeout_s"]
    except BaseException as exc:
        info["forward_error"] = _short(exc)
        info["forward_cuda"] = _is_cuda_error(exc)
        info["forward_line"] = _student_line(exc)


def _no_grad():
    import torch

    return torch.no_grad()


def _export_limited(job, torch, model, example, path, name):
    """Export ``model`` on ``example`` to ``path`` and ship it as ``name``: None, or the error text."""
    try:
        _setitimer(_ITIMER, job["export_timeout_s"])
        error = _export(torch, model, example, path)
        _setitimer(_ITIMER, 0)
        return error if error is not None else ship(name, path, job["max_model_bytes"])
    except DeadlineExceeded:
        return "the ONNX export did not finish within %s s" % job["export_timeout_s"]
    except BaseException as exc:
        _setitimer(_ITIMER, 0)
        return _short(exc)


def _export_example(x, own, info):
    """The state the network is exported with: the notebook's own when the network takes it and it
    is not shaped as the lesson's (the student's preprocessing), else the lesson's when the network
    takes that, else the notebook's own when the network takes it; None."""
    own_ok = own is not None and "own_batch" in info
    if own_ok and (own.shape[1:] != x.shape[1:] or "out_batch" not in info):
        info["export_input"] = _array_msg(own[:1])
        return own[:1]
    return x[:1] if "out_batch" in info else None


def _load_weights(torch, wname):
    """A handed-in file's state_dict (unwrapped from a checkpoint dict)."""
    sd = torch.load("in/submission/" + wname, map_location="cpu", weights_only=True)
    if isinstance(sd, _dict) and not any(hasattr(v, "shape") for v in sd.values()):
        for key in ("state_dict", "model_state_dict", "policy", "policy_state_dict", "model"):
            if isinstance(sd.get(key), _dict):
                sd = sd[key]
                break
    if not isinstance(sd, _dict):
        raise TypeError("the file holds a %s, not a state_dict (save it with torch.save(policy.state_dict(), ...))" % _type(sd).__name__)
    return sd


def probe_weights(job, torch, cls, used, x):
    """The trained weights handed in with the notebook: the first file that loads, exported on ``x``."""
    for wname in job["weights"]:
        w = {"ev": "weights", "file": wname}
        try:
            sd = _load_weights(torch, wname)
            m2 = cls(*used)
            m2.load_state_dict(sd, strict=True)
            m2.eval()
            w["export_error"] = _export_limited(job, torch, m2, x[:1], "out/trained.onnx", "trained.onnx")
            w["loaded"] = True
            send(**w)
            break
        except DeadlineExceeded:
            w.update(loaded=False, error="loading or exporting did not finish in time")
            send(**w)
        except BaseException as exc:
            _setitimer(_ITIMER, 0)
            w.update(loaded=False, error=_short(exc))
            send(**w)


def probe_network(job, ns, np):
    """The notebook's network: built, run on the lesson's states (and on its own, job "own_states"),
    exported with fresh weights; then the handed-in weights."""
    import torch

    torch.set_num_threads(1)
    classes = find_network(ns, torch)
    if not classes:
        send(ev="network", found=False)
        return
    seq, nact = _network_args(ns)
    model, cls, used, err = _construct(job, classes, seq, nact)
    if model is None:
        send(ev="network", found=True, name=err[0][:200], constructed=False, error=err[1], cuda=err[2], line=err[3])
        return
    info = {"ev": "network", "found": True, "name": cls.__name__[:200], "args": _list(used), "constructed": True}
    try:
        info["parameters"] = _int(sum(p.numel() for p in model.parameters()))
    except BaseException:
        pass
    x = torch.from_numpy(np.load("in/frames.npz")["states"])
    _forward(job, model, x, info)
    own = None
    if job.get("own_states") and _GLOBALS.get("__preprocess__") is not None:
        own = probe_own_states(job, np, torch, model, seq, info)
    example = _export_example(x, own, info)
    if example is not None:
        info["export_error"] = _export_limited(job, torch, model, example, "out/network.onnx", "network.onnx")
    send(**info)
    probe_weights(job, torch, cls, used, x)


_WATCHED = {
    "sys": ("stdout", "stderr", "stdin", "exit", "excepthook", "modules", "path"),
    "os": ("_exit", "write", "read", "open", "close", "kill", "fork", "system", "getpid", "environ"),
    "json": ("dumps", "loads", "dump", "load", "JSONEncoder", "JSONDecoder"),
}


# the runner's own functions and values: replacing them (or their code) is reported as forgery
_OWN = ("send", "ship", "_enc", "_esc", "_write", "_exit", "_FD", "_BLOB_FD", "_forked_child_guard", "_MAIN_PID",
        "run_definitions", "probe_preprocess", "probe_network", "probe_own_states", "find_preprocess", "find_network",
        "probe_weights", "_network_args", "_construct", "_forward", "_no_grad", "_export_limited", "_export_example",
        "_load_weights",
        "_array_msg",
        "_to_numpy", "_export", "_call_limited", "_params", "_restore", "main")


def _snapshot():
    import json

    mods = {"sys": sys, "os": os, "json": json}
    snap = {"builtins": dict(builtins.__dict__)}
    for name, attrs in _WATCHED.items():
        snap[name] = {a: getattr(mods[name], a) for a in attrs if hasattr(mods[name], a)}
    g = globals()
    snap["runner"] = {n: (g[n], getattr(g[n], "__code__", None)) for n in _OWN}
    return mods, snap


def _restore_own(own):
    changed = []
    g = globals()
    for n, (obj, code) in own.items():
        if g.get(n, _MISSING) is not obj or (code is not None and obj.__code__ is not code):
            changed.append("runner." + n)
            g[n] = obj
            if code is not None:
                obj.__code__ = code
    return changed


def _restore(mods, snap):
    """Put back builtins and the watched module attributes; return what the notebook had replaced."""
    changed = []
    cur = builtins.__dict__
    for k, v in snap["builtins"].items():
        if cur.get(k, _MISSING) is not v:
            changed.append("builtins." + k)
            cur[k] = v
    changed += _restore_own(snap["runner"])
    for name, attrs in snap.items():
        if name in ("builtins", "runner"):
            continue
        for a, v in attrs.items():
            if getattr(mods[name], a, _MISSING) is not v:
                changed.append(name + "." + a)
                setattr(mods[name], a, v)
    return changed


_MISSING = object()


def _reap_others():
    """Inside bubblewrap's pid namespace only: kill every process but this one (a fork bomb's children)."""
    if os.environ.get("GRADER_SANDBOX_MODE") != "bwrap" or _getpid() > 16:
        return
    for _ in range(5):
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            break
        time.sleep(0.02)


def main():
    with open(sys.argv[1], "rb") as f:
        raw = f.read()
    import json

    job = json.loads(raw)
    os.makedirs("out", exist_ok=True)
    ns = {"__name__": "__notebook__", "__builtins__": builtins}
    _GLOBALS.clear()
    mods, snap = _snapshot()
    run_definitions(job, ns)
    _setitimer(_ITIMER, 0)
    signal.signal(signal.SIGALRM, _alarm)
    _reap_others()
    changed = _restore(mods, snap)
    if changed:
        own = [c for c in changed if c.startswith("runner.")]
        send(ev="tampered", names=(own + sorted(c for c in changed if c not in own))[:20])
    _GLOBALS.update(ns)
    send(ev="definitions_done", params=_params(ns))
    import numpy as np

    if job.get("probe_preprocess"):
        probe_preprocess(job, ns, np)
    if job.get("probe_network"):
        probe_network(job, ns, np)
    send(ev="done")


try:
    main()
except BaseException as exc:  # noqa: BLE001 - report, never a traceback to the parent
    try:
        send(ev="crash", error=_short(exc))
    except BaseException:
        pass
_exit(0)
