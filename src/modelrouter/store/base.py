"""What every part of the store shares: the engine, how to open a read or a write, and the clock."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from .aio import AsyncConnection, AsyncEngine
from .engine import WRITE

__all__ = ["StoreBase"]


class StoreBase:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE: True})
        self._clock = clock

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for queries; its implicit transaction is rolled back on exit."""
        return self._engine.connect()

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction committed on normal exit, rolled back on an exception."""
        return self._writer.begin()

    def _now(self) -> float:
        return self._clock()
