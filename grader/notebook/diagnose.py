"""Preprocessing diagnosis: which of the lesson's steps a student's output is consistent with.

The student's frames are compared with :func:`grader.tasks.mspacman.preprocess_frames`. When they
differ, a small grid of plausible variants of each step (grayscale, crop, border, stride,
scaling) is searched for the one that reproduces the student's output, and the steps that differ
from the lesson's are named. All of this runs in the grader process on numbers the sandbox sent;
the reference outputs are never shipped into the sandbox.

:func:`follows_frames` decides whether outputs are a preprocessing of the given frames at all
(evidence that they came from the student's function, not from a forged report).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from grader.tasks.mspacman import BORDER_VALUE, preprocess_frames

TOLERANCE = 0.01  # outputs are whole numbers 0..255: anything closer than this is equal
MIN_CORRELATION = 0.5  # outputs this correlated with the frames' grayscale follow the frames

_GRAYS = {
    "mean_trunc": ("the channel mean cast to uint8 (truncation)", lambda f: np.floor(f.mean(axis=2))),
    "mean_round": ("the channel mean ROUNDED to the nearest integer instead of truncated by the uint8 cast",
                   lambda f: np.round(f.mean(axis=2))),
    "mean_float": ("the channel mean kept as a fraction (no cast to uint8 before cropping)", lambda f: f.mean(axis=2)),
    "lum_trunc": ("weighted luminance (0.299 R + 0.587 G + 0.114 B) instead of the plain channel mean",
                  lambda f: np.floor(f @ np.array([0.299, 0.587, 0.114]))),
    "lum_round": ("weighted luminance rounded (what cv2.cvtColor(..., COLOR_RGB2GRAY) / PIL convert('L') give) instead of the plain channel mean",
                  lambda f: np.round(f @ np.array([0.299, 0.587, 0.114]))),
    "lum_float": ("weighted luminance (0.299 R + 0.587 G + 0.114 B) instead of the plain channel mean",
                  lambda f: f @ np.array([0.299, 0.587, 0.114])),
    "red": ("only the first (red) channel instead of the mean of the three", lambda f: f[:, :, 0].astype(np.float64)),
}
_CROPS = [(1, 171), (0, 170), (2, 172), (0, 171), (1, 170), (0, 172), (0, 210), (1, 169), (0, 168), (3, 173), (4, 174)]
_BORDERS = [BORDER_VALUE, 0.0, None, 255.0]
_SCALES = [1.0, 1.0 / 255.0]


@dataclass
class Diagnosis:
    matches: bool  # equal to the reference on every frame
    max_abs_diff: float | None
    frac_equal: float | None
    steps: list[str]  # what differs, one line per step, for the message
    hints: list[str]
    variant: dict | None = None


def _variant(gray: np.ndarray, crop, border, r0, c0, scale) -> np.ndarray:
    g = gray[crop[0]:crop[1]]
    if border is not None:
        pad = np.full((2, g.shape[1]), border)
        g = np.concatenate([pad, g, pad])
    return g[r0::4, c0::4] * scale


def _describe(v: dict) -> tuple[list[str], list[str]]:
    steps, hints = [], []
    if v["gray"] != "mean_trunc":
        steps.append("grayscale: " + _GRAYS[v["gray"]][0])
        hints.append("grayscale as in the lesson: observation.float().mean(dim=2).type(torch.uint8) (mean of R, G, B, then truncate)")
    if v["crop"] != (1, 171):
        a, b = v["crop"]
        steps.append(f"crop: rows [{a}:{b}] instead of [1:171]" + (" (no crop)" if (a, b) == (0, 210) else ""))
        hints.append("crop the rows [1:171] (170 rows, the maze without the score bar) after the grayscale step")
    if v["border"] != BORDER_VALUE:
        steps.append("border: none (the 2 rows of 150 above and below are missing)" if v["border"] is None
                     else f"border: value {v['border']:g} instead of 150")
        hints.append("add 2 rows of value 150 above and below the cropped image: "
                     "torch.cat([border, observation, border]) with border = torch.full((2, 160), 150)")
    if (v["r0"], v["c0"]) != (1, 1):
        steps.append(f"stride: [{v['r0'] or ''}::4, {v['c0'] or ''}::4] instead of [1::4, 1::4]")
        hints.append("downsample with [1::4, 1::4] (every 4th row and column starting at 1), after adding the border")
    if v["scale"] != 1.0:
        steps.append("scaling: values divided by 255 (the lesson keeps 0..255)")
        hints.append("do not divide by 255: the network was designed for values 0..255 (the ONNX input is fed raw 0..255 frames)")
    return steps, hints


def diagnose_preprocessing(frames: np.ndarray, outputs: list[np.ndarray]) -> Diagnosis:
    """``frames`` (n, 210, 160, 3) uint8; ``outputs`` the student's arrays, one per frame."""
    ref = preprocess_frames(frames)
    shapes = {o.shape for o in outputs}
    max_diff: float | None = None
    frac: float | None = None
    if all(o.shape == (44, 40) for o in outputs):
        diffs = [np.abs(o.astype(np.float64) - r) for o, r in zip(outputs, ref)]
        max_diff = float(max(np.nanmax(d) if np.isfinite(d).any() else np.inf for d in diffs))
        frac = float(np.mean([np.mean(d <= TOLERANCE) for d in diffs]))
        if max_diff <= TOLERANCE:
            return Diagnosis(True, max_diff, frac, [], [])
    # search the variants on two frames with content, confirm on all
    squeezed = [np.squeeze(o) if o.ndim > 2 else o for o in outputs]
    if any(s.ndim != 2 for s in squeezed) or len({s.shape for s in squeezed}) != 1:
        return Diagnosis(False, max_diff, frac, [f"output shape {sorted(shapes)[0]} cannot be compared with (44, 40)"], [])
    target_shape = squeezed[0].shape
    order = sorted(range(len(frames)), key=lambda i: -int(frames[i].std()))[:2]
    grays = {name: [fn(frames[i].astype(np.float64)) for i in range(len(frames))] for name, (_, fn) in _GRAYS.items()}
    scored = []
    a = order[0]
    for gname, crop, border, r0, c0, scale in itertools.product(_GRAYS, _CROPS, _BORDERS, range(4), range(4), _SCALES):
        cand = _variant(grays[gname][a], crop, border, r0, c0, scale)
        if cand.shape != target_shape:
            continue
        score = float(np.mean(np.abs(cand - squeezed[a]) <= TOLERANCE * scale))
        if score >= 0.9:
            v = dict(gray=gname, crop=crop, border=border, r0=r0, c0=c0, scale=scale)
            scored.append((score, -len(_describe(v)[0]), v))
    # confirm the candidates on the second frame, keep the best, fewest differing steps first
    confirmed = []
    for score, neg_steps, v in scored:
        for i in [j for j in range(len(frames)) if j != a]:
            cand = _variant(grays[v["gray"]][i], v["crop"], v["border"], v["r0"], v["c0"], v["scale"])
            score += float(np.mean(np.abs(cand - squeezed[i]) <= TOLERANCE * v["scale"]))
        confirmed.append((round(score, 3), neg_steps, v))
    # ties: fewest differing steps, then the stride explanation last (columns of the Atari screen come in
    # pairs, so [::4] and [1::4] often agree), then the lesson's column offset
    confirmed.sort(key=lambda t: (-t[0], -t[1], t[2]["r0"] != 1, t[2]["c0"] != 1))
    if not confirmed:
        return Diagnosis(False, max_diff, frac, ["no combination of the lesson's steps (grayscale, crop, border, "
                                                 "stride, scaling) reproduces the output"], [])
    best = confirmed[0][2]
    alternatives = [v for sc, ns, v in confirmed[1:4] if sc == confirmed[0][0] and ns == confirmed[0][1]]
    # confirm on all frames
    all_fit = np.mean([np.mean(np.abs(_variant(grays[best["gray"]][i], best["crop"], best["border"], best["r0"], best["c0"],
                                               best["scale"]) - squeezed[i]) <= TOLERANCE * best["scale"])
                       for i in range(len(frames))])
    steps, hints = _describe(best)
    if not steps:  # squeezed matches the reference: an extra axis only
        steps = ["an extra axis of size 1"]
        hints = ["return a 2-D (44, 40) array per frame; the frame stack adds the 5-frame axis"]
    if all_fit < 0.98:
        steps = [s + " (approximately)" for s in steps]
    for alt in alternatives:
        alt_steps = _describe(alt)[0]
        if alt_steps and alt_steps != steps:
            steps.append("or equally: " + ", ".join(alt_steps))
    best["crop"] = list(best["crop"])
    return Diagnosis(False, max_diff, frac, steps, hints, best)


# Row windows a student's own preprocessing may crop before resizing (the lesson's, the DQN paper's
# 34..193, the maze without the score bar, ...): follows_frames tries each.
_WINDOWS = [(top, bottom) for top in (0, 1, 2, 17, 26, 34) for bottom in (160, 170, 171, 172, 185, 194, 195)]


def _resampled_gray(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Each frame's channel mean, nearest-neighbour resampled to ``shape``."""
    gray = frames.astype(np.float64).mean(axis=3)
    rows = np.arange(shape[0]) * gray.shape[1] // shape[0]
    cols = np.arange(shape[1]) * gray.shape[2] // shape[1]
    return gray[:, rows][:, :, cols]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if not (np.isfinite(a).all() and a.std() > 0 and b.std() > 0):
        return 0.0
    return float(abs(np.corrcoef(a, b)[0, 1]))


def _variant_outputs(frames: np.ndarray, v: dict) -> np.ndarray:
    gray = _GRAYS[v["gray"]][1]
    return np.stack([_variant(gray(f.astype(np.float64)), v["crop"], v["border"], v["r0"], v["c0"], v["scale"]) for f in frames])


def follows_frames(frames: np.ndarray, outputs: list[np.ndarray], diag: Diagnosis) -> bool:
    """True when ``outputs`` change from frame to frame as the frames do: the part of each output
    that differs from the outputs' mean correlates with the same part of the reference, of the
    diagnosed variant, or of the frames' grayscale resampled to the output's shape. Constant
    arrays, noise, or the preprocessing of other frames do not; any genuine preprocessing does."""
    squeezed = [np.squeeze(o) for o in outputs]
    if len(squeezed) < 2 or any(s.ndim != 2 or s.shape != squeezed[0].shape or 0 in s.shape for s in squeezed):
        return False
    stacked = np.stack(squeezed)
    shape = (squeezed[0].shape[0], squeezed[0].shape[1])  # 2-D, checked above
    candidates = [_resampled_gray(frames, shape)]
    candidates += [_resampled_gray(frames[:, top:bottom], shape) for top, bottom in _WINDOWS]  # a crop, then a resize
    if shape == (44, 40):
        candidates.append(preprocess_frames(frames))
    if diag.variant is not None:
        candidates.append(_variant_outputs(frames, diag.variant))
    moving = stacked - stacked.mean(axis=0)
    return max(_correlation(moving, c - c.mean(axis=0)) for c in candidates if c.shape == stacked.shape) >= MIN_CORRELATION
