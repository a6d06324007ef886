"""The one Jinja2 environment factory: autoescaped HTML, strict undefined variables.

The report, the class page and the site each load their own template folder, but through this
function, so that escaping and undefined-variable behaviour are the same everywhere.

Compiled templates are kept between runs in Jinja's bytecode cache
(:class:`jinja2.FileSystemBytecodeCache`) in the user's cache folder,
``$XDG_CACHE_HOME/rl-grader/templates`` (default ``~/.cache/...``), made mode 0700 and used only
if it is this user's own and not a link. Compiling the report's templates was a tenth of a second of CPU per
`grade`; loading them is a few milliseconds. An entry is used only for the same template source
(Jinja checks its checksum) and the same Jinja and Python, so an edited template is compiled
again, never served stale. Where no such folder can be had, or the cache cannot be read or
written, templates are compiled as before: the cache can make a run faster, never fail it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from grader.resources import user_cache_dir


def cache_dir() -> Path | None:
    """The compiled templates' folder (:func:`grader.resources.user_cache_dir`), or None."""
    return user_cache_dir("templates")


def bytecode_cache():
    """Jinja's file cache of compiled templates in :func:`cache_dir`, made quiet: a cache problem
    is a miss, not an error. None when there is no safe folder."""
    from jinja2 import FileSystemBytecodeCache

    class QuietCache(FileSystemBytecodeCache):
        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:  # noqa: BLE001 - a truncated or foreign entry: compile instead
                bucket.reset()

        def dump_bytecode(self, bucket) -> None:
            try:
                super().dump_bytecode(bucket)
            except OSError:  # read-only or full: the next run compiles again
                pass

    folder = cache_dir()
    return QuietCache(str(folder)) if folder is not None else None


@cache
def jinja_env(package: str = "grader.outputs", folder: str = "templates"):
    """An environment loading ``package``'s ``folder`` (package data, so it works from a wheel)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader(package, folder),
        autoescape=select_autoescape(["html", "j2", "htm", "xml"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=bytecode_cache(),
    )
