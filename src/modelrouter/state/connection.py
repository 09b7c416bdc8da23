"""``SharedState``: the gateway's connection to Redis for shared counts.

Every call is a Lua script (atomic where the state is). Calls made in one event-loop tick - the limits of every
request that arrived together - go to Redis as one pipeline: one round trip and one system call for all of them,
which is what keeps a shared limit cheap next to the rest of a request. A call that Redis does not answer within
``state.timeout_ms`` (or while it is down) raises ``StateUnavailable``; the caller applies ``state.on_error``.
After a failure, calls fail at once for a short, growing back-off (0.1 s doubling to 5 s) instead of each waiting
out the timeout; the first call after it tries Redis again, so recovery needs no restart. One log line says Redis
went away, one says it is back, and one per minute in between says how many calls it failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..config.model import StateConfig, split_address

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Script", "SharedState", "StateUnavailable", "script"]

log = logging.getLogger("modelrouter.state")

_MIN_BACKOFF = 0.1
_MAX_BACKOFF = 5.0
_REPORT_EVERY = 60.0


class StateUnavailable(Exception):
    """Redis did not answer (down, unreachable, slower than ``state.timeout_ms``, or refused the call)."""


class Script:
    """A Lua script of this package, by its SHA1 (what EVALSHA runs)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def script(name: str) -> Script:
    """The script ``name`` (e.g. ``limits.lua``) shipped in this package."""
    return Script(name, resources.files(__package__).joinpath(name).read_text())


class SharedState:
    """One Redis, from ``state.url`` or ``state.sentinel``. ``key(...)`` puts ``state.prefix`` before a name;
    ``run(script, keys, args)`` is one atomic call, batched with the others of its tick."""

    def __init__(
        self,
        config: StateConfig,
        *,
        redis: Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.prefix = config.prefix
        self.timeout = config.timeout_ms / 1000
        self.allow_on_error = config.on_error == "allow"
        self.redis = redis if redis is not None else _connect(config, self.timeout)
        self.errors = 0  # calls that failed, ever (modelrouter_state_errors_total)
        self._clock = clock
        self._queue: list[tuple[Script, Sequence[str], Sequence[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._down_until = 0.0
        self._backoff = 0.0
        self._failed_calls = 0  # since the last report
        self._reported_at = 0.0
        self._down_since: float | None = None

    def key(self, name: str) -> str:
        return self.prefix + name

    @property
    def available(self) -> bool:
        """False while backing off after a failure (calls then fail without trying Redis)."""
        return self._clock() >= self._down_until

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._clock() < self._down_until:
            self._failed(None)
            raise StateUnavailable("Redis is not answering (backing off)")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Script, Sequence[str], Sequence[Any], asyncio.Future[Any]]]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                results = await self._pipeline([(s, k, a) for s, k, a, _ in batch])
        except Exception as exc:  # connection refused or reset, timeout, a failover in progress, an auth error
            self._failed(exc, len(batch))
            for *_, future in batch:
                if not future.done():
                    future.set_exception(StateUnavailable(f"Redis did not answer: {exc!r}"))
            return
        self._recovered()
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the request that asked is gone (cancelled)
            if isinstance(result, Exception):  # e.g. OOM, or a script error: counted, Redis itself answers
                self._failed(None)
                future.set_exception(StateUnavailable(f"Redis refused the call: {result}"))
            else:
                future.set_result(result)

    async def _pipeline(self, calls: list[tuple[Script, Sequence[str], Sequence[Any]]]) -> list[Any]:
        from redis.exceptions import NoScriptError

        results = await self._execute(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # a Redis that restarted, or was flushed, since the scripts were loaded: load and run again
            for name_script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
                await self.redis.script_load(name_script.source)
            again = await self._execute([calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _execute(self, calls: list[tuple[Script, Sequence[str], Sequence[Any]]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for lua, keys, args in calls:
            pipe.evalsha(lua.sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    def _failed(self, exc: BaseException | None, calls: int = 1) -> None:
        now = self._clock()
        self._failed_calls += calls
        self.errors += calls
        if exc is None:
            return  # a call refused during the back-off: counted, nothing new to say
        self._backoff = min(max(self._backoff * 2, _MIN_BACKOFF), _MAX_BACKOFF)
        self._down_until = now + self._backoff
        if self._down_since is None:
            self._down_since = now
            self._reported_at = now
            self._failed_calls = 0
            log.warning(
                "Redis (state.backend) is not answering: %r; limits %s until it does",
                exc,
                "count in this process" if self.allow_on_error else "refuse requests (503)",
            )
        elif now - self._reported_at >= _REPORT_EVERY:
            log.warning(
                "Redis still not answering: %d calls failed in the last %.0f s",
                self._failed_calls,
                now - self._reported_at,
            )
            self._reported_at = now
            self._failed_calls = 0

    def _recovered(self) -> None:
        self._backoff = 0.0
        if self._down_since is not None:
            log.warning("Redis (state.backend) answers again after %.1f s", self._clock() - self._down_since)
            self._down_since = None

    async def aclose(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await self.redis.aclose()

    def __repr__(self) -> str:
        state = "up" if self._down_since is None else "down"
        return f"<SharedState {self.prefix!r} {state}>"


def _connect(config: StateConfig, timeout: float) -> Redis:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # Commands are never retried by redis-py: a take that was sent and not answered may have counted, and a
        # retry would count it twice. The next call reconnects.
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
    if config.sentinel is not None:
        nodes = [split_address(node) for node in config.sentinel.nodes]
        sentinel = Sentinel(nodes, sentinel_kwargs={"socket_timeout": timeout}, **options)  # type: ignore[no-untyped-call,unused-ignore]
        master: Redis = sentinel.master_for(config.sentinel.master)
        return master
    assert config.url is not None
    return Redis.from_url(config.url, **options)
