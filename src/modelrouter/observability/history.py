"""The last hour of traffic, for the console's charts (``GET /admin/api/metrics/history``).

A sampler reads the counters the request path already keeps (metrics.py: requests by endpoint, model and status
with their durations; tokens by model and key; each instance's upstream durations and time to first byte) every
``interval`` seconds and keeps what changed since the previous sample as one point: per model (and for all
models together) requests/s, the share of 5xx answers, p50/p99 latency, tokens/min; per instance requests/s,
p50/p99 upstream latency, p50/p99 time to first token, and the breaker window's error rate. The request path does
nothing more for it: no per-request work, only a walk over the counters every few seconds, and ``keep`` points at
most (an hour at the default 10 s).

With ``serve --workers N`` the counters sampled are the whole gateway's (every worker's, as ``/metrics`` adds
them up), so any worker answers the same history; breakers are each worker's own, like everything in
``/admin/api/state``.

Percentiles come from the histogram buckets, interpolated within a bucket as Prometheus' ``histogram_quantile``
does: exact to a bucket's width, which is what a chart needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .metrics import Histogram, Labels, Metrics

__all__ = ["History", "quantile"]

log = logging.getLogger("modelrouter")

Point = dict[str, Any]


def quantile(q: float, bounds: tuple[float, ...], counts: list[float]) -> float | None:
    """The ``q`` quantile (0..1) of a histogram: ``counts`` per bucket (not cumulative, the +Inf one last) with
    upper ``bounds``. None without observations; the last finite bound when the quantile falls in +Inf."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


class History:
    """Points of traffic, the newest last. ``counters`` returns the counters to sample (the whole gateway's);
    ``error_rates`` each instance's breaker-window error rate, keyed by (service, instance)."""

    def __init__(
        self,
        counters: Callable[[], Metrics],
        error_rates: Callable[[], Iterable[tuple[Labels, float]]],
        *,
        interval: float = 10.0,
        keep: int = 360,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._error_rates = error_rates
        self.interval = interval
        self._clock = clock
        self.points: deque[Point] = deque(maxlen=keep)
        self._last: dict[str, dict[Labels, list[float]]] | None = None
        self._last_at = 0.0

    def sample(self) -> Point | None:
        """Take a sample; the point it makes (None for the first, which is only the baseline)."""
        metrics = self._counters()
        now = self._clock()
        current = {
            "requests": _copy(metrics.requests.series),
            "upstream_duration": _copy(metrics.upstream_duration.series),
            "upstream_ttft": _copy(metrics.upstream_ttft.series),
            "tokens": _copy(metrics.tokens),
        }
        last, last_at = self._last, self._last_at
        self._last, self._last_at = current, now
        if last is None or now <= last_at:
            return None
        seconds = now - last_at
        point: Point = {
            "t": round(now, 3),
            "seconds": round(seconds, 3),
            "models": self._models(metrics.requests, current, last, seconds),
            "instances": self._instances(metrics, current, last, seconds),
        }
        self.points.append(point)
        return point

    def since(self, after: float | None) -> list[Point]:
        """The points newer than ``after`` (unix seconds), oldest first; all of them for None."""
        if after is None:
            return list(self.points)
        return [point for point in self.points if point["t"] > after]

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        self.sample()  # the baseline
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sample()
            except Exception:  # a sample is worth losing; the gateway's job is not
                log.exception("could not sample the traffic history")

    # -- one point ---------------------------------------------------------------------------------------------

    def _models(
        self, requests: Histogram, current: dict[str, dict[Labels, list[float]]], last: dict[str, Any], seconds: float
    ) -> dict[str, Any]:
        bounds = requests.buckets
        size = len(bounds) + 1
        by_model: dict[str, tuple[list[float], list[float]]] = {}  # model -> (bucket counts, [5xx, 4xx])
        for (_endpoint, model, status), series in current["requests"].items():
            delta = _delta(series, last["requests"].get((_endpoint, model, status)))
            answered = sum(delta[:size])
            if answered <= 0:
                continue
            for name in (model, "*"):
                counts, errors = by_model.setdefault(name, ([0.0] * size, [0.0, 0.0]))
                for i in range(size):
                    counts[i] += delta[i]
                if status.startswith("5"):
                    errors[0] += answered
                elif status.startswith("4"):
                    errors[1] += answered
        tokens: dict[str, list[float]] = {}
        for (model, _key), pair in current["tokens"].items():
            delta = _delta(pair, last["tokens"].get((model, _key)))
            if not (delta[0] or delta[1]):
                continue
            for name in (model, "*"):
                sums = tokens.setdefault(name, [0.0, 0.0])
                sums[0] += delta[0]
                sums[1] += delta[1]
        out: dict[str, Any] = {}
        for name in sorted(set(by_model) | set(tokens)):
            counts, errors = by_model.get(name, ([0.0] * size, [0.0, 0.0]))
            answered = sum(counts)
            prompt, completion = tokens.get(name, (0.0, 0.0))
            out[name] = {
                "requests": int(answered),
                "rps": round(answered / seconds, 3),
                "error_rate": round(errors[0] / answered, 4) if answered else 0.0,
                "client_error_rate": round(errors[1] / answered, 4) if answered else 0.0,
                "p50_ms": _ms(quantile(0.5, bounds, counts)),
                "p99_ms": _ms(quantile(0.99, bounds, counts)),
                "prompt_tokens": int(prompt),
                "completion_tokens": int(completion),
                "tokens_per_min": round((prompt + completion) * 60 / seconds, 1),
            }
        return out

    def _instances(
        self, metrics: Metrics, current: dict[str, dict[Labels, list[float]]], last: dict[str, Any], seconds: float
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        rates = dict(self._error_rates())
        bounds = metrics.upstream_duration.buckets
        ttft_bounds = metrics.upstream_ttft.buckets
        size = len(bounds) + 1
        for labels in sorted(set(current["upstream_duration"]) | set(rates)):
            delta = _delta(current["upstream_duration"].get(labels, []), last["upstream_duration"].get(labels))
            ttft = _delta(current["upstream_ttft"].get(labels, []), last["upstream_ttft"].get(labels))
            counts = delta[:size] if delta else [0.0] * size
            answered = sum(counts)
            first = ttft[: len(ttft_bounds) + 1] if ttft else []
            out[labels[1]] = {
                "service": labels[0],
                "requests": int(answered),
                "rps": round(answered / seconds, 3),
                "p50_ms": _ms(quantile(0.5, bounds, counts)),
                "p99_ms": _ms(quantile(0.99, bounds, counts)),
                "ttft_p50_ms": _ms(quantile(0.5, ttft_bounds, first)) if first else None,
                "ttft_p99_ms": _ms(quantile(0.99, ttft_bounds, first)) if first else None,
                "error_rate": round(rates.get(labels, 0.0), 4),
            }
        return out

    def __repr__(self) -> str:
        return f"<History {len(self.points)} points every {self.interval:g}s>"


def _copy(series: dict[Labels, list[float]]) -> dict[Labels, list[float]]:
    return {labels: list(values) for labels, values in series.items()}


def _delta(now: list[float], before: list[float] | None) -> list[float]:
    """What a series gained since ``before``; all of it when it is new (or was reset, e.g. a restarted worker)."""
    if before is None or len(before) != len(now):
        return list(now)
    delta = [a - b for a, b in zip(now, before, strict=True)]
    return list(now) if any(d < 0 for d in delta) else delta


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
