"""Redis for clos_web: non-blocking clients whose sockets live in the server's own selector
loop (:mod:`.client`), over a sans-I/O RESP2 reader and writer (:mod:`.resp`).

    from clos_web.redis import RedisClient, RedisPubSub

    client = RedisClient(server, "redis://127.0.0.1:6379/0").start()
    client.call(print, "INCR", "hits")        # on the loop thread; print(reply) later
    client.submit("GET", "hits").result(1)    # from any other thread

See :mod:`clos_web.redis.client` for the whole API. ``pip install clos_web[redis]`` adds
``hiredis``, the C reply parser; without it a pure-Python one is used.
"""

from .client import (
    RedisAddress, RedisClient, RedisConnection, RedisPubSub, RedisTimeout, RedisUnavailable,
    parse_url, redis_lost, redis_ready, redis_reply,
)
from .resp import (
    NOT_READY, ProtocolError, RedisError, ReplyError, Reader, encode_command,
)

__all__ = [
    "RedisClient", "RedisPubSub", "RedisError", "RedisUnavailable", "RedisTimeout",
    "ReplyError", "ProtocolError", "RedisAddress", "RedisConnection", "parse_url",
    "redis_ready", "redis_reply", "redis_lost", "NOT_READY", "Reader", "encode_command",
]
