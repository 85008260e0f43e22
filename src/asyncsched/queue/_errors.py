"""The queue's translation of redis-py's errors into the tree's own (:mod:`asyncsched.exceptions`)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import BackendUnavailable, RedisRefused

__all__ = ["backend_errors"]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def backend_errors(method: _F) -> _F:
    """Turn redis-py's connection errors into :class:`BackendUnavailable` and its other error replies
    (``WRONGTYPE``...) into :class:`RedisRefused` (the tree's own errors)."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise BackendUnavailable(f"Redis is unavailable: {exc}") from exc
        except ResponseError as exc:
            raise RedisRefused(f"Redis refused the operation: {exc}") from exc

    return wrapper  # type: ignore[return-value]
