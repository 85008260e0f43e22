"""Paged reads that one bad row cannot break: :class:`Page`, :class:`UnreadableRow` and the page query.

A row can be stored yet fail to load: text a driver cannot decode, a JSON column nested deeper than the
decoder allows, a timestamp edited by hand. A list must still show every other row, so when a page fails
to load it is loaded again one row at a time, and each row that still fails comes back as an
:class:`UnreadableRow` (its id and the reason), logged once per read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from ._database import Database

__all__ = ["COUNT_LIMIT", "MAX_LIMIT", "Page", "UnreadableRow", "check_page", "read_page"]

log = logging.getLogger("asyncsched.store")

T = TypeVar("T")

MAX_LIMIT = 1000
"""Largest page a repository returns, whatever ``limit`` asks for."""

COUNT_LIMIT = 10_000
"""Rows a page for display counts at most: beyond, its total is ``10,000+`` (a page further on is not
counted). Counting every matching row costs time linear in the history on each page; this many, a few ms."""

_UNAVAILABLE: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError, TimeoutError)
"""The database is unreachable: an outage, not a bad row (raised as is)."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: ``items`` at ``offset``, out of ``total`` matching rows (``total_capped``:
    more rows match than were counted, ``total`` is a lower bound)."""

    items: list[T]
    total: int
    offset: int
    limit: int
    total_capped: bool = False

    @property
    def has_more(self) -> bool:
        """Whether rows follow this page."""
        return self.total_capped or self.offset + len(self.items) < self.total


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """A stored row that cannot be loaded: which table, its id, and why (one line)."""

    table: str
    id: str
    reason: str


def check_page(offset: int, limit: int) -> tuple[int, int]:
    """``offset`` and ``limit`` checked, ``limit`` capped at :data:`MAX_LIMIT`."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    return offset, min(limit, MAX_LIMIT)


async def read_page(
    db: Database,
    query: Select[Any],
    order: Sequence[Any],
    offset: int,
    limit: int,
    *,
    model: Any = None,
    count_limit: int | None = None,
) -> Page[Any]:
    """One page of ``query`` (rows of one mapped class). With ``model`` (that class), a page that fails
    to load is read again row by row, rows that still fail becoming :class:`UnreadableRow` items;
    without it the error propagates. With ``count_limit``, the total is counted up to that many rows
    (``total_capped`` when more match); a page at or past that many rows is not counted at all: one row
    more than the page is read, and the total is where the page ends (``total_capped`` when that row
    exists), so a deep page costs its own ``OFFSET`` scan only."""
    offset, limit = check_page(offset, limit)
    deep = count_limit is not None and offset + limit >= count_limit
    fetch = limit + 1 if deep else limit  # deep: the row after the page says whether more follow
    async with db.session() as session:
        total = 0 if deep else await _count(session, query, order, count_limit)
        failed = False
        try:
            rows: list[Any] = list(
                (await session.scalars(query.order_by(*order).offset(offset).limit(fetch))).all()
            )
        except _UNAVAILABLE:
            raise
        except Exception as exc:
            if model is None:
                raise
            log.warning(
                "a row of %s cannot be loaded (%s); reading the page row by row", _table(model), _line(exc)
            )
            rows, failed = [], True
        if deep and not rows and not failed:  # past the end: say where the end is
            return Page([], await _count(session, query, order, None), offset, limit)
    if failed:
        rows = await _row_by_row(db, query, order, offset, fetch, model)
    if deep:
        more = len(rows) > limit
        return Page(rows[:limit], offset + min(len(rows), limit), offset, limit, more)
    capped = count_limit is not None and total > count_limit
    return Page(rows, count_limit if capped and count_limit is not None else total, offset, limit, capped)


async def _count(session: AsyncSession, query: Select[Any], order: Sequence[Any], cap: int | None) -> int:
    """Rows of ``query``, counted up to ``cap + 1`` when a cap is given."""
    # The order's columns, not the rows: the list's indexes cover them, so an index alone answers (with a
    # LIMIT, no database flattens the subquery's columns away; a constant makes SQLite scan the table).
    keys = [getattr(column, "element", column) for column in order]  # `created_at DESC` -> created_at
    counted = query.order_by(None).with_only_columns(*keys).select_from(*query.get_final_froms())
    if cap is not None:
        counted = counted.limit(cap + 1)
    return int(await session.scalar(select(func.count()).select_from(counted.subquery())) or 0)


async def _row_by_row(
    db: Database, query: Select[Any], order: Sequence[Any], offset: int, limit: int, model: Any
) -> list[Any]:
    ids_query = query.with_only_columns(model.id).order_by(*order).offset(offset).limit(limit)
    async with db.session() as session:
        ids = list((await session.scalars(ids_query)).all())
    out: list[Any] = []
    for row_id in ids:
        async with db.session() as session:
            try:
                row = await session.get(model, row_id)
            except _UNAVAILABLE:
                raise
            except Exception as exc:
                reason = _line(exc)
                log.warning("unreadable row %s in %s: %s", row_id, _table(model), reason)
                out.append(UnreadableRow(_table(model), str(row_id), f"row cannot be read: {reason}"))
                continue
        if row is not None:
            out.append(row)
    return out


def _table(model: Any) -> str:
    return str(getattr(model, "__tablename__", model))


def _line(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
