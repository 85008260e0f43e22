"""JSON as it crosses the package's seams: the one alias for a JSON value (what ``json.loads`` returns).

A signature that carries JSON of unknown shape says :data:`JSONValue` (or :data:`JSONObject`), never ``Any``;
a JSON body of a known shape gets a ``TypedDict`` where it is read.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["JSONObject", "JSONValue"]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""Any JSON value: ``null``, a boolean, a number, text, an array or an object."""

JSONObject: TypeAlias = "dict[str, JSONValue]"
"""A JSON object."""
