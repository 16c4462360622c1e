"""Owns etcd watches: a prefix watch from a known revision that survives stream breaks.

`watch_prefix` yields `WatchBatch`es of events in revision order. After a break (etcd restart,
connection reset) it opens a new stream from the last event's `mod_revision + 1`, never from a
response's `header.revision + 1` (catch-up batches carry the current store revision, so that
would skip events). The one exception is a progress notification (no events), which etcd only
sends to a watcher that has caught up, so its header revision is safe to resume after.
A compacted start revision raises `WatchCompacted`: range the prefix again, then watch anew.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from hubspoke.api.etcd import kv_pb2, rpc_pb2
from hubspoke.etcd.client import EtcdClient
from hubspoke.etcd.errors import EtcdClosed, WatchCanceled, WatchCompacted
from hubspoke.etcd.records import KeyValue, prefix_end
from hubspoke.etcd.transport import is_rpc_error

log = logging.getLogger(__name__)

_WATCH = "/etcdserverpb.Watch/Watch"


class EventType(enum.Enum):
    PUT = kv_pb2.Event.PUT
    DELETE = kv_pb2.Event.DELETE


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: for DELETE, `kv` carries the key and the deleting revision only."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events of one watch response; empty with `is_progress` for a progress notification.

    After this batch the watcher has seen every change up to `resume_revision - 1`.
    """

    events: tuple[WatchEvent, ...]
    resume_revision: int
    is_progress: bool = False


def _event(ev: kv_pb2.Event) -> WatchEvent:
    prev = KeyValue.from_pb(ev.prev_kv) if ev.HasField("prev_kv") else None
    return WatchEvent(type=EventType(ev.type), kv=KeyValue.from_pb(ev.kv), prev_kv=prev)


async def watch_prefix(
    client: EtcdClient,
    prefix: bytes,
    start_revision: int,
    *,
    prev_kv: bool = False,
    progress_notify: bool = True,
    max_backoff: float = 1.0,
) -> AsyncGenerator[WatchBatch, None]:
    """Every change under `prefix` from `start_revision` (inclusive), forever.

    Resumes after stream breaks with a doubling backoff (capped at `max_backoff` seconds).
    Raises `WatchCompacted` when history from the resume revision is gone, `WatchCanceled`
    if etcd cancels the watch for another reason. Stop by breaking out or cancelling the task.
    """
    if start_revision <= 0:
        raise ValueError("watch from an explicit revision (read one first)")
    next_revision = start_revision
    backoff = 0.05
    while True:
        call: Any = client.transport.stream_stream(_WATCH, rpc_pb2.WatchResponse.FromString)
        try:
            create = rpc_pb2.WatchCreateRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                start_revision=next_revision,
                progress_notify=progress_notify,
                prev_kv=prev_kv,
            )
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            while True:
                response: Any = await call.read()
                if not isinstance(response, rpc_pb2.WatchResponse):
                    raise ConnectionError("watch stream ended")
                if response.compact_revision > 0:
                    raise WatchCompacted(response.compact_revision)
                if response.canceled:
                    raise WatchCanceled(response.cancel_reason or "watch canceled by etcd")
                if response.created:
                    backoff = 0.05
                if response.events:
                    events = tuple(_event(ev) for ev in response.events)
                    next_revision = events[-1].kv.mod_revision + 1
                    yield WatchBatch(events=events, resume_revision=next_revision)
                elif not response.created:
                    next_revision = max(next_revision, response.header.revision + 1)
                    yield WatchBatch(events=(), resume_revision=next_revision, is_progress=True)
        except (WatchCompacted, WatchCanceled, EtcdClosed):
            raise
        except Exception as err:
            if not (is_rpc_error(err) or isinstance(err, ConnectionError)):
                raise
            log.info("etcd_watch_resume prefix=%r from=%d after=%s", prefix, next_revision, err)
            client.transport.rotate()
        finally:
            call.cancel()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)
