"""The CLI's one-line error reports (:mod:`asyncsched._operator_errors`, shared with ``python -m
asyncsched.worker``)."""

from __future__ import annotations

from .._operator_errors import MISSING_SCHEMA_HINT, is_operational, report

__all__ = ["MISSING_SCHEMA_HINT", "is_operational", "report"]
