"""Duplicate flags for the instructor's page, with :mod:`grader.classroom.duplicates`, the batch grader's rules.

``grade batch`` flags pairs of students whose files are ``identical`` (sha256), have the
``same_weights`` (the weights the graph uses, tensor by tensor) or the same ``behaviour`` (argmax
actions on a fixed probe set), and pairs of a student and a reference model. The site does the
same over its own attempts under its rubric:

* every distinct (student, file) among the attempts is a candidate;
* the used weights' prints (:func:`grader.classroom.duplicates.weight_prints`) come from the attempt's
  ``extra`` (when the grading loop stored them), else they are computed once from the stored
  upload and kept in ``site_fingerprints``;
* actions come from the attempt's ``extra`` when the grading loop stored them (same probe set);
  otherwise no behaviour flag is computed (it needs the sandboxed engine);
* the task's reference models (``reference/models/*.onnx``) take part with their sha256 and
  weights, so an upload of a copy of a reference agent is flagged.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.site.state import Site

log = logging.getLogger("grader.site")


def site_reference_candidates(reference_dir: Path | None, rubric) -> list:
    """The task's reference models as :class:`grader.classroom.duplicates.Candidate` (sha256 and weights, no actions)."""
    from grader.classroom.duplicates import reference_candidates

    if reference_dir is None:
        from grader.resources import reference_models_dir

        reference_dir = reference_models_dir()
    try:
        # No probe states: the site does not start an engine for the references.
        return reference_candidates(Path(reference_dir), rubric.task, None)
    except Exception:  # noqa: BLE001 - flags are advice; the page must still show
        log.exception("reading the reference models failed")
        return []


def _weights(site: Site, sha256: str, extra: dict, known: dict[str, str | None]) -> list | None:
    """The upload's weight prints: from the attempt's ``extra``, else from ``site_fingerprints``
    (JSON of the current version), else computed once from the stored upload and kept there."""
    import json

    from grader.classroom.duplicates import extra_for, prints_from_extra
    from grader.submission.weights import weight_prints

    prints = prints_from_extra(extra)
    if prints:
        return prints
    try:
        stored = prints_from_extra(json.loads(known.get(sha256) or "{}"))
    except (ValueError, AttributeError):
        stored = None  # an older fingerprint (a bare hash): computed again below
    if stored is not None or (sha256 in known and known[sha256] == _NONE):
        return stored
    path = site.uploads / f"{sha256}.onnx"  # derived from the hash: never a path from the database
    weights = None
    if len(sha256) == 64 and path.is_file():
        try:
            weights = weight_prints(path.read_bytes())
        except Exception:  # noqa: BLE001 - an unreadable model simply has no prints
            weights = None
        text = json.dumps(extra_for(weights, None, "")) if weights else _NONE
        site.store.set_fingerprint(sha256, text)
        known[sha256] = text
    return weights


_NONE = '{"none": true}'  # stored for an upload without usable weights: not recomputed on every page


def attempt_flags(site: Site, attempts: list) -> dict[int, list[dict]]:
    """Attempt id -> its flags, for the attempts of the site's rubric.

    Each flag is ``{"kind", "label", "other", "short", "text", "cluster"}``: the kind
    (``identical``, ``same_weights``, ``behaviour``), its label for the pill (``behaviour 97%``),
    the other side's label (a student id or ``reference:<file>``), a short form of it for the
    table, a sentence for tooltips and the CSV, and the number of its cluster (the batch's rules:
    copies grouped, strongest evidence first).
    """
    from grader.classroom.duplicates import Candidate, actions_from_extra, find_duplicates

    mine = [a for a in attempts if a.rubric_id == site.rubric.id and a.sha256]
    if not mine:
        return {}
    extras = {a.id: (a.extra or {}) for a in mine}
    probe_ids = Counter(e.get("probe_id") for e in extras.values() if e.get("probe_id") and e.get("actions"))
    probe_id = probe_ids.most_common(1)[0][0] if probe_ids else ""
    known = site.store.fingerprints()
    by_key: dict[tuple[str, str], list[int]] = {}
    candidates = []
    for a in sorted(mine, key=lambda a: a.id):
        key = (a.student, str(a.sha256))
        if key in by_key:
            by_key[key].append(a.id)
            continue
        by_key[key] = [a.id]
        extra = extras[a.id]
        candidates.append(Candidate(label=key[0], file=f"#{a.id}", sha256=key[1],
                                    weights=_weights(site, key[1], extra, known),
                                    actions=actions_from_extra(extra, probe_id) if probe_id else None))
    candidates += site.references()
    report = find_duplicates(candidates)
    out: dict[int, list[dict]] = {}
    for f in report.flags:
        for me, other in ((f.a, f.b), (f.b, f.a)):
            if me.is_reference:
                continue
            who = other.label if other.is_reference else f"{other.label} ({other.file})"
            kind = f.kind.replace("_", " ")
            text = f"{kind} with {who}" + (f": {f.detail}" if f.kind == "behaviour" and f.detail else "")
            short = f"ref. {Path(other.label.split(':', 1)[1]).stem}" if other.is_reference else f"{other.label} {other.file}"
            label = f"{kind} {100 * f.agreement:.0f}%" if f.kind == "behaviour" and f.agreement else kind
            for aid in by_key.get((me.label, me.sha256), []):
                out.setdefault(aid, []).append({"kind": f.kind, "label": label, "other": other.label, "short": short,
                                                "text": text, "cluster": f.cluster})
    _grading_flags(mine, out)
    return out


def _grading_flags(attempts: list, out: dict[int, list[dict]]) -> None:
    """The flags each grading recorded itself (a copy of one of the rubric's reference models,
    ``GradeResult.flags``), where the comparison above did not already find them (the rubric may
    name references that are not among the site's shipped models)."""
    from grader.result import GradeResult

    for a in attempts:
        text = a.result_json
        if not text:
            continue
        try:
            flags = GradeResult.from_json(text).flags
        except ValueError:
            continue
        aid = a.id
        for flag in flags:
            if any(f["other"] == flag.other for f in out.get(aid, [])):
                continue
            kind = flag.kind.replace("_", " ")
            short = f"ref. {Path(flag.other.split(':', 1)[-1]).stem}"
            out.setdefault(aid, []).append({"kind": flag.kind, "label": kind, "other": flag.other, "short": short,
                                            "text": flag.text, "cluster": flag.other})
