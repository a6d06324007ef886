"""The one Jinja2 environment factory: autoescaped HTML, strict undefined variables.

The report, the class page and the site each load their own template folder, but through this
function, so that escaping and undefined-variable behaviour are the same everywhere.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def jinja_env(package: str = "grader", folder: str = "templates"):
    """An environment loading ``package``'s ``folder`` (package data, so it works from a wheel)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader(package, folder),
        autoescape=select_autoescape(["html", "j2", "htm", "xml"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
