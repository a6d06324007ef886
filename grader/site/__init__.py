"""The course leaderboard website (``grade serve``) and its tokens (``grade tokens``).

The web dependencies are optional: ``pip install 'rl-grader[site]'`` (FastAPI, uvicorn,
python-multipart). Import :mod:`grader.site.app` only after :func:`require_web`.
"""

from __future__ import annotations

INSTALL_HINT = "the site needs FastAPI, uvicorn and python-multipart: pip install 'rl-grader[site]'"


def require_web() -> str | None:
    """None when the web dependencies are importable, else a message saying how to install them."""
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return f"{INSTALL_HINT} (missing: {', '.join(missing)})" if missing else None
