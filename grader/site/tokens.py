"""``grade tokens``: create the students' login tokens (and the instructor's).

    grade tokens roster.csv --db class.sqlite       one "id token" line per student who had no token
    grade tokens --regenerate ID --db class.sqlite  replace one student's token (the old one stops working)
    grade tokens --admin --db class.sqlite          a new instructor token (replaces the previous one)

Only the SHA-256 of a token is stored, so a token is printed once, when it is created; rerunning
with the same (or a longer) roster prints only the new students' tokens and lists on stderr
those who already have one. The roster is read by :func:`grader.classroom.roster.read_roster`, the same
reader as ``grade batch --roster``: ``id`` first, then optional ``name`` (shown when the rubric sets
show_names) and ``email``; the leaderboard's pseudonym comes from the gradebook. A roster with a bad
or repeated id creates no token at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("roster", type=Path, nargs="?", help="roster CSV: id[,name][,email] (the same file as grade batch --roster)")
    p.add_argument("--db", type=Path, required=True, help="the site's database (the gradebook)")
    p.add_argument("--regenerate", metavar="ID", action="append", default=[], help="replace this student's token (repeatable)")
    p.add_argument("--admin", action="store_true", help="print a new instructor token (the previous one stops working)")


def run(args: argparse.Namespace) -> int:
    from grader.classroom.roster import RosterError, read_roster
    from grader.outputs import console
    from grader.site.store import SiteStore, TokenError

    if args.roster is None and not args.regenerate and not args.admin:
        console.fail("give a roster CSV, --regenerate ID or --admin")
        return 1
    try:
        roster = read_roster(args.roster) if args.roster is not None else None
        if roster is not None and roster.problems:
            for p in roster.problems:
                console.fail(f"{p.entry}: {p.reason}")
            console.fail("fix the roster; no token was created")
            return 1
        if roster is not None and not roster.students:
            console.fail(f"{args.roster}: no students in the roster")
            return 1
        store = SiteStore(args.db)
        existing = []
        for student in roster.students if roster is not None else []:
            token = store.upsert_student(student.id, student.name)
            if token is None:
                existing.append(student.id)
            else:
                print(f"{student.id} {token}")
        for sid in args.regenerate:
            print(f"{sid} {store.regenerate(sid)}")
        if args.admin:
            print(f"admin {store.new_admin_token()}")
    except (TokenError, RosterError, OSError) as exc:
        console.fail(str(exc))
        return 1
    if existing:
        print(f"{len(existing)} student(s) already have a token, not shown (only its hash is stored): "
              f"{', '.join(existing[:10])}{' ...' if len(existing) > 10 else ''}; use --regenerate ID to replace one",
              file=sys.stderr)
    return 0
