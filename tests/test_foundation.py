"""The foundation: settings, URL factories, clear errors, and the CLI skeleton."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError
from sqlalchemy import text

from asyncsched import BackendUnavailable, ConfigurationError, Settings, UnsupportedURL
from asyncsched import __all__ as exported
from asyncsched._redis import check_redis, create_redis, mask_url
from asyncsched.store import Base, check_database, create_engine, normalize_database_url


def test_settings_from_env_and_overrides() -> None:
    env = {"REDIS_URL": "redis://h:1/0", "ASYNCSCHED_QUEUES": "a, b", "ASYNCSCHED_ACCEPT_PICKLE": "yes"}
    s = Settings.from_env(env, database_url="sqlite:///x.db", redis_url=None)
    assert s.redis_url == "redis://h:1/0"
    assert s.queues == ("a", "b")
    assert s.accept_pickle is True
    assert s.database_url == "sqlite:///x.db"
    assert Settings.from_env({}).redis_url == "memory://"


def test_settings_rejects_bad_values_with_the_variable_name() -> None:
    with pytest.raises(ConfigurationError, match="ASYNCSCHED_CONCURRENCY"):
        Settings.from_env({"ASYNCSCHED_CONCURRENCY": "many"})
    with pytest.raises(ConfigurationError, match="serializer"):
        Settings(serializer="yaml")


def test_prefixed_urls_are_read_and_win_over_the_spec_names() -> None:
    env = {
        "REDIS_URL": "redis://spec:1/0",
        "ASYNCSCHED_REDIS_URL": "redis://ours:1/0",
        "ASYNCSCHED_DATABASE_URL": "sqlite+aiosqlite:///ours.db",
    }
    s = Settings.from_env(env)
    assert (s.redis_url, s.database_url) == ("redis://ours:1/0", "sqlite+aiosqlite:///ours.db")


def test_an_unknown_asyncsched_variable_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asyncsched.config"):
        s = Settings.from_env({"ASYNCSCHED_CONCURENCY": "4", "ASYNCSCHED_TEST_PROCESSES": "2"})
    assert s.concurrency == Settings().concurrency
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "ASYNCSCHED_CONCURENCY" in warned[0]
    assert "ASYNCSCHED_CONCURRENCY" in warned[0]  # the nearest known name


def test_api_token_is_not_in_repr() -> None:
    assert "s3cret" not in repr(Settings(api_token="s3cret"))


@pytest.mark.cluster
async def test_redis_factory_round_trip(redis: aioredis.Redis, redis_url: str) -> None:
    await check_redis(redis, redis_url)
    await redis.set("k", b"v")
    assert await redis.get("k") == b"v"
    # Lua works on every backend (memory:// is fakeredis with lupa).
    assert await redis.eval("return redis.call('GET', KEYS[1])", 1, "k") == b"v"


async def test_memory_urls_share_one_server_per_name() -> None:
    a, b, c = create_redis("memory://shared"), create_redis("memory://shared"), create_redis("memory://other")
    await a.set("x", 1)
    assert await b.get("x") == b"1"
    assert await c.get("x") is None
    for client in (a, b, c):
        await client.aclose()


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/none.sock", "redis+sentinel://h/s"],
)
def test_clients_pack_commands_exactly_as_redis_py(url: str) -> None:
    from redis.asyncio.connection import AbstractConnection

    connection = create_redis(url).connection_pool.make_connection()
    assert type(connection).__name__.startswith("Hiredis")  # our packer is in use on every scheme
    commands: list[tuple[object, ...]] = [
        ("SET", "k", "\u00e9t\u00e9", 3, -7, 0.1 + 0.2, 1e-7, 1.7e9, b"\x00\xff", ""),
        ("SCRIPT LOAD", "return 1"),
        (b"CLIENT SETNAME", b"x"),
        ("EVALSHA", "a" * 40, 0, *(str(i) for i in range(2000))),
        ("SET", memoryview(b"view"), bytearray(b"array")),  # hiredis refuses these: redis-py packs them
    ]
    for command in commands:
        ours = b"".join(bytes(chunk) for chunk in connection.pack_command(*command))
        theirs = b"".join(bytes(chunk) for chunk in AbstractConnection.pack_command(connection, *command))
        assert ours == theirs
    with pytest.raises(DataError):
        connection.pack_command("SET", "k", True)
    with pytest.raises(UnicodeEncodeError):
        connection.pack_command("SET", "k", "\udcff")


def test_new_connections_do_not_look_up_redis_py_version_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py >= 8 reads package metadata from disk for each new connection unless told its version
    import redis
    import redis.utils

    def blocked() -> str:
        raise AssertionError("importlib.metadata lookup while creating a connection")

    monkeypatch.setattr(redis.utils, "get_lib_version", blocked)
    for url in ("redis://127.0.0.1:1/0", "unix:///tmp/none.sock", "redis+sentinel://h/s"):
        connection = create_redis(url).connection_pool.make_connection()
        info = getattr(connection, "driver_info", None)
        assert info is None or info.lib_version == redis.__version__


async def test_more_commands_in_flight_than_connections_wait_for_one(
    redis: aioredis.Redis, redis_url: str
) -> None:
    # redis-py's own pool raises MaxConnectionsError at the 101st concurrent command; ours waits
    real = redis_url.startswith("redis://")
    before = len(await redis.client_list()) if real else 0
    client = create_redis(redis_url, max_connections=8) if real else create_redis(redis_url)
    replies = await asyncio.gather(*(client.incr("n") for _ in range(300)))
    assert sorted(replies) == list(range(1, 301))
    if real:
        assert len(await redis.client_list()) <= before + 8
    await client.aclose()


async def test_waiting_for_a_connection_is_bounded(real_redis_url: str) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = create_redis(real_redis_url, max_connections=1, timeout=0.5)
    admin = create_redis(real_redis_url)
    holder = asyncio.create_task(client.blpop(["nothing"], timeout=5))  # takes the only connection
    await asyncio.sleep(0)
    with pytest.raises(RedisConnectionError, match=r"no free Redis connection within 0\.5 s"):
        await client.get("k")
    quitter = asyncio.create_task(client.get("k"))  # a waiter that gives up ...
    patient = asyncio.create_task(client.get("k"))
    await asyncio.sleep(0)
    quitter.cancel()
    await admin.lpush("nothing", "x")  # the holder returns its connection ...
    assert list(await holder) == [b"nothing", b"x"]
    assert await patient is None  # ... to the next waiter still there
    assert quitter.cancelled()
    await admin.aclose()
    await client.aclose()


async def test_line_pipelines_commands_and_survives_a_lost_connection(real_redis_url: str) -> None:
    from redis.exceptions import NoScriptError, ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from asyncsched._redis.connection import Line

    client = create_redis(real_redis_url, socket_timeout=0.5)
    assert Line.supported(client)
    assert not Line.supported(create_redis("memory://line"))
    line = Line(client)
    replies = await line.execute(("SET", "k", "v"), ("EVALSHA", "0" * 40, 0), ("INCR", "k"), ("GET", "k"))
    assert replies[::3] == [b"OK", b"v"]  # raw replies, as a pipeline gives them
    assert isinstance(replies[1], NoScriptError)
    assert isinstance(replies[2], ResponseError)
    # the line keeps a connection of its own, outside the client's pool
    (line_id,) = await line.execute(("CLIENT", "ID"))
    assert await client.client_id() != line_id
    # Redis drops the connection (a restart, a proxy): the next call reconnects and is answered
    await client.client_kill_filter(_id=line_id)
    assert await line.execute(("PING",)) == [b"PONG"]
    # a reply that does not come within the socket timeout (+ the blocking allowance) is an error ...
    with pytest.raises(RedisTimeoutError):
        await line.execute(("BLPOP", "nothing", 2), blocking=0.1)
    # ... and the next call starts over on a fresh connection (the late reply is never read as its own)
    assert await line.execute(("LPUSH", "nothing", "x"), ("GET", "k")) == [1, b"v"]
    assert await line.execute(("BLPOP", "nothing", 2), blocking=2) == [[b"nothing", b"x"]]
    # idle past the health-check interval: a PING goes first (a silently dead connection is replaced)
    line._conn.next_health_check = 0
    pings = (await client.info("commandstats"))["cmdstat_ping"]["calls"]
    assert await line.execute(("GET", "k")) == [b"v"]
    assert (await client.info("commandstats"))["cmdstat_ping"]["calls"] == pings + 1
    assert await line.execute(("GET", "k")) == [b"v"]
    assert (await client.info("commandstats"))["cmdstat_ping"]["calls"] == pings + 1
    await line.aclose()
    await client.aclose()


def test_unknown_redis_scheme_is_a_typed_error() -> None:
    with pytest.raises(UnsupportedURL, match="'foo'"):
        create_redis("foo://x")


async def test_unreachable_redis_names_host_and_masks_password() -> None:
    url = "redis://:hunter2@127.0.0.1:1/0"
    client = create_redis(url)
    with pytest.raises(BackendUnavailable) as info:
        await check_redis(client, url)
    await client.aclose()
    assert "127.0.0.1:1" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert mask_url(url) == "redis://:***@127.0.0.1:1/0"


async def test_database_factory_creates_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    await check_database(engine)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        names = await conn.run_sync(lambda c: __import__("sqlalchemy").inspect(c).get_table_names())
        assert {
            "asyncsched_scheduled_tasks",
            "asyncsched_task_executions",
            "asyncsched_event_messages",
        } <= set(names)
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    await engine.dispose()


def test_database_url_aliases_and_errors() -> None:
    assert normalize_database_url("sqlite:///a.db") == "sqlite+aiosqlite:///a.db"
    assert normalize_database_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    with pytest.raises(UnsupportedURL, match="mysql"):
        normalize_database_url("mysql://u:pw@h/d")


async def test_unreachable_database_is_one_clear_error() -> None:
    engine = create_engine("postgresql+asyncpg://u:pw@127.0.0.1:1/db")
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1") as info:
        await check_database(engine)
    assert "pw" not in str(info.value).replace("password", "")
    await engine.dispose()


def test_cli_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "asyncsched", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("asyncsched ")
    out = subprocess.run([sys.executable, "-m", "asyncsched", "--help"], capture_output=True, text=True)
    for command in ("run", "worker", "scheduler", "tasks", "db", "info", "events"):
        assert command in out.stdout


def test_cli_unreachable_redis_is_one_line(tmp_path: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asyncsched", "--redis-url", "redis://:pw@127.0.0.1:1/0", "info"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert out.returncode == 3  # documented: a backend is unavailable (docs/operations.md)
    assert out.stderr.count("\n") == 1
    assert "127.0.0.1:1" in out.stderr
    assert ":pw@" not in out.stderr


def test_public_api_is_curated() -> None:
    import asyncsched

    assert sorted(exported) == sorted(set(exported))
    for name in exported:
        assert hasattr(asyncsched, name), name


def test_cli_info_shows_settings_and_healthy_backends(real_redis_url: str, real_database_url: str) -> None:
    """Real Redis and PostgreSQL; the database password (trust auth ignores it) is never printed."""
    db_url = real_database_url.replace("asyncsched@", "asyncsched:s3cret@")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncsched",
            "--redis-url",
            real_redis_url,
            "--database-url",
            db_url,
            "--key-prefix",
            "acme",
            "info",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()  # then queues, workers and the scheduler (docs/operations.md)
    assert lines[0].startswith(f"redis:    {real_redis_url}  ok (Redis ")
    assert lines[1] == f"database: {real_database_url.replace('asyncsched@', 'asyncsched:***@')}  ok"
    assert lines[2] == "prefix:   acme   queues: default"
    assert lines[3] == "history:  0 lifecycle records lost"
    assert "s3cret" not in out.stdout + out.stderr
