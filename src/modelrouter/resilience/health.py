"""Active health checks: one probe loop per instance, marking it unhealthy after repeated failed probes and
healthy again after good ones.

    healthy --(unhealthy_after failed probes in a row)--> unhealthy
    unhealthy --(healthy_after good probes in a row)--> healthy

A probe is one request (``health_check.method`` to ``Instance.probe_url``, with the instance's own headers so
that cloud backends see their API key) whose status must be one of ``expected_status``; a connection error,
a timeout or a broken answer is a failed probe. Every good probe also tells the circuit breaker
(``health_ok``), so an open breaker tries the instance again within one interval instead of waiting out its
period.

The checker owns only the probe loops and the counters; the verdict is written to ``Instance.healthy``, which
the balancers read. ``watch`` is given the routing table's instances at startup and after every reload.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable

from ..config.model import HealthCheckConfig, Timeouts
from ..errors import GatewayError
from ..routing.instance import Instance
from ..upstream.base import Transport, UpstreamRequest, UpstreamResponse

__all__ = ["HealthChecker", "ProbeState"]

log = logging.getLogger("modelrouter.health")

# Most of a probe's answer is read so that its keep-alive connection goes back to the pool; a backend that
# answers a health check with more than this is cut off (its connection dropped) rather than read on.
_MAX_PROBE_BODY = 64 * 1024

# What a running loop was started with; a reload that changes any of it restarts the loop.
_Settings = tuple[str | None, HealthCheckConfig, tuple[tuple[str, str], ...]]


def _settings(instance: Instance) -> _Settings:
    return instance.probe_url, instance.health, tuple(instance.headers.items())


class ProbeState:
    """The checker's view of one instance: consecutive counters, the last outcome, and its probe loop."""

    __slots__ = ("failures", "instance", "last_at", "last_error", "probes", "settings", "successes", "task")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.settings = _settings(instance)
        self.task: asyncio.Task[None] | None = None
        self.successes = 0  # good probes in a row
        self.failures = 0  # failed probes in a row
        self.probes = 0  # all probes sent
        self.last_error: str | None = None  # why the latest failed probe failed
        self.last_at: float | None = None  # clock time of the latest probe's end

    def __repr__(self) -> str:
        health = "healthy" if self.instance.healthy else "UNHEALTHY"
        last = f" last_error={self.last_error!r}" if self.failures else ""
        return (
            f"<ProbeState {self.instance.id} {health} successes={self.successes} failures={self.failures} "
            f"probes={self.probes}{last}>"
        )


class HealthChecker:
    """Probe loops for the instances given to ``watch``; ``aclose`` stops them all.

    ``clock`` and ``rng`` are injectable so that tests are deterministic; ``probe_once`` runs one probe and its
    state transition without any sleeping.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._states: dict[Instance, ProbeState] = {}  # Instance hashes by identity: the same object is kept
        self._stopping: set[asyncio.Task[None]] = set()  # cancelled loops not yet finished; aclose awaits them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------------
    def watch(self, instances: Iterable[Instance]) -> None:
        """Probe exactly these instances (those with checks enabled) from now on.

        Loops of instances still present with unchanged settings keep running (their counters too); loops of
        instances no longer present are stopped; new instances get a loop whose first probe is immediate.
        The first call must come from within the running event loop that is to run the probes. Later calls
        may come from another thread (a reload driven from outside the loop); they are then applied on it.
        """
        wanted = list(instances)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None:
            if running is None:
                raise RuntimeError("HealthChecker.watch() must first be called inside the running event loop")
            self._loop = running
        if running is self._loop:
            self._apply(wanted)
        else:
            self._loop.call_soon_threadsafe(self._apply, wanted)

    def _apply(self, instances: list[Instance]) -> None:
        if self._closed:
            return  # a reload racing with shutdown must not start probing again
        present = set(instances)
        for instance, state in list(self._states.items()):
            if instance not in present:
                self._stop(state)
                del self._states[instance]
            elif instance.probe_url is None:
                self._stop(state)
                del self._states[instance]
                if not instance.healthy:
                    # Nothing would ever mark it healthy again: without checks, the breaker alone guards it.
                    instance.healthy = True
                    log.info("%s: health checks turned off; taken as healthy", instance.id)
        for instance in instances:
            if instance.probe_url is None:
                continue
            current = self._states.get(instance)
            if current is not None and current.settings == _settings(instance):
                if current.task is not None and not current.task.done():
                    continue
                state = current
            else:
                if current is not None:
                    # New path, interval, thresholds...: counts made under the old settings do not carry over.
                    self._stop(current)
                state = self._states[instance] = ProbeState(instance)
            state.task = asyncio.get_running_loop().create_task(self._run(state), name=f"health {instance.id}")

    def _stop(self, state: ProbeState) -> None:
        task = state.task
        state.task = None
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def aclose(self) -> None:
        """Stop every loop and wait until they have finished; later ``watch`` calls do nothing."""
        self._closed = True
        for state in self._states.values():
            self._stop(state)
        self._states.clear()
        tasks = list(self._stopping)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- probing -------------------------------------------------------------------------------------
    async def _run(self, state: ProbeState) -> None:
        instance = state.instance
        while True:
            started = self._clock()
            if instance.probe_url is not None:  # turned off by a reload not yet passed to watch()
                try:
                    await self._probe_and_apply(state, instance.probe_url)
                except Exception:
                    # A bug here must not end probing for good: the instance could then stay unhealthy forever.
                    log.exception("%s: health probe failed unexpectedly", instance.id)
            health = instance.health
            # Jitter spreads the probes of instances started together over the interval.
            delay = health.interval * (1 + self._rng.uniform(-health.jitter, health.jitter))
            await asyncio.sleep(max(delay - (self._clock() - started), 0.0))

    async def probe_once(self, instance: Instance) -> bool:
        """Send one probe to ``instance``, apply its outcome to the counters and ``instance.healthy``, and
        return whether it succeeded. Never raises for a backend failure."""
        url = instance.probe_url
        if url is None:
            raise ValueError(f"{instance.id} has health checks turned off")
        state = self._states.get(instance)
        if state is None:  # probed without watch() (tests, one-off checks): counters are kept all the same
            state = self._states[instance] = ProbeState(instance)
        return await self._probe_and_apply(state, url)

    async def _probe_and_apply(self, state: ProbeState, url: str) -> bool:
        # The loop passes its own state: a loop being replaced after a reload must not count into the new one.
        instance = state.instance
        health = instance.health
        error = None
        try:
            async with asyncio.timeout(health.timeout):
                error = await self._probe(url, instance, health)
        except TimeoutError:
            error = f"no answer within {health.timeout:g}s"
        except GatewayError as exc:
            error = exc.message
        except Exception as exc:  # transports should raise GatewayError only; a probe must survive one that does not
            error = f"{type(exc).__name__}: {exc}"
        state.probes += 1
        state.last_at = self._clock()
        if error is None:
            self._succeeded(state)
            return True
        self._failed(state, error)
        return False

    async def _probe(self, url: str, instance: Instance, health: HealthCheckConfig) -> str | None:
        """One request; None if it succeeded, else why not."""
        t = health.timeout
        request = UpstreamRequest(
            health.method, url, instance.headers, None, Timeouts(connect=t, first_byte=t, idle=t, total=t)
        )
        response = await self._transport.send(request)
        try:
            if response.status not in health.expected_status:
                return f"status {response.status}"
            if health.method != "HEAD":
                await _drain(response)
            return None
        finally:
            response.close()

    def _succeeded(self, state: ProbeState) -> None:
        instance = state.instance
        state.failures = 0
        state.successes += 1
        instance.breaker.health_ok()
        if not instance.healthy and state.successes >= instance.health.healthy_after:
            instance.healthy = True
            log.info("%s is healthy again after %d good probe(s)", instance.id, state.successes)

    def _failed(self, state: ProbeState, error: str) -> None:
        instance = state.instance
        state.successes = 0
        state.failures += 1
        state.last_error = error
        if instance.healthy and state.failures >= instance.health.unhealthy_after:
            instance.healthy = False
            log.warning("%s is unhealthy after %d failed probe(s): %s", instance.id, state.failures, error)

    # -- inspection ----------------------------------------------------------------------------------
    def state(self, instance: Instance) -> ProbeState | None:
        """The counters kept for ``instance`` (None if it is not probed)."""
        return self._states.get(instance)

    def __repr__(self) -> str:
        watched = [s for s in self._states.values() if s.task is not None]
        unhealthy = [s for s in self._states.values() if not s.instance.healthy]
        detail = "".join(f" {s!r}" for s in unhealthy[:3])
        more = f" (+{len(unhealthy) - 3} more)" if len(unhealthy) > 3 else ""
        closed = " closed" if self._closed else ""
        return f"<HealthChecker{closed} watching={len(watched)} unhealthy={len(unhealthy)}{detail}{more}>"


async def _drain(response: UpstreamResponse) -> None:
    """Read the answer up to ``_MAX_PROBE_BODY``; a broken body is a failed probe (the error propagates)."""
    chunks = response.iter_chunks()
    try:
        seen = 0
        async for chunk in chunks:
            seen += len(chunk)
            if seen >= _MAX_PROBE_BODY:
                return
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
