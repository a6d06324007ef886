"""``grade serve``: run the course leaderboard site (see docs/site.md).

    grade serve --rubric rubrics/lunarlander.toml --db class.sqlite [--host 127.0.0.1] [--port 8000]
                [--workers N] [--uploads-per-hour N] [--data DIR] [--no-video] [--cookie-secure]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rubric", type=Path, required=True, help="the rubric uploads are graded with")
    p.add_argument("--db", type=Path, required=True, help="the gradebook (SQLite); tokens live in it too")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: put a TLS reverse proxy in front)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="grading threads, each with one sandboxed worker process (default 1)")
    p.add_argument("--uploads-per-hour", type=int, default=6, help="uploads allowed per student per hour (default 6)")
    p.add_argument("--data", type=Path, help="folder for uploads and reports (default: DB's folder/<db name>-data)")
    p.add_argument("--no-video", action="store_true", help="skip the best/median/worst videos")
    p.add_argument("--cookie-secure", action="store_true", help="mark cookies Secure (set this when the proxy serves HTTPS)")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                   help="proxies trusted for X-Forwarded-For/Proto (uvicorn's option; default 127.0.0.1)")
    p.add_argument("--reference", type=Path, default=None,
                   help="reference models compared for the duplicate flags (default: the repository's reference/models)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def default_data_dir(db: Path) -> Path:
    return db.resolve().parent / f"{db.stem}-data"


def build_config(args: argparse.Namespace):
    from grader.scoring.rubric import load_rubric
    from grader.site.app import SiteConfig, check_site_rubric

    rubric = load_rubric(args.rubric)  # validated as a whole, its seeds and baselines read: before any upload
    check_site_rubric(rubric)
    rubric.check_baselines_follow_seeds(command="grade serve")
    return SiteConfig(db=args.db, rubric=rubric, data_dir=args.data or default_data_dir(args.db), workers=args.workers,
                      uploads_per_hour=args.uploads_per_hour, video=not args.no_video, cookie_secure=args.cookie_secure,
                      reference_dir=getattr(args, "reference", None))


def run(args: argparse.Namespace) -> int:
    from grader.outputs import console
    from grader.scoring.rubric import RubricError
    from grader.site import require_web

    problem = require_web()
    if problem:
        console.fail(problem)
        return 1
    if args.workers < 0 or args.uploads_per_hour < 1:
        console.fail("--workers must be at least 0 and --uploads-per-hour at least 1")
        return 1
    try:
        config = build_config(args)
    except RubricError as exc:
        console.fail(str(exc))
        return 1
    import uvicorn

    from grader.scoring.versions import baselines_version_warning
    from grader.site.app import create_app

    warning = baselines_version_warning(args.rubric)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(config)
    print(f"grading {config.rubric.id!r} into {args.db}; data in {config.data_dir}; http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=True,
                forwarded_allow_ips=args.forwarded_allow_ips, server_header=False)
    return 0
