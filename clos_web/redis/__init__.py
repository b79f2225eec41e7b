"""Redis for clos_web: a RESP2 reader and writer (:mod:`.resp`) and non-blocking clients whose
sockets live in the server's own selector loop (:mod:`.client`)."""

from .resp import (
    NOT_READY, ProtocolError, RedisError, ReplyError, Reader, encode_command,
)

__all__ = [
    "NOT_READY", "ProtocolError", "RedisError", "ReplyError", "Reader", "encode_command",
]
