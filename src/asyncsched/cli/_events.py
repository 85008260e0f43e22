"""``asyncsched events``: publish an event, print the bus's events as JSON lines, inspect dead letters."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ..config import Settings
from ..exceptions import ConfigurationError
from ._common import Subcommands


def register(sub: Subcommands) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "events", help="publish events or watch the event bus", description="Publish or watch events."
    )
    commands = parser.add_subparsers(dest="events_command", metavar="ACTION", required=True)

    publish = commands.add_parser("publish", help="publish one event and print it as JSON")
    publish.add_argument("event_type", metavar="TYPE", help="event type, e.g. email.processed")
    publish.add_argument("--source", required=True, help="source agent")
    publish.add_argument("--target", help="target agent (default: broadcast to every agent)")
    publish.add_argument("--payload", default="{}", help="payload as a JSON object (default {})")
    publish.add_argument("--persist", action="store_true", help="also record it in the event history")
    publish.set_defaults(handler=handle_publish)

    listen = commands.add_parser("listen", help="print events as JSON lines until interrupted")
    listen.add_argument("--agent", help="receive this agent's events and broadcasts (default: every event)")
    listen.add_argument("--type", default="*", dest="pattern", help="event type or wildcard (default *)")
    listen.add_argument("--count", type=int, help="exit after this many events")
    listen.set_defaults(handler=handle_listen)

    dead = commands.add_parser(
        "dead-letters",
        help="list, replay or delete durable events no consumer could handle",
        description="Durable events acknowledged without being handled (malformed, or their callbacks failed "
        "every retry) are kept in a dead-letter stream. Without options: list the newest.",
    )
    dead.add_argument("--count", type=int, default=100, help="how many to list (newest; default 100)")
    dead.add_argument("--json", action="store_true", help="one JSON object per line, with the data")
    action = dead.add_mutually_exclusive_group()
    action.add_argument("--replay", nargs="+", metavar="ID", help="deliver these again to their agent")
    action.add_argument("--delete", nargs="+", metavar="ID", help="delete these dead letters")
    action.add_argument("--delete-all", action="store_true", help="delete every dead letter")
    dead.set_defaults(handler=handle_dead_letters)


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"--payload must be a JSON object, e.g. '{{\"n\": 1}}', got {text!r}")
    return value


def handle_publish(args: argparse.Namespace, settings: Settings) -> int:
    from ..events import EventBus

    payload = _payload(args.payload)

    async def run() -> str:
        async with EventBus(settings=settings, persist=args.persist) as bus:
            event = await bus.publish(args.event_type, args.source, payload, target_agent=args.target)
        return json.dumps(event.to_dict())

    print(asyncio.run(run()), flush=True)
    return 0


def handle_listen(args: argparse.Namespace, settings: Settings) -> int:
    from ..events import EventBus

    if args.count is not None and args.count <= 0:
        raise ConfigurationError("--count must be positive")

    async def run() -> None:
        async with EventBus(settings=settings, agent_name=args.agent or "*") as bus:
            stream = bus.events(args.pattern)
            await bus.listen(timeout=0)  # subscribed once this returns
            who = f"agent {args.agent}" if args.agent else "every agent"
            print(f"listening for {args.pattern} events of {who}", file=sys.stderr, flush=True)
            seen = 0
            async for event in stream:
                print(json.dumps(event.to_dict()), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    return

    asyncio.run(run())
    return 0


def handle_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from .._redis import create_redis
    from ..events._envelope import MalformedEvent
    from ..events._poison import delete_dead_letters, list_dead_letters, replay_dead_letter

    if args.count <= 0:
        raise ConfigurationError("--count must be positive")
    prefix = settings.key_prefix

    async def run() -> int:
        redis = create_redis(settings.redis_url)
        try:
            if args.delete_all or args.delete:
                n = await delete_dead_letters(redis, prefix, None if args.delete_all else list(args.delete))
                print(f"deleted {n} dead letter(s)", file=sys.stderr)
                return 0
            if args.replay:
                failed = 0
                for letter_id in args.replay:
                    try:
                        new_id = await replay_dead_letter(
                            redis, prefix, letter_id, max_bytes=settings.max_payload_bytes
                        )
                    except (LookupError, MalformedEvent) as exc:
                        print(f"{letter_id}: not put back: {exc}", file=sys.stderr)
                        failed += 1
                    else:
                        print(f"{letter_id}: delivered again as {new_id}", file=sys.stderr)
                return 1 if failed else 0
            letters = await list_dead_letters(redis, prefix, args.count)
            for letter in letters:
                if args.json:
                    print(json.dumps(letter.to_dict()), flush=True)
                else:
                    where = f"from {letter.source} {letter.entry}"
                    print(f"{letter.id}  agent {letter.group}  {where}: {letter.reason}")
            if not args.json:
                print(f"{len(letters)} dead letter(s)", file=sys.stderr)
            return 0
        finally:
            await redis.aclose()

    return asyncio.run(run())
