"""python-rq's Redis wire format on one screen: keys, job-hash codec, serializers and Lua scripts.

Verified against rq 2.12.0 and 3.0.0; see ``docs/rq-compat.md``.
"""

from .keys import RQKeys

__all__ = ["RQKeys"]
