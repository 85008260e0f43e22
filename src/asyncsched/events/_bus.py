"""The event bus: publish, subscribe with callbacks, listen.

Transports (keys in :mod:`asyncsched._keys`):

* **Live** — Redis pub/sub. A targeted event goes to ``<ns>:events:agent:<target>``, a broadcast to
  ``<ns>:events:broadcast``. A bus listens on the broadcast channel plus the channel of every agent it
  serves (its own ``agent_name`` and every agent that subscribed through it). Fire-and-forget: whoever is
  listening now receives it.
* **Durable** (opt-in per subscription, ``durable=True``) — Redis Streams: one stream per target agent and
  one broadcast stream, one consumer group per agent (see :mod:`._durable`). Publishing appends to the
  stream only once it exists (the first durable subscriber of that agent creates it), so nothing is kept
  for agents nobody subscribed durably.
* **Audit** (``persist=True``) — the envelope is also appended to the event log stream, which the store's
  Recorder writes to the ``EventMessage`` table.

All three happen in one atomic script call per event (``publish.lua``): one round trip.

Dispatch: one reader task per bus decodes each message once, appends it to the ``listen()``/``events()``
buffers, and hands it to the matching subscriptions (looked up in a cache keyed by ``(target,
event_type)``). Async callbacks go through their subscription's :class:`~._runner.Runner` (a queue and
elastic worker tasks on the bus's loop, no task per event); sync callbacks run in the bus's thread pool,
at most ``max_concurrency`` at once. Beyond the bounds the reader waits (back-pressure). A callback that
raises is logged with the event id and affects nothing else.

Readers never die: each message is decoded and validated on its own (:meth:`Event.from_json`); one that
is not a valid envelope is logged (rate-limited, see :mod:`._poison`) and skipped. The reader and the
durable consumers run under :class:`asyncsched._supervise.Supervised`, which restarts them (with backoff,
logged) should they end anyway.

Lifetime: ``async with EventBus() as bus`` or, like ``TaskQueue``, without it: the first ``publish``,
``subscribe``, ``listen`` or ``events`` starts the bus on the running loop; ``aclose()`` releases it.
Every operation on a closed bus raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _keys, _metrics
from .._boundary import check_event_text
from .._misuse import async_api
from .._redis import create_redis
from .._redis.connection import Line
from .._supervise import Supervised, cancel_until_done
from ..config import Settings, get_settings
from ..exceptions import ConfigurationError
from ._durable import DurableConsumer
from ._envelope import Event, MalformedEvent, validate_agent_name
from ._match import compile_pattern
from ._poison import report_malformed
from ._runner import Runner, log_callback_error
from ._stream import EventStream, Sink
from ._support import stop_task

__all__ = ["Callback", "EventBus", "Subscription"]

logger = logging.getLogger("asyncsched.events")

Callback = Callable[[Event], Any]
"""A subscriber: ``def cb(event)`` (run in a thread) or ``async def cb(event)`` (run on the loop)."""

MONITOR = "*"
"""``EventBus(agent_name="*")`` observes every event of the deployment (targeted and broadcast)."""

_PUBLISH_LUA = resources.files(__package__).joinpath("publish.lua").read_text()
_ROUTE_CACHE_MAX = 4096
_CLOSE_GRACE = 30.0


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _channel_name(channel: Any) -> str:
    return channel.decode(errors="replace") if isinstance(channel, bytes) else str(channel)


def _log_start_failure(starting: asyncio.Future[None]) -> None:
    if not starting.cancelled() and (exc := starting.exception()) is not None:
        logger.error("the event bus could not start: %s: %s", type(exc).__name__, exc)


class Subscription:
    """One callback for one agent and one event-type pattern. Returned by :meth:`EventBus.subscribe`.

    ``await subscription`` (or :meth:`wait_ready`) returns once Redis confirmed the subscription, so an
    event published afterwards is received. :meth:`unsubscribe` stops deliveries.
    """

    __slots__ = (
        "_bus",
        "_match",
        "_ready",
        "_runner",
        "active",
        "agent_name",
        "callback",
        "durable",
        "event_type",
        "is_async",
    )

    def __init__(
        self, bus: EventBus, agent_name: str, event_type: str, callback: Callback, durable: bool
    ) -> None:
        self._bus = bus
        self.agent_name = agent_name
        self.event_type = event_type
        self.callback = callback
        self.durable = durable
        self.is_async = _is_async_callable(callback)
        self._match = compile_pattern(event_type)
        self._ready: list[asyncio.Future[None]] = []
        self._runner: Runner | None = None  # async live subscriptions, once attached to a running bus
        self.active = True

    def matches(self, event_type: str) -> bool:
        """Whether this subscription's pattern matches ``event_type``."""
        return self._match(event_type)

    def unsubscribe(self) -> None:
        """Stop delivering events to this callback (idempotent; callbacks already running finish)."""
        self._bus.unsubscribe(self)

    async def wait_ready(self, timeout: float | None = 30.0) -> Subscription:  # noqa: ASYNC109
        """Wait until the subscription is live in Redis (channel subscribed, or consumer group created)."""
        async with asyncio.timeout(timeout):
            while pending := [fut for fut in self._ready if not fut.done()]:
                for fut in pending:  # the list may grow meanwhile (a bus starting on first use)
                    await asyncio.shield(fut)
            for fut in self._ready:
                fut.result()  # a failed start or subscription raises here
        return self

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self.wait_ready().__await__()

    def __repr__(self) -> str:
        mode = "durable" if self.durable else "live"
        state = "" if self.active else " (inactive)"
        return f"<Subscription {self.agent_name} {self.event_type!r} {mode}{state}>"


class EventBus:
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
        self._maxlen = str(self.settings.event_stream_maxlen).encode()  # encoded once, not per publish
        self._broadcast_channel = _keys.broadcast_event_channel(self._prefix)
        self._broadcast_stream = _keys.broadcast_event_stream(self._prefix)
        self._script: Any = None
        self._line: Line | None = None
        self._line_busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # live delivery
        self._subs: list[Subscription] = []
        self._routes: dict[tuple[str | None, str], tuple[Subscription, ...]] = {}
        self._pubsub: Any = None
        self._reader: Supervised | None = None
        self._starting: asyncio.Future[None] | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._live = False  # started and not closed (the hot path's one check)
        self._reader_lock = asyncio.Lock()
        self._channels: dict[bytes, asyncio.Future[None]] = {}
        # listen()'s buffer, filled from the start so that the spec's subscribe-then-listen loop misses
        # nothing; bounded, and quiet about dropping until listen() was used (callback-only buses).
        self._inbox = Sink(buffer_size, warn=False)
        self._sinks: list[Sink] = [self._inbox]
        self._buffer_size = buffer_size
        self._inflight: set[asyncio.Future[Any]] = set()  # sync callbacks running in threads
        self._runners: set[Runner] = set()  # async callbacks: one runner per subscription
        self._slot: asyncio.Future[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # durable delivery: agent -> consumer
        self._durable: dict[str, DurableConsumer] = {}
        self._retired: list[DurableConsumer] = []  # unsubscribed, possibly still finishing an event

    # ------------------------------------------------------------------ lifecycle

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis client (once the bus started: inside ``async with``, or after a first operation)."""
        if self._redis is None:
            if self._closed:
                raise RuntimeError("this EventBus was closed; create a new one")
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
        if self._closed:
            raise RuntimeError("this EventBus was closed; create a new one")
        if self._starting is None:
            self._begin_start()
        assert self._starting is not None
        await asyncio.shield(self._starting)
        if self._closed:
            raise RuntimeError("this EventBus was closed; create a new one")

    def _begin_start(self) -> None:
        loop = asyncio.get_running_loop()
        self._starting = starting = loop.create_future()
        starting.add_done_callback(_log_start_failure)
        self._start_task = loop.create_task(self._run_start(starting), name="asyncsched-event-bus-start")

    async def _run_start(self, starting: asyncio.Future[None]) -> None:
        try:
            await self._start()
        except BaseException as exc:
            if not starting.done():
                starting.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            await self.aclose()
            if not isinstance(exc, Exception):
                raise
            return
        if not starting.done():
            self._live = not self._closed
            starting.set_result(None)

    async def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("this EventBus was closed; create a new one")
        if self._starting is None or not self._starting.done():
            await self.start()

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if isinstance(self._redis_arg, aioredis.Redis):
            self._redis = self._redis_arg
        else:
            self._redis = create_redis(self._redis_arg or self.settings.redis_url)
            self._owns_redis = True
        self._script = self._redis.register_script(_PUBLISH_LUA)
        # a connection of its own for one publish at a time (the common, awaited case; see Line), with a
        # client of our own only (a bus wrapping the caller's client may be dropped without aclose())
        self._line = Line(self._redis) if self._owns_redis and Line.supported(self._redis) else None
        for agent in {s.agent_name for s in self._subs if s.durable}:
            self._start_durable(agent)
        for sub in self._subs:  # before the reader starts: it dispatches to attached subscriptions
            self._attach(sub)
        if self.agent_name is not None or any(not s.durable for s in self._subs):
            await self._ensure_reader()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop receiving, let running callbacks finish, close connections (what ``async with`` does)."""
        if self._closed:
            return
        self._closed = True
        self._live = False
        start = self._start_task
        if start is not None and not start.done() and start is not asyncio.current_task():
            await cancel_until_done(start)  # closed while starting: nothing it opened may outlive us
        if self._starting is not None and not self._starting.done():
            self._starting.set_exception(RuntimeError("this EventBus was closed while starting"))
            self._starting.exception()
        for consumer in [*self._durable.values(), *self._retired]:
            await consumer.stop()
        self._durable.clear()
        if self._reader is not None:
            await self._reader.stop()
        for task in list(self._background):
            await stop_task(task)
        self._reader = None
        # Running callbacks get a grace period (queued async events are still delivered), then async
        # ones are cancelled.
        runners = list(self._runners)
        for runner in runners:
            runner.close_when_drained()
        running = [*self._inflight, *(t for r in runners for t in r.tasks)]
        if running:
            await asyncio.wait(running, timeout=_CLOSE_GRACE)
            for fut in running:
                fut.cancel()
        for sink in self._sinks:
            sink.close()
        for fut in self._channels.values():
            if not fut.done():
                fut.cancel()
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._line is not None:
            await self._line.aclose()
            self._line = None
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
        self._redis = None

    # ------------------------------------------------------------------ publishing

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
        keys, args = self._script_call(event)
        line = self._line
        if line is not None and not self._line_busy:  # others publishing meanwhile use the pool
            self._line_busy = True
            try:
                (reply,) = await line.execute(("EVALSHA", self._script.sha, len(keys), *keys, *args))
            finally:
                self._line_busy = False
            if isinstance(reply, NoScriptError):  # a restarted or flushed server forgot the script
                await self._script(keys, args)
            elif isinstance(reply, Exception):
                raise reply
            return event
        try:  # EVALSHA straight away: cheaper than redis-py's Script wrapper on this hot path
            await self.redis.evalsha(self._script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed server forgot the script
            await self._script(keys, args)
        return event

    async def publish_many(self, events: Iterable[Event]) -> list[Event]:
        """Publish already-built events in one pipelined round trip (all are serialized first)."""
        if not self._live:
            await self._ensure_started()
        calls = [(event, self._script_call(event)) for event in events]
        todo = [call for _, call in calls]
        sha = self._script.sha
        for _attempt in range(2):
            if not todo:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for keys, args in todo:
                    _ = pipe.evalsha(sha, len(keys), *keys, *args)  # queued; replies come from execute()
                results = await pipe.execute(raise_on_error=False)
            failed = [
                call for call, result in zip(todo, results, strict=True) if isinstance(result, Exception)
            ]
            if not failed:
                break
            first = next(r for r in results if isinstance(r, Exception))
            if not isinstance(first, NoScriptError):
                raise first
            # The server forgot the script (restart, SCRIPT FLUSH): load it, redo only the failed calls.
            await self.redis.script_load(_PUBLISH_LUA)
            todo = failed
        return [event for event, _ in calls]

    def _script_call(self, event: Event) -> tuple[list[str], list[Any]]:
        envelope = event.to_json()
        check_event_text(event.payload, envelope, self.settings.max_payload_bytes)
        target = event.target_agent
        if target is None:
            keys = [self._broadcast_stream]
            args: list[Any] = [self._broadcast_channel, envelope, self._maxlen]
        else:
            keys = [_keys.agent_event_stream(self._prefix, target)]
            args = [_keys.agent_event_channel(self._prefix, target), envelope, self._maxlen]
        if self.persist:
            keys.append(_keys.event_log_stream(self._prefix))
            for item in event.log_fields().items():
                args.extend(item)
        return keys, args

    # ------------------------------------------------------------------ subscribing

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
        if self._closed:
            raise RuntimeError("this EventBus was closed; create a new one")
        compile_pattern(event_type)  # an invalid pattern raises here, not in the reader
        sub = Subscription(self, agent_name, event_type, callback, durable)
        self._subs.append(sub)
        self._routes.clear()
        if self._loop is None:
            self._start_on_first_use(sub)
        else:
            if durable:
                self._start_durable(agent_name)
            elif self._reader is None:
                self._spawn(self._ensure_reader())
            self._attach(sub)
        return sub

    def _start_on_first_use(self, sub: Subscription) -> None:
        """``subscribe`` on a bus not started: start it now if a loop runs here (``await sub`` waits for
        it); without a running loop the subscription is attached when the bus is entered."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._starting is None:
            self._begin_start()
        starting = self._starting
        if starting is not None and not starting.done():
            sub._ready = [starting]

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
        self._routes.clear()
        if subscription.durable:
            agent = subscription.agent_name
            if not any(s.durable and s.agent_name == agent for s in self._subs):
                consumer = self._durable.pop(agent, None)
                if consumer is not None:
                    self._retired.append(consumer)  # now: aclose() must stop it even if _retire never ran
                    self._spawn(self._retire(consumer))

    async def _retire(self, consumer: DurableConsumer) -> None:
        try:
            await consumer.stop()
        finally:
            self._retired.remove(consumer)

    def durable_subscriptions(self, agent_name: str) -> list[Subscription]:
        """The active durable subscriptions of ``agent_name`` on this bus."""
        return [s for s in self._subs if s.durable and s.agent_name == agent_name]

    def _attach(self, sub: Subscription) -> None:
        """Record what ``sub`` must wait for to be live, and subscribe its channel if needed."""
        if sub.is_async and not sub.durable:
            assert self._loop is not None
            sub._runner = Runner(sub, self.max_concurrency, self._loop)
            self._runners.add(sub._runner)
        if sub.durable:
            sub._ready = [self._durable[sub.agent_name].ready]
        else:
            channel = _keys.agent_event_channel(self._prefix, sub.agent_name).encode()
            sub._ready = [self._channel_future(self._broadcast_channel.encode())]
            if self.agent_name == MONITOR:  # the agent pattern covers every agent's channel
                pattern = _keys.agent_event_channel_pattern(self._prefix).encode()
                sub._ready.append(self._channel_future(pattern))
            else:
                sub._ready.append(self._channel_future(channel, subscribe=True))

    def _start_durable(self, agent: str) -> None:
        if agent in self._durable:
            return
        consumer = DurableConsumer(self, agent)
        self._durable[agent] = consumer
        consumer.start()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("event bus background step failed", exc_info=task.exception())

    # ------------------------------------------------------------------ receiving (pub/sub)

    def _channel_future(self, channel: bytes, subscribe: bool = False) -> asyncio.Future[None]:
        fut = self._channels.get(channel)
        if fut is None:
            assert self._loop is not None
            fut = self._loop.create_future()
            self._channels[channel] = fut
            if subscribe and self._pubsub is not None:
                self._spawn(self._pubsub.subscribe(channel))
        return fut

    async def _ensure_reader(self) -> None:
        async with self._reader_lock:
            if self._reader is not None or self._closed:
                return
            self._pubsub = self.redis.pubsub()
            channels = [self._broadcast_channel.encode()]
            agents = {s.agent_name for s in self._subs if not s.durable}
            if self.agent_name is not None and self.agent_name != MONITOR:
                agents.add(self.agent_name)
            if self.agent_name != MONITOR:
                channels += [_keys.agent_event_channel(self._prefix, a).encode() for a in sorted(agents)]
            waits = [self._channel_future(c) for c in channels]
            await self._pubsub.subscribe(*channels)
            if self.agent_name == MONITOR:
                pattern = _keys.agent_event_channel_pattern(self._prefix).encode()
                waits.append(self._channel_future(pattern))
                await self._pubsub.psubscribe(pattern)
            self._reader = Supervised("asyncsched-event-reader", self._read, done=lambda: self._closed)
            self._reader.start()
            async with asyncio.timeout(30):
                for fut in waits:
                    await asyncio.shield(fut)

    async def _read(self) -> None:
        """The reader: one pub/sub connection, each message decoded once and dispatched.

        Nothing a message holds can end it: a malformed one is reported and skipped, and whatever a
        dispatch raises is logged (the supervisor restarts the reader should it end all the same)."""
        pubsub = self._pubsub
        channels = self._channels
        from_json = Event.from_json
        backoff = 0.1
        while not self._closed:
            try:
                response = await pubsub.parse_response(block=True)
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                logger.warning("event bus lost its pub/sub connection (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if response is None:
                continue
            backoff = 0.1
            try:
                kind = response[0]
                if kind == b"message":
                    data = response[2]
                elif kind == b"pmessage":
                    data = response[3]
                else:
                    if kind in (b"subscribe", b"psubscribe"):
                        fut = channels.get(response[1])
                        if fut is not None and not fut.done():
                            fut.set_result(None)
                    continue
                source = response[-2]
                try:
                    event = from_json(data)
                except MalformedEvent as exc:
                    report_malformed("event", _channel_name(source), exc, data)
                    continue
                await self._dispatch(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug of ours: log it, keep reading
                logger.exception("event bus reader: cannot handle a message (%s); skipped", exc)

    async def _dispatch(self, event: Event) -> None:
        """Hand one decoded event to the ``listen()``/``events()`` buffers and the matching callbacks."""
        if _metrics.bus_lag is not None:  # a process serving metrics: delivery lag
            _metrics.observe_delivery("live", event.created_at)
        for sink in self._sinks:
            sink.put(event)
        key = (event.target_agent, event.event_type)
        subs = self._routes.get(key)
        if subs is None:
            subs = self._route(key)
        inflight = self._inflight
        for sub in subs:
            runner = sub._runner
            if runner is not None:  # async: queued for the subscription's workers
                if len(runner.queue) >= self._buffer_size:
                    await runner.drained()
                runner.push(event)
            elif sub.active:  # sync: one thread-pool call, at most max_concurrency at once
                if len(inflight) >= self.max_concurrency:
                    await self._wait_slot()
                self._start_callback(sub, event)

    def _route(self, key: tuple[str | None, str]) -> tuple[Subscription, ...]:
        target, event_type = key
        subs = tuple(
            s
            for s in self._subs
            if not s.durable and (target is None or s.agent_name == target) and s.matches(event_type)
        )
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[key] = subs
        return subs

    def _start_callback(self, sub: Subscription, event: Event) -> None:
        loop = self._loop
        assert loop is not None
        fut = loop.run_in_executor(self._threads(), sub.callback, event)
        self._inflight.add(fut)
        fut.add_done_callback(functools.partial(self._callback_done, sub, event))

    def _callback_done(self, sub: Subscription, event: Event, fut: asyncio.Future[Any]) -> None:
        self._inflight.discard(fut)
        slot = self._slot
        if slot is not None and not slot.done():
            slot.set_result(None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log_callback_error(sub, event, exc)
        elif inspect.iscoroutine(result := fut.result()):  # e.g. a lambda returning a coroutine
            result.close()
            log_callback_error(
                sub,
                event,
                TypeError("the callback returned a coroutine: make it an `async def` to have it run"),
            )

    async def _wait_slot(self) -> None:
        while len(self._inflight) >= self.max_concurrency:
            assert self._loop is not None
            self._slot = self._loop.create_future()
            await self._slot
        self._slot = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.threads, thread_name_prefix="asyncsched-events"
            )
        return self._executor

    async def invoke(self, sub: Subscription, event: Event) -> Exception | None:
        """Run one callback to completion (thread for sync ones); log and return, never raise, its
        exception (``None`` when it returned)."""
        try:
            if sub.is_async:
                await sub.callback(event)
            else:
                assert self._loop is not None
                result = await self._loop.run_in_executor(self._threads(), sub.callback, event)
                if inspect.iscoroutine(result):
                    result.close()
                    raise TypeError(
                        "the callback returned a coroutine: make it an `async def` to have it run"
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_callback_error(sub, event, exc)
            return exc
        return None

    # ------------------------------------------------------------------ listen / events

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
        if self._closed:
            raise RuntimeError("this EventBus was closed; create a new one")
        sink = Sink(self._buffer_size, None if event_type == "*" else compile_pattern(event_type))
        self._sinks.append(sink)
        return EventStream(self, sink, idle_timeout)
