"""Shared fixtures: every backend test runs on every backend.

* ``redis_url`` is parametrized over ``memory`` (in-process fakeredis) and ``redis`` (a real redis-server
  started for the session on a free loopback port, flushed before each test); tests marked ``cluster`` also
  run on ``cluster``: a real Redis Cluster of three masters and three replicas, started once per session
  (per xdist worker) and flushed (every master) before each test.
* ``database_url`` is parametrized over ``sqlite`` (a fresh file) and ``postgresql`` (a fresh database on a
  real PostgreSQL cluster started for the session).

A missing server binary fails the tests that need it, with the install command; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from asyncsched._redis import create_redis, reset_memory_servers
from asyncsched.config import Settings, set_settings

from .servers import (
    ClusterSetup,
    PostgresServer,
    RedisServer,
    ServerUnavailable,
    cluster_setup,
    postgres_server,
    redis_server,
)

pytest_plugins = ["tests.guards"]  # bounded teardowns, a hard backstop, leaks reported where made

_db_counter = itertools.count()
_S = TypeVar("_S")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop the async tests run on (CI runs the worker and bus suites on uvloop too)",
    )


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """The loop of every async test and fixture: asyncio's, or uvloop's with ``--loop=uvloop``."""
    if config.getoption("--loop") == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def loop_kind(request: pytest.FixtureRequest) -> str:
    """``"uvloop"`` when the suite runs with ``--loop=uvloop``, else ``"asyncio"``."""
    return str(request.config.getoption("--loop"))


@pytest.hookimpl(tryfirst=True)  # before the fixture manager adds the fixture's own params
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``cluster`` run on the Redis Cluster too (unless they chose their backends themselves)."""
    if "redis_url" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("cluster") is None:
        return
    chosen = metafunc.definition.iter_markers("parametrize")
    if any("redis_url" in str(m.args[0] if m.args else "") for m in chosen):
        return
    # as a marker: pytest then leaves the fixture's own params aside, as for a test's own parametrize
    metafunc.definition.add_marker(
        pytest.mark.parametrize("redis_url", ["memory", "redis", "cluster"], indirect=True)
    )


@contextmanager
def _started(start: Callable[[], AbstractContextManager[_S]]) -> Iterator[_S]:
    """A server from ``start``; a missing binary fails the test with the install command (never skips)."""
    try:
        with start() as server:
            yield server
    except ServerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def real_redis() -> Iterator[RedisServer]:
    """The session's real redis-server."""
    with _started(redis_server) as server:
        yield server


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[ClusterSetup]:
    """The session's Redis Cluster (three masters, three replicas), started on first use."""
    with _started(cluster_setup) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(real_cluster: ClusterSetup) -> str:
    """URL of the session's Redis Cluster, every master flushed before the test (a test's failover is
    undone by the next test only in that its masters are whichever nodes are masters now)."""
    real_cluster.wait_ready()
    real_cluster.flush()
    return real_cluster.url


@pytest.fixture(scope="session")
def real_postgres() -> Iterator[PostgresServer]:
    """The session's real PostgreSQL cluster (run as ``nobody`` when the tests run as root)."""
    with _started(postgres_server) as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, to stop and restart (the session's is shared)."""
    with _started(redis_server) as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test alone (stopping the session's would break other tests)."""
    with _started(postgres_server) as server:
        yield server


@pytest.fixture
def real_redis_url(real_redis: RedisServer) -> str:
    """URL of the real redis-server, flushed before the test."""
    import redis as syncredis

    if real_redis.proc.poll() is not None:  # a test may have stopped it
        real_redis.restart()
    client = syncredis.Redis.from_url(real_redis.url)
    client.flushall()
    client.close()
    return real_redis.url


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis URL on every backend: the embedded memory server and a real redis-server."""
    if request.param == "memory":
        reset_memory_servers()
        yield f"memory://test-{uuid.uuid4().hex[:8]}"
        reset_memory_servers()
    elif request.param == "cluster":
        yield request.getfixturevalue("cluster_url")
    else:
        yield request.getfixturevalue("real_redis_url")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An async client for ``redis_url``."""
    client = create_redis(redis_url)
    yield client
    await client.aclose()


async def _admin(server: PostgresServer, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="asyncsched", database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def real_database_url(real_postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = f"t_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(real_postgres, f'CREATE DATABASE "{name}"'))
    yield real_postgres.url(name)
    asyncio.run(_admin(real_postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL on every backend: a fresh SQLite file and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/test.db"
    else:
        yield request.getfixturevalue("real_database_url")


@pytest.fixture
def settings(redis_url: str, database_url: str) -> Iterator[Settings]:
    """Settings on the parametrized backends, installed as the process-wide settings for the test."""
    value = Settings(redis_url=redis_url, database_url=database_url)
    set_settings(value)
    yield value
    set_settings(None)
