"""Usage records: one per request, buffered and written to the store in batches off the request path
(``UsageRecorder``), bounded so that a store that is down costs memory only up to ``usage.buffer`` records.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..store.records import UsageRecord

if TYPE_CHECKING:
    from ..config.model import Config
    from ..store import Store

__all__ = ["UsageRecord", "UsageRecorder", "recorder_for"]

log = logging.getLogger("modelrouter.usage")


class UsageRecorder:
    """Buffers usage records and writes them in batches off the request path. If the store is slow or down,
    the buffer fills up to ``capacity``; further records are dropped and counted, and requests never wait."""

    def __init__(
        self,
        sink: Callable[[Sequence[UsageRecord]], Awaitable[None]],
        *,
        capacity: int = 10_000,
        batch: int = 500,
        interval: float = 1.0,
    ) -> None:
        self._sink = sink
        self._buffer: deque[UsageRecord] = deque()
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.dropped = 0
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, record: UsageRecord) -> None:
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            return
        self._buffer.append(record)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage recorder")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(self.batch, len(self._buffer)))]
            try:
                await self._sink(batch)
            except Exception as exc:  # the store is down: keep what fits, try again next time
                log.warning("could not write %d usage record(s): %s", len(batch), exc)
                room = self.capacity - len(self._buffer)
                self._buffer.extendleft(reversed(batch[:room]))
                self.dropped += max(len(batch) - room, 0)
                return
            self.written += len(batch)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    def __repr__(self) -> str:
        return f"<UsageRecorder buffered={len(self._buffer)} written={self.written} dropped={self.dropped}>"


def recorder_for(config: Config, store: Store | None, recorder: UsageRecorder | None) -> UsageRecorder | None:
    """The usage recorder ``config`` wants (``usage.enabled``, or by default when auth is on, and a store to write
    to): ``recorder`` retuned, a new one started, or None - the caller closes a ``recorder`` it no longer gets."""
    enabled = config.usage.enabled
    if store is None or not (enabled is True or (enabled is None and config.auth.enabled)):
        return None
    usage = config.usage
    if recorder is None:
        recorder = UsageRecorder(
            store.insert_usage, capacity=usage.buffer, batch=usage.batch, interval=usage.flush_interval
        )
        recorder.start()
    else:
        recorder.capacity, recorder.batch, recorder.interval = usage.buffer, usage.batch, usage.flush_interval
    return recorder
