"""The course leaderboard site: login with a token, upload an ONNX model, see it graded.

``create_app(config)`` builds the FastAPI application; ``grade serve`` runs it with uvicorn. The
routes are module-level functions in three routers, which reach the shared :class:`Site` through
FastAPI dependencies (:mod:`grader.site.state`):

* :mod:`grader.site.routes_public` -- ``/``, ``/selfcheck``, ``/api/state``, ``/login``, ``/logout``, ``/static``;
* :mod:`grader.site.routes_student` -- ``/me``, ``/upload``, ``/attempts/...``, ``/api/attempts/...``;
* :mod:`grader.site.routes_admin` -- ``/admin``, ``/admin/regrade/{id}``, ``/admin/token``, ``/admin/export.csv``.

This module adds what every response shares: the session lookup (the cookie holds a session id;
the session lives in SQLite) and the security headers.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from grader.site import routes_admin, routes_public, routes_student
from grader.site.auth import SESSION_COOKIE
from grader.site.state import Refusal, Site, SiteConfig, refusal_handler

__all__ = ["CSP", "SiteConfig", "create_app"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


@asynccontextmanager
async def lifespan(app: FastAPI):
    site: Site = app.state.site
    site.start()
    try:
        yield
    finally:
        site.stop()


async def sessions_and_headers(request: Request, call_next):
    """Attach the request's session (None when unknown, expired or revoked) and set the security headers."""
    site: Site = request.app.state.site
    cookie = request.cookies.get(SESSION_COOKIE)
    request.state.session = await run_in_threadpool(site.store.session, cookie) if cookie else None
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    if not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def check_site_rubric(rubric) -> None:
    """The site takes one ONNX file per upload: a rubric whose maximum counts a notebook (a
    required or optional notebook part) would score students out of points the site can never
    award, so it is refused, saying why (:class:`~grader.scoring.rubric.RubricError`)."""
    from grader.scoring.rubric import RubricError

    use = rubric.part_use("notebook")
    if use in ("required", "optional"):
        raise RubricError(f"rubric {rubric.id!r}: its notebook part is {use} (it counts in the maximum of "
                          f"{rubric.max_points:g} points), but the site takes ONNX uploads only; serve a rubric whose "
                          "[parts] has no notebook (or notebook = \"extra\"), and grade notebooks with `grade batch`")
    if rubric.part_use("model") is None:
        raise RubricError(f"rubric {rubric.id!r} has no model part, and the site grades uploaded models only")


def create_app(config: SiteConfig) -> FastAPI:
    check_site_rubric(config.rubric)
    app = FastAPI(title="grader site", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.site = Site(config)
    app.middleware("http")(sessions_and_headers)
    app.add_exception_handler(Refusal, refusal_handler)
    for module in (routes_public, routes_student, routes_admin):
        app.include_router(module.router)
    return app
