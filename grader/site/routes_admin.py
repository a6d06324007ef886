"""The instructor's pages (instructor token only).

    GET  /admin                     every submission, with the duplicate flags of grader.classroom.duplicates
    POST /admin/regrade/{id}        queue a submission again (CSRF field)
    POST /admin/token               a new token for one student (CSRF field; ends their sessions)
    GET  /admin/export.csv[?best=1] all submissions, or each student's best (with overrides)
    POST /admin/override            set a student's points with a comment, or clear them (CSRF field)

``/admin?sort=points`` (default) or ``?sort=stat`` orders the class standing by the points or by
the rubric's episode statistic.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from grader.classroom.gradebook import Attempt
from grader.outputs.textsafe import csv_cell
from grader.site.auth import csrf_ok
from grader.site.flags import attempt_flags
from grader.site.forms import small_form
from grader.site.state import Site, attempt_row, get_session, get_site, require_admin, summary_value
from grader.site.store import ADMIN_USER, Session, TokenError

router = APIRouter()

EXPORT_COLUMNS = ["attempt_id", "student", "name", "pseudonym", "submitted", "finished", "status", "score", "max_score",
                  "band", "sha256", "error", "flags", "late_penalty", "override_points", "override_comment", "override_by"]


@router.get("/admin", response_class=HTMLResponse)
def admin(request: Request, site: Site = Depends(get_site), session: Session = Depends(require_admin)):
    roster = site.store.students()
    attempts = site.gb().attempts()
    flags = attempt_flags(site, attempts)
    rows = []
    for a in reversed(attempts):
        row = attempt_row(a, site.rubric)
        s = roster.get(row["student"])
        row.update(name=s.name if s else "", pseudonym=site.pseudonym(row["student"], roster), flags=flags.get(row["id"], []))
        rows.append(row)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    sort = "stat" if request.query_params.get("sort") == "stat" else "points"
    return site.render(request, "admin.html", rows=rows, counts=counts, n_students=len(roster), diag=_class_diagnostics(attempts),
                       standing=_standing(site, roster, sort), sort=sort,
                       n_flagged=sum(1 for r in rows if r["flags"]),
                       n_clusters=len({f["cluster"] for fl in flags.values() for f in fl}),
                       busy=sorted(site.pool.busy.values()) if site.pool else [], rubric=site.rubric,
                       message=request.query_params.get("message", "")[:200])


def _standing(site: Site, roster: dict, sort: str) -> list[dict]:
    """Each student's best graded submission, ranked by points or by the episode statistic, with
    the mean return's 95% interval, the late penalty and any override."""
    overrides = site.gb().overrides(site.rubric.id)
    rows = []
    for rank, a in enumerate(site.leaderboard(sort=sort), start=1):
        sid = a.student
        st = roster.get(sid)
        o = overrides.get(sid)
        rows.append({"rank": rank, "student": sid, "name": st.name if st else "", "id": a.id,
                     "score": a.score or 0.0, "stat": summary_value(a, site.rubric.scoring.statistic),
                     "mean": summary_value(a, "mean"), "ci_low": summary_value(a, "ci_low"),
                     "ci_high": summary_value(a, "ci_high"), "late": _late_penalty(a), "override": o,
                     "drift": o.drift(a.score) if o is not None else ""})
    return rows


def _late_penalty(a: Attempt) -> float | None:
    try:
        result = a.result()
    except (AttributeError, ValueError):
        return None
    part = next((p for p in result.parts if p.kind == "late"), None) if result is not None else None
    return part.points if part is not None else None


@router.post("/admin/override")
async def override(request: Request, site: Site = Depends(get_site), session: Session | None = Depends(get_session)):
    """The instructor's points for a student, with a comment (empty points clear the override)."""
    from grader.classroom.overrides import OverrideError, check_override

    form = await _admin_form(request, site, session)
    if isinstance(form, Response):
        return form
    student = (form.get("student") or "").strip()
    points_text = (form.get("points") or "").strip().replace(",", ".")
    comment = (form.get("comment") or "").strip()
    if student not in site.store.students():
        return site.message(request, 404, f"No student {student[:64]!r} on the roster.", back="/admin")

    def apply() -> str:
        gb, rid = site.gb(), site.rubric.id
        if not points_text:
            return "cleared" if gb.clear_override(student, rid) else "had no override"
        points = float(points_text)
        check_override(points, comment, max_points=site.rubric.max_points, where="override")
        best = gb.best_by_student(rid).get(student)
        graded = best.score if best is not None and best.status == "graded" else None
        gb.set_override(student, rid, points, comment, set_by="instructor (site)", graded_points=graded)
        return f"set to {points:g}"

    try:
        done = await run_in_threadpool(apply)
    except ValueError as exc:  # OverrideError, or points that are not a number
        text = str(exc) if isinstance(exc, OverrideError) else f"points {points_text[:20]!r} is not a number"
        return site.message(request, 400, text, back="/admin")
    site._bump(0)
    return RedirectResponse(f"/admin?message=override+for+{student}+{done.replace(' ', '+')}", status_code=303)


def _class_diagnostics(attempts: list[Attempt]) -> dict:
    """The class's outcomes and collapsed policies, from each student's latest graded attempt."""
    from grader.tasks.diagnostics import class_summary

    latest: dict[str, Attempt] = {}
    for a in attempts:  # oldest first: a later attempt replaces an earlier one
        if a.status == "graded" and hasattr(a, "result"):
            latest[a.student] = a
    results = []
    for student, a in latest.items():
        try:
            results.append((student, a.result()))
        except ValueError:  # an unreadable stored result: shown elsewhere, not counted here
            continue
    return class_summary(results)


async def _admin_form(request: Request, site: Site, session: Session | None) -> dict[str, str] | Response:
    """The instructor's form, or the page refusing it (not the instructor, no or wrong CSRF token)."""
    form = await small_form(request)
    if session is None or session.user != ADMIN_USER:
        return site.message(request, 403, "This needs the instructor token.", heading="Instructors only")
    if form is None or not csrf_ok(session, form.get("csrf")):
        return site.message(request, 403, "Missing or wrong form token (CSRF).")
    return form


@router.post("/admin/regrade/{attempt_id}")
async def regrade(request: Request, attempt_id: int, site: Site = Depends(get_site),
                  session: Session | None = Depends(get_session)):
    form = await _admin_form(request, site, session)
    if isinstance(form, Response):
        return form

    def requeue() -> int | None:
        a = site.gb().get(attempt_id)
        if a is None:
            return None
        # Same rubric version: the row is reset to queued; a changed rubric file: a new row.
        new_id = site.gb().enqueue(a.student, a.file, str(a.sha256), site.key, force=True)
        site.store.mark_regrade(int(new_id))
        return int(new_id)

    new_id = await run_in_threadpool(requeue)
    if new_id is None:
        return site.message(request, 404, "No such submission.")
    site.wake_pool()
    return RedirectResponse(f"/admin?message=attempt+{attempt_id}+requeued+as+{new_id}", status_code=303)


@router.post("/admin/token")
async def new_token(request: Request, site: Site = Depends(get_site), session: Session | None = Depends(get_session)):
    """Replace a student's token (a lost or leaked one): the old token and all its sessions stop working."""
    form = await _admin_form(request, site, session)
    if isinstance(form, Response):
        return form
    student = (form.get("student") or "").strip()
    try:
        token = await run_in_threadpool(site.store.regenerate, student)
    except TokenError as exc:
        return site.message(request, 404, str(exc), back="/admin")
    return site.render(request, "token.html", student=student, token=token)


@router.get("/admin/export.csv")
def export(request: Request, best: int = 0, site: Site = Depends(get_site), session: Session | None = Depends(get_session)):
    if session is None or session.user != ADMIN_USER:
        return Response("instructor token needed", status_code=403)
    roster = site.store.students()
    everything = site.gb().attempts()
    flags = attempt_flags(site, everything)
    rows = site.leaderboard() if best else everything
    overrides = site.gb().overrides(site.rubric.id)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(EXPORT_COLUMNS)
    for a in rows:
        r = attempt_row(a, site.rubric)
        st = roster.get(r["student"])
        w.writerow([csv_cell(v) for v in (
            r["id"], r["student"], st.name if st else "", site.pseudonym(r["student"], roster), r["submitted"],
            r["finished_at"], r["status"], r["score"], r["max"], r["band"], r["sha256"], r["error"],
            "; ".join(f["text"] for f in flags.get(r["id"], [])), _late_penalty(a),
            *_override_cells(overrides.get(r["student"]) if best else None))])
    name = f"{site.rubric.id}-{'best' if best else 'submissions'}-{_dt.date.today().isoformat()}.csv"
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _override_cells(o) -> tuple:
    """An override's points, comment and author (empty without one)."""
    return ("", "", "") if o is None else (o.points, o.comment, f"{o.set_by} at {o.set_at}")
