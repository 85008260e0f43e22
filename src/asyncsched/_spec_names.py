"""Counterparts of the spec's helpers that are not classes: ``init_db()`` and the shared ``logger``.

The spec's ``from core.logger import logger`` becomes ``from asyncsched import logger``; its ``init_db()``
becomes ``asyncsched.init_db()``. See ``docs/migrating-from-the-spec.md`` for every name.
"""

from __future__ import annotations

import logging

from .config import Settings

__all__ = ["init_db", "logger"]

logger = logging.getLogger("asyncsched.app")
"""The spec's ``core.logger.logger``: a logger for task functions and app code (``asyncsched.app``)."""


def init_db(url: str | None = None, *, settings: Settings | None = None) -> None:
    """The spec's ``init_db()``: create asyncsched's tables or migrate them to this version's schema.

    Sync, like the spec's; safe on every start and from several processes at once (migrations are
    serialised), and callable from an ``async def`` startup hook (the work runs on the sync facade's
    thread). ``url`` defaults to ``DATABASE_URL``. Same as ``asyncsched db upgrade``. An unreachable
    database raises :class:`~asyncsched.BackendUnavailable` naming host and port.
    """
    from ._portal import portal

    portal().call(_init_db, url, settings)


async def _init_db(url: str | None, settings: Settings | None) -> None:
    from .store import Database

    async with Database(url, settings=settings, auto_migrate=False) as db:
        await db.check()
        await db.migrate()
