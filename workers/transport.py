"""The Redis transport of the mkd queue: kombu's, except that junk on a queue is dropped.

kombu's Redis channel pops a message with ``BRPOP`` and decodes it in the worker's event
loop (``Channel._brpop_read`` -> ``json.loads`` -> ``virtual.Message(...)`` -> Celery's
``on_task_received``). Anything that raises there escapes the event loop and Celery stops
the worker ("Unrecoverable error: JSONDecodeError"): one ``redis-cli LPUSH mkd x`` by anyone
who can write to Redis would stop every worker that pops it. Celery's own hooks
(``on_decode_error``, ``on_unknown_message``, ``on_unknown_task``, ``on_invalid_task``)
only run once kombu has built a message, so the guard has to sit in the transport:

- ``Channel._brpop_read``: the popped item is already gone from Redis; if it is not JSON,
  or not a kombu envelope, it is logged and dropped and the loop goes on.
- ``Transport._deliver``: if building the message or Celery's handler fails on a
  malformed envelope after kombu recorded it as unacked, the record is removed as well,
  so the junk is not restored (and dropped again) after the visibility timeout.
- ``QoS.restore_by_tag``: junk written straight into the ``unacked`` hash would otherwise
  fail every restore pass ("Error in timer", forever); it is logged and removed.

Only errors of decoding (``ValueError``, ``TypeError``, ``KeyError``...) are caught;
connection errors still reach kombu's reconnect logic. Producers use the same class
(``broker_transport`` in :mod:`workers.celery_app`), which changes nothing for them.
"""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_logger
from kombu.transport import redis as kombu_redis

log = get_logger("mkd.transport")

#: What decoding an arbitrary item as a kombu message can raise (binascii.Error and
#: json.JSONDecodeError are ValueErrors).
MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError, UnicodeError)

#: At most this much of a dropped message goes to the log.
PREVIEW_CHARS = 200


def preview(raw: Any) -> str:
    """A short, one-line repr of a dropped item for the log."""
    text = repr(raw)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."


def _delivery_tag(raw: Any) -> Any:
    """The envelope's delivery tag if it has a usable one, else None."""
    try:
        tag = raw["properties"]["delivery_tag"]
    except (TypeError, KeyError):
        return None
    return tag if isinstance(tag, (str, int)) else None


class QoS(kombu_redis.QoS):
    """kombu's unacked-message bookkeeping; an undecodable unacked record is removed."""

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        try:
            super().restore_by_tag(tag, client, leftmost)
        except MALFORMED as exc:
            log.error("dropped a malformed unacked message %s: %s: %s", preview(tag), type(exc).__name__, exc)
            with self.channel.conn_or_acquire(client) as conn:
                self._remove_from_indices(tag, conn.pipeline()).execute()


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; an undecodable popped item is logged and dropped."""

    QoS = QoS

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return super()._brpop_read(**options)
        except MALFORMED as exc:
            # Raised by json.loads of the popped item (the envelope errors are handled
            # in Transport._deliver); the item is already off the list.
            log.error("dropped a malformed message (not a JSON message envelope): %s: %s", type(exc).__name__, exc)
            return True


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`; a bad envelope is dropped."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        try:
            super()._deliver(message, queue)
        except MALFORMED as exc:
            log.error("dropped a malformed message on queue %r: %s: %s; message: %s",
                      queue, type(exc).__name__, exc, preview(message))
            self._forget(message)

    def _forget(self, message: Any) -> None:
        """Remove the message's unacked record if kombu made one before failing."""
        tag = _delivery_tag(message)
        if tag is None:
            return
        for channel in self.channels:
            if channel and tag in channel.qos._delivered:
                try:
                    channel.qos.reject(tag, requeue=False)
                except Exception as exc:  # the broker went away meanwhile: nothing to clean
                    log.warning("could not forget dropped message %r: %s", tag, exc)

