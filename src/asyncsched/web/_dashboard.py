"""The dashboard page: ``static/index.html`` with the router's mount path filled in.

The page is plain HTML, CSS and JS shipped in the package (no build step). It reads the JSON API, follows
``/events/stream`` for live events and offers run-now / enable / disable buttons.
"""

from __future__ import annotations

import html
from functools import lru_cache
from importlib import resources

__all__ = ["render_dashboard"]


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("asyncsched.web").joinpath("static/index.html").read_text(encoding="utf-8")


def render_dashboard(base: str, *, token_required: bool) -> str:
    """The page for a router mounted at ``base`` (``""`` at the root)."""
    return (
        _template()
        .replace("{{BASE}}", html.escape(base, quote=True))
        .replace("{{TOKEN_REQUIRED}}", "true" if token_required else "false")
    )
