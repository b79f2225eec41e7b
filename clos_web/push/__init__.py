"""The ``push`` layer: channels, history and resume, Server-Sent Events and long-poll.

- :mod:`~clos_web.push.sse`: the SSE wire format (pure functions).
- :mod:`~clos_web.push.channels`: ``Channels``, ``Event``, ``EventStream``, ``LongPoll``,
  ``channel``, and the generic functions ``publish``, ``subscribe``, ``encode_event``.
- :mod:`~clos_web.push.broker`: the broker protocol (``broker_publish``, ``broker_join``,
  ``broker_leave``) and the in-memory ``LOCAL`` broker.
- :mod:`~clos_web.push.redis_broker`: ``RedisBroker``, many processes and machines over Redis.
"""

from .broker import (
    LOCAL, BrokerUnavailable, LocalBroker, Publication, broker_add, broker_join, broker_leave,
    broker_presence, broker_present, broker_publish,
)
from .channels import (
    END, HEARTBEAT, Accepted, Batch, Channel, Channels, End, Event, EventStream, Heartbeat,
    LongPoll,
    Message, PollBatch, PollWaiter, RawSSEBatch, RawSubscription, SSEBatch, Subscription,
    channel, channels, encode_event, end_stream, publish, request_last_id, subscribe,
    unsubscribe,
)

__all__ = [
    "Channels", "Channel", "Event", "Message", "EventStream", "LongPoll", "Subscription",
    "RawSubscription", "PollWaiter", "Batch", "SSEBatch", "RawSSEBatch", "PollBatch",
    "Heartbeat", "HEARTBEAT", "End", "END",
    "channels", "channel", "publish", "subscribe", "unsubscribe", "encode_event", "end_stream",
    "request_last_id", "Accepted", "Publication", "BrokerUnavailable", "LocalBroker", "LOCAL",
    "broker_publish", "broker_join", "broker_add", "broker_leave",
    "broker_present", "broker_presence",
]
