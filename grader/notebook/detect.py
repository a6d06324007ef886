"""Which task a notebook is for, read from its text (``--task`` overrides)."""

from __future__ import annotations

import re

_MARKERS = {
    "mspacman": [r"MsPacman", r"\bDQN\b", r"preprocess_observation", r"ReplayMemory", r"nn\.Conv2d", r"ale_py",
                 r"sequence_size", r"\bnn\.Module\b"],
    "lunarlander": [r"LunarLander", r"\bkeras\b", r"actor_model", r"critic_model", r"layers\.Dense", r"num_inputs\s*=\s*8",
                    r"\.export\(\s*[\"'][^\"']*\.onnx"],
}


def detect_task(text: str) -> tuple[str | None, dict[str, int]]:
    scores = {task: sum(1 for pat in pats if re.search(pat, text)) for task, pats in _MARKERS.items()}
    # the environment id is decisive when only one appears
    if re.search(r"MsPacman", text) and not re.search(r"LunarLander", text):
        scores["mspacman"] += 5
    if re.search(r"LunarLander", text) and not re.search(r"MsPacman", text):
        scores["lunarlander"] += 5
    best = max(scores, key=scores.get)
    if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
        return None, scores
    return best, scores
