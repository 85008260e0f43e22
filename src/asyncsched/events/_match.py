"""Event-type patterns of subscriptions: exact (``task.completed``) or fnmatch-style (``task.*``, ``*``).

A pattern is compiled once into the cheapest test that decides it: always-true, string equality, a prefix
test, or (for anything fancier, e.g. ``*.failed``) a compiled regular expression. ``*`` matches any
characters including dots, as in :mod:`fnmatch`; matching is case-sensitive.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

from ..exceptions import ConfigurationError

__all__ = ["compile_pattern", "validate_pattern"]

_WILDCARDS = frozenset("*?[")


def _always(event_type: str) -> bool:
    return True


def validate_pattern(pattern: object) -> str:
    """``pattern`` if it is a valid subscription pattern (1-200 characters without whitespace)."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > 200 or any(c.isspace() for c in pattern):
        raise ConfigurationError(
            f"invalid event_type pattern {pattern!r}: use an event type ('task.completed') or a wildcard "
            "pattern ('task.*', '*') without whitespace"
        )
    return pattern


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether an event type matches ``pattern``."""
    validate_pattern(pattern)
    if pattern == "*":
        return _always
    if not _WILDCARDS.intersection(pattern):
        return pattern.__eq__
    head = pattern[:-1]
    if pattern.endswith("*") and not _WILDCARDS.intersection(head):
        return lambda event_type: event_type.startswith(head)
    regex = re.compile(fnmatch.translate(pattern))
    return lambda event_type: regex.match(event_type) is not None
