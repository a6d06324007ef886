"""Diagnostics: what each scored episode did, and what that says about the policy.

The facts are collected in the worker during the one scored play of each episode
(:func:`grader.runtime.episodes.run_episodes` with ``on_facts``: the actions chosen, the policy's confidence,
and the task's own :class:`~grader.tasks.base.Tracker`); they reach the parent as small plain
data per episode. This module turns them into a :class:`grader.result.Diagnostics`: outcome
counts and shares with the mean return per outcome, action usage per episode and overall, a
collapsed policy named, the policy's confidence, the dominant failure's hint and the terminal's
two lines. The task's outcome rules live in its module (:attr:`Task.outcomes`, its tracker, its
:meth:`Task.refine`); nothing here names a task.

Facts are untrusted (a worker taken over by the model could forge them): every field is checked
and anything malformed is dropped, never trusted for the grade (the returns do not depend on them).
"""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace
from typing import Any

from grader.result import ActionUsage, Confidence, Diagnostics, EpisodeDiagnostics, GradeResult, LifeLoss, OutcomeStat

COLLAPSE_SHARE = 0.95  # one action for at least this share of the decisions: a collapsed policy
HINT_MIN_SHARE = 0.10  # the dominant failure gets a hint when at least this share of episodes fail that way
MAX_LIVES = 32
MAX_DROUGHTS = 10
MAX_END_FACTS = 16
UNKNOWN = "unknown"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _int(v: Any, default: int = 0) -> int:
    return v if type(v) is int and 0 <= v < 2**40 else default


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _episode(task, index: int, facts: Any, ret: float, known: set[str]) -> EpisodeDiagnostics:
    f = _dict(facts)
    raw = f.get("actions")
    counts = [_int(c) for c in raw] if isinstance(raw, list) and len(raw) == task.n_actions else [0] * task.n_actions
    t = _dict(f.get("task"))
    outcome = t.get("outcome") if t.get("outcome") in known else UNKNOWN
    end_raw = _dict(t.get("end"))
    end = {str(k)[:32]: v for k, v in ((k, _num(x)) for k, x in list(end_raw.items())[:MAX_END_FACTS]) if v is not None}
    lives = []
    for item in _list(t.get("lives"))[:MAX_LIVES]:
        if isinstance(item, list) and len(item) == 3 and _num(item[2]) is not None:
            lives.append(LifeLoss(decision=_int(item[0]), step=_int(item[1]), score=_num(item[2])))
    droughts = [[_int(x) for x in d] for d in _list(t.get("droughts"))[:MAX_DROUGHTS]
                if isinstance(d, list) and len(d) == 3]
    life_scores: list[float] = []
    if lives:
        marks = [0.0] + [x.score for x in lives] + ([ret] if outcome != UNKNOWN and ret > lives[-1].score else [])
        life_scores = [round(b - a, 3) for a, b in zip(marks, marks[1:])]
    conf = _num(f.get("confidence"))
    return EpisodeDiagnostics(episode=index + 1, outcome=outcome, return_=ret, decisions=_int(f.get("decisions"), sum(counts)),
                              actions=counts, confidence=conf, end=end, lives=lives, life_scores=life_scores,
                              droughts=droughts)


def diagnose_episodes(task, facts: list[Any], returns: list[float]) -> Diagnostics | None:
    """The generic diagnostics of ``task``'s episodes (None when there are no facts at all)."""
    if not returns or not any(isinstance(f, dict) for f in facts):
        return None
    known = {o.key for o in task.outcomes}
    episodes = [_episode(task, i, f, float(r), known) for i, (f, r) in enumerate(zip(facts, returns))]
    total = len(episodes)
    outcomes = []
    defs = list(task.outcomes)
    if any(e.outcome == UNKNOWN for e in episodes):  # an Outcome's fields (no import of the tasks: no cycle)
        defs.append(SimpleNamespace(key=UNKNOWN, label="not classified", success=False, hint=""))
    for o in defs:
        mine = [e for e in episodes if e.outcome == o.key]
        end: dict[str, float] = {}
        for name in (mine[0].end if mine else {}):
            values = [e.end[name] for e in mine if name in e.end]
            end[name] = round(sum(values) / len(values), 4)
        outcomes.append(OutcomeStat(key=o.key, label=o.label, success=o.success, count=len(mine),
                                    share=round(len(mine) / total, 4),
                                    mean_return=round(sum(e.return_ for e in mine) / len(mine), 3) if mine else None,
                                    end=end))
    names = list(task.action_names) if len(task.action_names) == task.n_actions else [f"action {i}" for i in range(task.n_actions)]
    counts = [sum(e.actions[a] for e in episodes) for a in range(task.n_actions)]
    decisions = sum(counts)
    shares = [round(c / decisions, 4) if decisions else 0.0 for c in counts]
    usage = ActionUsage(names=names, counts=counts, shares=shares)
    collapsed, collapse = False, ""
    if decisions:
        top = max(range(len(counts)), key=lambda a: counts[a])
        if shares[top] >= COLLAPSE_SHARE:
            collapsed = True
            collapse = (f"collapsed policy: it chooses {names[top]!r} for {100 * shares[top]:.0f}% of its decisions, "
                        "whatever the state; check the exported network (the right output, the weights of the "
                        "trained model), then keep exploring longer (an entropy bonus or a slower epsilon decay)")
    confidence = _confidence([f if isinstance(f, dict) else {} for f in facts], episodes, task.n_actions)
    hint = _dominant_failure(outcomes, total, defs)
    diag = Diagnostics(outcomes=outcomes, actions=usage, collapsed=collapsed, collapse=collapse, confidence=confidence,
                       hint=hint, episodes=episodes)
    diag.summary = summary_lines(task, diag)
    return diag


def _confidence(facts: list[dict], episodes: list[EpisodeDiagnostics], n_actions: int) -> Confidence | None:
    kinds = Counter(f.get("measure") for f in facts if f.get("measure") in ("entropy", "gap"))
    if not kinds:
        return None
    measure = kinds.most_common(1)[0][0]
    weighted = [(e.confidence, e.decisions) for e, f in zip(episodes, facts)
                if f.get("measure") == measure and e.confidence is not None and e.decisions]
    n = sum(w for _, w in weighted)
    if not n:
        return None
    mean = sum(c * w for c, w in weighted) / n
    if measure == "entropy":
        top = math.log(max(2, n_actions))  # a uniform choice
        words = "confident" if mean < 0.3 * top else ("undecided" if mean > 0.85 * top else "fairly confident")
        text = f"{words} (mean entropy {mean:.2f} nats; uniform is {top:.2f})"
    else:
        words = "near ties between the two best actions" if mean < 1e-3 else "margin"
        text = f"mean gap between the two best actions {mean:.3g}" + (f" ({words})" if mean < 1e-3 else "")
    return Confidence(measure=measure, mean=round(mean, 6), text=text)


def _dominant_failure(outcomes: list[OutcomeStat], total: int, defs) -> str:
    failures = [o for o in outcomes if not o.success and o.key != UNKNOWN and o.count]
    if not failures:
        return ""
    worst = max(failures, key=lambda o: o.count)
    if worst.count < max(1, HINT_MIN_SHARE * total):
        return ""
    template = next((d.hint for d in defs if d.key == worst.key), "")
    if not template:
        return ""
    return template.format(n=worst.count, total=total, pct=f"{100 * worst.share:.0f}%")


def summary_lines(task, diag: Diagnostics) -> list[str]:
    """Two lines: the outcomes (the task's wording), then the actions and the confidence."""
    lines = [task.outcome_line(diag)]
    used = sorted(zip(diag.actions.names, diag.actions.shares), key=lambda x: -x[1])
    acts = "actions: " + ", ".join(f"{name} {100 * share:.0f}%" for name, share in used if share > 0)
    if diag.collapsed:
        acts += "; COLLAPSED"
    if diag.confidence is not None:
        acts += f"; {diag.confidence.text}"
    lines.append(acts)
    return [line for line in lines if line]


def outcome_of(result: GradeResult, seed: int) -> str:
    """The outcome label of the episode played on ``seed`` (for labelling videos), or ``""``."""
    d = result.diagnostics
    if d is None:
        return ""
    index = next((i for i, e in enumerate(result.episodes) if e.seed == seed), None)
    if index is None or index >= len(d.episodes):
        return ""
    key = d.episodes[index].outcome
    return next((o.label for o in d.outcomes if o.key == key), key)


# --- a class ------------------------------------------------------------------------------------------
def class_summary(results: list[tuple[str, GradeResult | None]]) -> dict[str, Any]:
    """The class's distribution of outcomes and of collapsed policies.

    ``results`` are ``(student, result)`` pairs. Returns ``{"students": n with diagnostics,
    "outcomes": [{label, episodes, share, students}] (students: whose most common outcome it is),
    "collapsed": [students], "failures": [{hint-free label, students}]}``."""
    episodes: Counter = Counter()
    dominant: Counter = Counter()
    labels: dict[str, tuple[str, bool]] = {}
    order: list[str] = []
    collapsed: list[str] = []
    n = 0
    for student, result in results:
        d = result.diagnostics if result is not None else None
        if d is None:
            continue
        n += 1
        for o in d.outcomes:
            if o.key not in labels:
                labels[o.key] = (o.label, o.success)
                order.append(o.key)
            episodes[o.key] += o.count
        best = max(d.outcomes, key=lambda o: o.count, default=None)
        if best is not None and best.count:
            dominant[best.key] += 1
        if d.collapsed:
            collapsed.append(student)
    all_episodes = sum(episodes.values()) or 1
    rows: list[dict[str, Any]] = [{"key": k, "label": labels[k][0], "success": labels[k][1], "episodes": episodes[k],
             "share": episodes[k] / all_episodes, "students": dominant[k]} for k in order if episodes[k]]
    common = max((r for r in rows if not r["success"]), key=lambda r: r["students"], default=None)
    return {"students": n, "outcomes": rows, "collapsed": collapsed,
            "common_failure": common if common and common["students"] else None}
