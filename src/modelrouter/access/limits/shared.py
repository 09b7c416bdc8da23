"""Limiter state in Redis (``state.backend: redis``), shared by every process and replica.

All the buckets one request falls under are taken by one call of ``state/limits.lua``: the same algorithms as
``algorithms.py``, step for step, atomic in Redis, with Redis's clock (``TIME``) so that replicas whose clocks
differ still count one set of windows. All limits or none, as in this process: at a refusal the script gives the
earlier takes back before it returns. The calls of one event-loop tick share one pipeline (``SharedState``).

When Redis cannot answer, ``state.on_error`` decides: ``allow`` takes from buckets in this process instead (the
request is admitted and limited as one process would; the shared counts miss it), ``deny`` refuses with 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from ...config.model import LimitRule
from ...errors import GatewayError
from ...state import SharedState, StateUnavailable, script
from .base import Decision
from .memory import MemoryBackend

__all__ = ["RedisBackend", "SharedStateUnavailable"]

_Item = tuple[str, float, LimitRule]
_FIELDS = 6  # a decision's numbers, as the script returns them


class SharedStateUnavailable(GatewayError):
    """``state.on_error: deny`` and Redis did not answer: the limits cannot be checked, so nothing is admitted."""

    status = 503
    type = "overloaded_error"
    code = "state_unavailable"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


class RedisBackend:
    """``redis_time=False`` uses the ``now`` the limiter passes instead of Redis's clock (tests compare the script
    with the in-process algorithms at chosen times)."""

    __slots__ = ("local", "redis_time", "script", "state")

    def __init__(self, state: SharedState, *, redis_time: bool = True) -> None:
        self.state = state
        self.script = script("limits.lua")
        self.redis_time = redis_time
        self.local = MemoryBackend()  # on_error: allow - the buckets used while Redis cannot answer

    async def take_all(self, items: Sequence[_Item], now: float) -> tuple[Decision | None, list[Decision]]:
        try:
            flat = await self.state.run(self.script, self._keys(items), self._args("take", items, now))
        except StateUnavailable as exc:
            if not self.state.allow_on_error:
                raise SharedStateUnavailable(
                    "Rate limits cannot be checked right now (the shared state does not answer); try again"
                ) from exc
            return self.local.take_all(items, now)
        decisions = [
            Decision(
                flat[i] == b"1",
                float(flat[i + 1]),
                float(flat[i + 2]),
                float(flat[i + 3]),
                float(flat[i + 4]),
                float(flat[i + 5]),
            )
            for i in range(0, len(flat), _FIELDS)
        ]
        last = decisions[-1]
        return (None if last.allowed else last), decisions

    async def adjust_all(self, items: Sequence[_Item], now: float) -> None:
        # A correction Redis misses is lost (the request it corrects may have been counted there): applying it to
        # this process's buckets, which never counted that request, would be wrong twice.
        with contextlib.suppress(StateUnavailable):
            await self.state.run(self.script, self._keys(items), self._args("adjust", items, now))

    async def take(self, key: str, cost: float, now: float, rule: LimitRule) -> Decision:
        _, decisions = await self.take_all([(key, cost, rule)], now)
        return decisions[-1]

    async def adjust(self, key: str, delta: float, now: float, rule: LimitRule) -> None:
        await self.adjust_all([(key, delta, rule)], now)

    def _keys(self, items: Sequence[_Item]) -> list[str]:
        prefix = self.state.prefix + "limit:"
        return [prefix + key for key, _, _ in items]

    def _args(self, mode: str, items: Sequence[_Item], now: float) -> list[str | float]:
        args: list[str | float] = [mode, "" if self.redis_time else repr(now)]
        for _, amount, rule in items:
            args += (
                rule.algorithm,
                repr(amount),
                repr(rule.rate),
                repr(rule.period),
                repr(rule.burst or 0.0),
                repr(rule.max_wait),
                repr(rule.warmup),
                repr(rule.cold_factor),
            )
        return args

    def __repr__(self) -> str:
        return f"<RedisBackend {self.state!r}>"
