"""The ``push`` layer: channels, history and resume, Server-Sent Events and long-poll.

- :mod:`~clos_web.push.sse`: the SSE wire format (pure functions).
- :mod:`~clos_web.push.channels`: ``Channels``, ``Event``, ``EventStream``, ``LongPoll``,
  ``channel``, and the generic functions ``publish``, ``subscribe``, ``encode_event``.
"""

from .channels import (
    END, HEARTBEAT, Batch, Channel, Channels, End, Event, EventStream, Heartbeat, LongPoll,
    Message, PollBatch, PollWaiter, RawSSEBatch, RawSubscription, SSEBatch, Subscription,
    channel, channels, encode_event, end_stream, publish, request_last_id, subscribe,
    unsubscribe,
)

__all__ = [
    "Channels", "Channel", "Event", "Message", "EventStream", "LongPoll", "Subscription",
    "RawSubscription", "PollWaiter", "Batch", "SSEBatch", "RawSSEBatch", "PollBatch",
    "Heartbeat", "HEARTBEAT", "End", "END",
    "channels", "channel", "publish", "subscribe", "unsubscribe", "encode_event", "end_stream",
    "request_last_id",
]
