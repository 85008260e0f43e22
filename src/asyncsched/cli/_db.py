"""``asyncsched db``: migrations (``upgrade``, ``current``) and retention (``prune``)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from ..config import Settings
from ._common import Subcommands


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "db", help="database migrations and retention", description="Manage asyncsched's SQL database."
    )
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_sub.add_parser("upgrade", help="migrate the schema (creates a missing SQLite file)")
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=_handle_upgrade)
    current = db_sub.add_parser("current", help="show the schema revision of the database")
    current.set_defaults(handler=_handle_current)
    prune_parser = db_sub.add_parser("prune", help="delete executions and events older than a number of days")
    prune_parser.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="age in days (default: ASYNCSCHED_RETENTION_DAYS, 30)",
    )
    prune_parser.set_defaults(handler=_handle_prune)


def _handle_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_upgrade(settings, args.revision))


async def _upgrade(settings: Settings, revision: str) -> int:
    from ..store import Database  # lazy: keeps `asyncsched worker` lean

    async with Database(settings=settings, auto_migrate=False) as db:
        await db.check()
        before = await db.current_revision()
        await db.migrate(revision)
        after = await db.current_revision()
    if before == after:
        print(f"database is at revision {after} (nothing to do)")
    else:
        print(f"database migrated from {before or 'empty'} to {after}")
    return 0


def _handle_current(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_current(settings))


async def _current(settings: Settings) -> int:
    from ..store import Database  # lazy: keeps `asyncsched worker` lean

    async with Database(settings=settings, auto_migrate=False) as db:
        await db.check()
        current = await db.current_revision()
        head = db.head_revision()
    state = "up to date" if current == head else f"behind head {head}; run `asyncsched db upgrade`"
    print(f"{current or 'empty (never migrated)'} ({state})")
    return 0 if current == head else 1


def _handle_prune(args: argparse.Namespace, settings: Settings) -> int:
    days = settings.retention_days if args.older_than is None else args.older_than
    if days < 0:
        print("asyncsched db prune: --older-than must not be negative")
        return 2
    return asyncio.run(_prune(settings, days))


async def _prune(settings: Settings, days: float) -> int:
    from ..store import Database, prune  # lazy: keeps `asyncsched worker` lean

    async with Database(settings=settings, auto_migrate=False) as db:
        await db.check()
        result = await prune(db, timedelta(days=days))
    print(f"pruned {result.executions} executions and {result.events} events older than {days:g} days")
    return 0
