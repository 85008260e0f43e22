"""Redis connections: the URL picks the implementation; ``memory://`` is fakeredis, same protocol."""

from .connection import check_redis, create_redis, is_client, is_cluster, mask_url, reset_memory_servers

__all__ = ["check_redis", "create_redis", "is_client", "is_cluster", "mask_url", "reset_memory_servers"]
