"""The event bus: publish, subscribe with callbacks, listen.

The parts, each in its module, each given what it needs by the bus (none imports the bus):

* :mod:`._publisher` — live (pub/sub), durable (streams) and audit (event log) transports, one
  ``publish.lua`` call per event;
* :mod:`._listener` — the pub/sub subscriptions and the one reader task, which decodes each message once;
* :mod:`._dispatch` — each received event to the ``listen()``/``events()`` buffers (:mod:`._stream`) and
  to the matching live callbacks (async ones through their :class:`~._runner.Runner`, sync ones in a
  bounded thread pool), with back-pressure on the reader;
* :mod:`._durable` — one consumer-group reader per agent subscribed durably;
* :mod:`._subscription` — :class:`Subscription`.

Readers never die: a malformed message is logged and skipped, and every reader runs supervised
(restarted with backoff, logged) should it end anyway.

Lifetime: ``async with EventBus() as bus`` or, like ``TaskQueue``, without it: the first ``publish``,
``subscribe``, ``listen`` or ``events`` starts the bus on the running loop; ``aclose()`` releases it.
Every operation on a closed bus raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis

from .._boundary import check_event_text
from .._lifetime import Closing
from .._misuse import async_api
from .._redis import create_redis, is_client
from .._redis.connection import Line
from .._supervise import Supervised
from ..config import Settings, get_settings
from ..exceptions import ConfigurationError
from ._dispatch import Dispatcher
from ._durable import DurableAgents
from ._envelope import Event, validate_agent_name
from ._listener import Listener
from ._match import compile_pattern
from ._publisher import Publisher
from ._stream import EventStream, Sink
from ._subscription import MONITOR, Callback, Subscription
from ._support import Background, Startup

__all__ = ["MONITOR", "Callback", "EventBus", "Subscription"]

logger = logging.getLogger("asyncsched.events")

_CLOSE_GRACE = 30.0


class EventBus(Closing):
    """Publish events to one agent or to all, and receive them with callbacks, ``listen()`` or ``events()``.

    Use as an async context manager::

        async with EventBus(agent_name="support-bot") as bus:
            await bus.subscribe("support-bot", "task.*", on_task)   # await: active once this returns
            await bus.publish("email.processed", "email-agent", {"n": 10}, target_agent="support-bot")
            event = await bus.listen(timeout=1.0)

    ``agent_name``: the agent this bus listens for with :meth:`listen`/:meth:`events` (its own channel and
    broadcasts); ``"*"`` observes every event of the deployment. Without it, the bus receives broadcasts
    and the events of the agents subscribed through it. ``persist``: also log every published event for
    the ``EventMessage`` table (default ``Settings.event_log``, env ``ASYNCSCHED_EVENT_LOG``).
    ``max_concurrency``: callbacks running at once. ``buffer_size``: events kept for ``listen()`` (the
    oldest are dropped beyond it, with a warning). ``claim_idle``: seconds after which a durable event
    delivered to a consumer that is gone (crashed or stopped) is redelivered to another.
    ``consumer``: the durable consumer name (default unique per bus; a stable name lets a restarted process
    re-read its own unacknowledged events at once, without waiting ``claim_idle``). ``durable_retries``:
    how many times a durable callback that raised is retried (with backoff) before the event goes to the
    dead-letter stream (``asyncsched events dead-letters``).

    Without ``async with``, the first ``publish``/``subscribe``/``listen``/``events`` starts the bus; call
    :meth:`aclose` to release it.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis | None = None,
        *,
        settings: Settings | None = None,
        agent_name: str | None = None,
        persist: bool | None = None,
        max_concurrency: int = 100,
        buffer_size: int = 10_000,
        claim_idle: float = 30.0,
        consumer: str | None = None,
        durable_retries: int = 3,
    ) -> None:
        self.settings = settings or get_settings()
        if agent_name is not None and agent_name != MONITOR:
            validate_agent_name(agent_name)
        if max_concurrency <= 0 or buffer_size <= 0 or claim_idle <= 0:
            raise ConfigurationError("max_concurrency, buffer_size and claim_idle must be positive")
        if type(durable_retries) is not int or durable_retries < 0:
            raise ConfigurationError(f"durable_retries must be an integer >= 0, got {durable_retries!r}")
        self.durable_retries = durable_retries
        self.agent_name = agent_name
        self.persist = self.settings.event_log if persist is None else persist
        self.max_concurrency = max_concurrency
        self.claim_idle = claim_idle
        self.consumer = consumer
        self._redis_arg = redis
        self._redis: aioredis.Redis | None = None
        self._owns_redis = False
        self._prefix = self.settings.key_prefix
        self._publisher: Publisher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._subs: list[Subscription] = []
        self._startup = Startup(
            self._start, self.aclose, self._started, "asyncsched-event-bus-start", logger, "event bus"
        )
        self._live = False  # started and not closed (the hot path's one check)
        # listen()'s buffer, filled from the start so that the spec's subscribe-then-listen loop misses
        # nothing; bounded, and quiet about dropping until listen() was used (callback-only buses).
        self._inbox = Sink(buffer_size, warn=False)
        self._sinks: list[Sink] = [self._inbox]
        self._dispatcher = Dispatcher(
            self._subs,
            self._sinks,
            max_concurrency=max_concurrency,
            buffer_size=buffer_size,
            threads=self.settings.threads,
        )
        self._listener = Listener(
            prefix=self._prefix,
            agent_name=agent_name,
            dispatch=self._dispatcher.dispatch,
            closed=lambda: self._closed,
            spawn=self._spawn,
            max_bytes=self.settings.max_payload_bytes,
        )
        self._background = Background(logger, "event bus")
        self._agents = DurableAgents(self)  # durable delivery: one consumer per agent
        self._durable = self._agents.consumers

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis client (once the bus started: inside ``async with``, or after a first operation)."""
        if self._redis is None:
            self._check_open()
            raise RuntimeError("the EventBus is not started: use `async with EventBus(...) as bus:`")
        return self._redis

    @property
    def started(self) -> bool:
        """Whether the bus is started and not closed."""
        return self._live

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def start(self) -> None:
        """Start the bus on the running loop (idempotent; what ``async with`` and a first use do)."""
        self._check_open()
        await asyncio.shield(self._startup.begin())
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this EventBus was closed; create a new one")

    def _started(self) -> None:
        self._live = not self._closed

    async def _ensure_started(self) -> None:
        self._check_open()
        starting = self._startup.future
        if starting is None or not starting.done():
            await self.start()

    async def _start(self) -> None:
        self._loop = self._dispatcher.loop = self._listener.loop = asyncio.get_running_loop()
        if is_client(self._redis_arg):
            self._redis = self._redis_arg
        else:
            self._redis = create_redis(self._redis_arg or self.settings.redis_url)
            self._owns_redis = True
        # a connection of its own for one publish at a time (the common, awaited case; see Line), with a
        # client of our own only (a bus wrapping the caller's client may be dropped without aclose())
        line = Line(self._redis) if self._owns_redis and Line.supported(self._redis) else None
        self._publisher = Publisher(self._redis, self.settings, persist=self.persist, line=line)
        for agent in {s.agent_name for s in self._subs if s.durable}:
            self._agents.start(agent)
        for sub in self._subs:  # before the reader starts: it dispatches to attached subscriptions
            self._attach(sub)
        if self.agent_name is not None or any(not s.durable for s in self._subs):
            await self._ensure_reader()

    async def aclose(self) -> None:
        """Stop receiving, let running callbacks finish, close connections (what ``async with`` does)."""
        if self._closed:
            return
        self._closed = True
        self._live = False
        await self._startup.cancel("this EventBus was closed while starting")
        await self._agents.stop()
        await self._listener.stop_reader()
        await self._background.stop()
        # Running callbacks get a grace period (queued async events are still delivered), then async
        # ones are cancelled.
        await self._dispatcher.drain(_CLOSE_GRACE)
        for sink in self._sinks:
            sink.close()
        await self._listener.aclose()
        self._dispatcher.shutdown()
        if self._publisher is not None:
            await self._publisher.aclose()
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
        self._redis = None

    @async_api("EventBus")
    async def publish(
        self,
        event_type: str,
        source_agent: str,
        payload: Mapping[str, Any] | None = None,
        target_agent: str | None = None,
    ) -> Event:
        """Publish one event to ``target_agent``, or to every agent when it is ``None``; return it.

        Validates the names and serializes the payload before anything is sent: an invalid name raises
        :class:`~asyncsched.exceptions.ConfigurationError`, a payload that is not a JSON object of JSON
        values raises :class:`~asyncsched.exceptions.SerializationError`.
        """
        event = Event.create(event_type, source_agent, payload, target_agent)
        if not self._live:  # first use, or starting (waits until subscribed), or closed (raises)
            await self._ensure_started()
        await self._publishing().publish(event)
        return event

    async def publish_many(self, events: Iterable[Event]) -> list[Event]:
        """Publish already-built events in one pipelined round trip (all are serialized first)."""
        if not self._live:
            await self._ensure_started()
        events = list(events)
        await self._publishing().publish_many(events)
        return events

    def envelope(self, event: Event) -> str:
        """The wire text of ``event``, checked as :meth:`publish` checks it (size against
        ``ASYNCSCHED_MAX_PAYLOAD_BYTES``, nesting, UTF-8): :class:`InvalidValue` or
        :class:`SerializationError` naming the problem."""
        envelope = event.to_json()
        check_event_text(event.payload, envelope, self.settings.max_payload_bytes)
        return envelope

    def _publishing(self) -> Publisher:
        if self._redis is None:
            _ = self.redis  # raises the reason (closed, or not started)
        assert self._publisher is not None
        return self._publisher

    def subscribe(
        self, agent_name: str, event_type: str, callback: Callback, durable: bool = False
    ) -> Subscription:
        """Call ``callback(event)`` for every event of ``agent_name`` (targeted at it, or broadcast) whose
        type matches ``event_type`` (exact, or a wildcard pattern such as ``task.*`` or ``*``).

        ``callback`` may be a plain function (run in a thread) or a coroutine function (run on the loop).
        ``durable=True`` delivers through the agent's consumer group on Redis Streams instead of pub/sub:
        events published while the agent was down are delivered when it comes back, each event is
        acknowledged after its callbacks returned, and an event whose consumer died mid-callback is
        redelivered. Durable events of one agent are handled in order, one at a time.

        Returns at once; ``await`` the returned :class:`Subscription` to wait until it is live (on a bus
        not started yet, called on a running loop, this starts the bus; a failure to start is raised by
        that ``await``). Raises ``RuntimeError`` on a closed bus.
        """
        validate_agent_name(agent_name)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self._check_open()
        compile_pattern(event_type)  # an invalid pattern raises here, not in the reader
        sub = Subscription(self.unsubscribe, agent_name, event_type, callback, durable)
        self._subs.append(sub)
        self._dispatcher.forget_routes()
        if self._loop is None:  # not started: start now if a loop runs here (`await sub` waits for it)
            if (starting := self._startup.pending()) is not None:
                sub._ready = [starting]
        else:
            if durable:
                self._agents.start(agent_name)
            elif self._reader is None:
                self._spawn(self._ensure_reader())
            self._attach(sub)
        return sub

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription`` (same as ``subscription.unsubscribe()``); thread-safe."""
        if not subscription.active:
            return
        subscription.active = False
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._forget, subscription)
                return
        self._forget(subscription)

    def _forget(self, subscription: Subscription) -> None:
        if subscription._runner is not None:
            subscription._runner.close()
        if subscription in self._subs:
            self._subs.remove(subscription)
        self._dispatcher.forget_routes()
        if subscription.durable:
            agent = subscription.agent_name
            if not any(s.durable and s.agent_name == agent for s in self._subs):
                retire = self._agents.retire(agent)
                if retire is not None:
                    self._spawn(retire)

    def durable_subscriptions(self, agent_name: str) -> list[Subscription]:
        """The active durable subscriptions of ``agent_name`` on this bus."""
        return [s for s in self._subs if s.durable and s.agent_name == agent_name]

    def _attach(self, sub: Subscription) -> None:
        """Record what ``sub`` must wait for to be live, and subscribe its channel if needed."""
        if sub.is_async and not sub.durable:
            self._dispatcher.attach(sub)
        if sub.durable:
            sub._ready = [self._durable[sub.agent_name].ready]
        else:
            sub._ready = self._listener.ready_for(sub.agent_name)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        assert self._loop is not None
        self._background.spawn(self._loop, coro)

    async def invoke(self, sub: Subscription, event: Event) -> Exception | None:
        """Run one callback to completion (thread for sync ones); log and return, never raise, its
        exception (``None`` when it returned)."""
        return await self._dispatcher.invoke(sub, event)

    @property
    def _reader(self) -> Supervised | None:
        """The pub/sub reader task's supervisor, once it runs."""
        return self._listener.reader

    async def _ensure_reader(self) -> None:
        await self._listener.start(self.redis, (s.agent_name for s in self._subs if not s.durable))

    async def _start_reading(self) -> None:
        """Start the bus (used without ``async with``) and its reader, if not done yet."""
        if self._reader is None:
            await self._ensure_started()
            await self._ensure_reader()

    def _drop_sink(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    @async_api("EventBus")
    async def listen(self, timeout: float | None = 1.0) -> Event | None:  # noqa: ASYNC109
        """The next event this bus received, or ``None`` after ``timeout`` seconds.

        ``timeout=0`` does not wait; ``None`` waits until an event arrives (or the bus closes). Receives
        what the bus listens to (see the class docs), independently of callbacks.
        """
        self._inbox.warn = True
        if not self._closed:  # a closed bus returns what it buffered, then None
            await self._ensure_started()
            if self._reader is None:
                await self._ensure_reader()
        return await self._inbox.get(timeout)

    def events(self, event_type: str = "*", *, idle_timeout: float | None = None) -> EventStream:
        """Iterate over received events matching ``event_type``: ``async for event in bus.events("task.*")``.

        The stream has its own buffer, registered when ``events()`` is called, so several streams and
        ``listen()`` each see every event received from then on. It ends when the bus closes, or after
        ``idle_timeout`` seconds without an event when one is given, or on ``await stream.aclose()``.
        """
        self._check_open()
        sink = Sink(self._dispatcher.buffer_size, None if event_type == "*" else compile_pattern(event_type))
        self._sinks.append(sink)
        return EventStream(
            sink,
            idle_timeout,
            closed=lambda: self._closed,
            start_reading=self._start_reading,
            detach=self._drop_sink,
        )
