"""Prometheus metrics, kept cheap on the request path.

Counters and histograms the request path moves are plain dicts of numbers keyed by label tuples: one dict lookup
and an add per event, no locks (one event loop per process), no prometheus_client objects on the hot path. Gauges
(in-flight, health, breaker state, config version, dropped usage records) are not tracked at all: they are read
from the live objects when ``/metrics`` is scraped, so they cost nothing between scrapes and cannot drift from
the truth. ``prometheus_client`` only formats the exposition, through a custom collector.

Labels are bounded: endpoints, configured model names (anything else is ``other``), instances and services from
the config, HTTP statuses, rate-limit scopes, key ids (created by admins). No raw user input becomes a label.

With several worker processes, each writes a snapshot of its counters to a shared directory and the worker that
answers a scrape adds them up (``Metrics.snapshot`` / ``merge``), so every scrape sees the whole gateway.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .meter import Ended

__all__ = ["DURATION_BUCKETS", "Gauge", "Histogram", "Metrics", "render"]

# Seconds. Gateway overhead is sub-millisecond and model answers take seconds to minutes: both ends matter.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

Labels = tuple[str, ...]


class Histogram:
    """Per label tuple: a count per bucket (not cumulative; the +Inf one last) and then the sum."""

    __slots__ = ("buckets", "series", "total")

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.series: dict[Labels, list[float]] = {}
        self.total = len(buckets) + 1  # where a series keeps its sum

    def at(self, labels: Labels) -> list[float]:
        """The series of ``labels``, made on first use."""
        return self.series.get(labels) or self.series.setdefault(labels, [0.0] * (self.total + 1))


class Metrics:
    """The gateway's counters and histograms. ``model_names`` says which model names may be labels."""

    def __init__(self) -> None:
        # One series per (endpoint, model, status) gives both the request count and the duration histogram (the
        # exposition adds over status for the latter): one dict lookup per request instead of two.
        self.requests = Histogram()  # (endpoint, model, status)
        self.upstream_duration = Histogram()  # (service, instance)
        self.upstream_ttft = Histogram()  # (service, instance)
        self.tokens: dict[Labels, list[float]] = {}  # (model, key) -> [prompt, completion]
        self.retries: dict[Labels, float] = {}  # (service, model)
        self.fallbacks: dict[Labels, float] = {}  # (service, model)
        self.rate_limited: dict[Labels, float] = {}  # (scope,)
        self.usage_dropped: dict[Labels, float] = {}  # (): copied from the usage recorder at each scrape
        self.state_errors: dict[Labels, float] = {}  # (): copied from the shared state at each scrape
        self.model_names: frozenset[str] = frozenset()

    @staticmethod
    def count(counter: dict[Labels, float], labels: Labels, amount: float = 1.0) -> None:
        counter[labels] = counter.get(labels, 0.0) + amount

    def ended(self, batch: Iterable[Ended]) -> None:
        """Count requests that ended: by endpoint, model and status with their durations, their tokens by model
        and key, and the answering upstream's timings by instance. Called for a batch at a time
        (observe.py), so the loop is written out in full; a request with the same labels as the one before
        (most of a batch) reuses its series without a lookup."""
        requests = self.requests
        buckets = requests.buckets
        known = self.model_names
        tokens = self.tokens
        upstream_ttft = self.upstream_ttft
        upstream_duration = self.upstream_duration
        ttft_buckets = upstream_ttft.buckets
        duration_buckets = upstream_duration.buckets
        last: tuple[str, str | None, int] | None = None
        last_key: str | None = None
        last_upstream: Labels | None = None
        counts: list[float] = []
        pair: list[float] = []
        ttft: list[float] = []
        duration: list[float] = []
        label = ""
        # Adding float to float, at a non-negative index, is what CPython's specialised instructions cover:
        # `+= 1` or `[-1]` take the slower generic path.
        total = requests.total
        ttft_total = upstream_ttft.total
        duration_total = upstream_duration.total
        for endpoint, meter, status, seconds, _, key_id, _ in batch:
            model = meter.model
            if last is None or last[0] is not endpoint or last[1] is not model or last[2] != status:
                last = (endpoint, model, status)
                label = (model if model in known else "other") if model else "none"
                counts = requests.at((endpoint, label, str(status)))
                pair = []
            counts[bisect_left(buckets, seconds)] += 1.0
            counts[total] += seconds
            prompt = meter.prompt_tokens
            completion = meter.completion_tokens
            if prompt or completion:
                if not pair or key_id is not last_key:
                    last_key = key_id
                    key = (label, key_id or "none")
                    pair = tokens.get(key) or tokens.setdefault(key, [0, 0])  # ints, added to ints
                pair[0] += prompt
                pair[1] += completion
            upstream = meter.upstream_labels
            if upstream is not None:
                if upstream is not last_upstream:
                    last_upstream = upstream
                    ttft = upstream_ttft.at(upstream)
                    duration = upstream_duration.at(upstream)
                first = meter.ttft_s or 0.0
                ttft[bisect_left(ttft_buckets, first)] += 1.0
                ttft[ttft_total] += first
                answer = meter.answer_s
                duration[bisect_left(duration_buckets, answer)] += 1.0
                duration[duration_total] += answer

    # -- several processes -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything this process counted, as JSON-ready data."""
        out: dict[str, Any] = {}
        for name, counter in self._counters():
            out[name] = [[list(k), v] for k, v in counter.items()]
        for name, series in self._series():
            out[name] = [[list(k), v] for k, v in series.items()]
        return out

    def merge(self, snapshots: Iterable[dict[str, Any]]) -> Metrics:
        """A Metrics holding this process's counts plus those of ``snapshots`` (other processes')."""
        total = Metrics()
        total.model_names = self.model_names
        for source in (self.snapshot(), *snapshots):
            for name, counter in total._counters():
                for labels, value in source.get(name, ()):
                    Metrics.count(counter, tuple(labels), value)
            for name, all_series in total._series():
                for labels, values in source.get(name, ()):
                    key = tuple(labels)
                    series = all_series.get(key)
                    if series is None or len(series) != len(values):
                        all_series[key] = list(values)
                    else:
                        all_series[key] = [a + b for a, b in zip(series, values, strict=True)]
        return total

    def _counters(self) -> list[tuple[str, dict[Labels, float]]]:
        return [
            ("retries", self.retries),
            ("fallbacks", self.fallbacks),
            ("rate_limited", self.rate_limited),
            ("usage_dropped", self.usage_dropped),
            ("state_errors", self.state_errors),
        ]

    def _series(self) -> list[tuple[str, dict[Labels, list[float]]]]:
        """What is kept as lists of numbers per label tuple (added up element by element when merged)."""
        return [
            ("requests", self.requests.series),
            ("upstream_duration", self.upstream_duration.series),
            ("upstream_ttft", self.upstream_ttft.series),
            ("tokens", self.tokens),
        ]


# --- exposition ---------------------------------------------------------------------------------------------------

Gauge = tuple[str, str, list[tuple[dict[str, str], float]]]  # name, help, samples


def render(metrics: Metrics, gauges: Callable[[], Iterable[Gauge]]) -> tuple[bytes, str]:
    """The Prometheus text exposition (body, content type) of ``metrics`` and the live ``gauges``."""
    from prometheus_client import CollectorRegistry, generate_latest  # only a scrape pays for the import
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, gauges))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, metrics: Metrics, gauges: Callable[[], Iterable[Gauge]]) -> None:
        self.metrics = metrics
        self.gauges = gauges

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        m = self.metrics
        requests = {labels: sum(series[:-1]) for labels, series in m.requests.series.items()}
        durations = Histogram(m.requests.buckets)
        for (endpoint, model, _status), series in m.requests.series.items():
            summed = durations.series.get((endpoint, model))
            durations.series[(endpoint, model)] = (
                list(series) if summed is None else [a + b for a, b in zip(summed, series, strict=True)]
            )
        tokens: dict[Labels, float] = {}
        for (model, key), (prompt, completion) in m.tokens.items():
            tokens[(model, key, "prompt")] = prompt
            tokens[(model, key, "completion")] = completion
        counters: list[tuple[str, str, tuple[str, ...], dict[Labels, float]]] = [
            (
                "modelrouter_requests",
                "Requests answered, by endpoint, model and HTTP status",
                ("endpoint", "model", "status"),
                requests,
            ),
            (
                "modelrouter_tokens",
                "Tokens used, by model, client key and kind (prompt, completion)",
                ("model", "key", "kind"),
                tokens,
            ),
            (
                "modelrouter_retries",
                "Extra upstream attempts after a failed one (failover to another instance)",
                ("service", "model"),
                m.retries,
            ),
            (
                "modelrouter_fallbacks",
                "Requests answered by a fallback model after every instance of theirs failed",
                ("service", "model"),
                m.fallbacks,
            ),
            (
                "modelrouter_rate_limited",
                "Requests refused by a rate limit, concurrency cap or quota, by scope",
                ("scope",),
                m.rate_limited,
            ),
            (
                "modelrouter_usage_records_dropped",
                "Usage records dropped because the store could not keep up",
                (),
                m.usage_dropped,
            ),
            (
                "modelrouter_state_errors",
                "Calls to the shared state (state.backend: redis) that it did not answer; state.on_error applied",
                (),
                m.state_errors,
            ),
        ]
        for name, doc, label_names, values in counters:
            family = CounterMetricFamily(name, doc, labels=label_names)
            for labels, value in values.items():
                family.add_metric(list(labels), value)
            yield family
        histograms: list[tuple[str, str, tuple[str, ...], Histogram]] = [
            (
                "modelrouter_request_duration_seconds",
                "Time from request to the end of the answer, at the gateway",
                ("endpoint", "model"),
                durations,
            ),
            (
                "modelrouter_upstream_duration_seconds",
                "Time from sending to an instance to the end of its answer",
                ("service", "instance"),
                m.upstream_duration,
            ),
            (
                "modelrouter_upstream_ttft_seconds",
                "Time from sending to an instance to its first byte (first token when streaming)",
                ("service", "instance"),
                m.upstream_ttft,
            ),
        ]
        for name, doc, label_names, hist in histograms:
            family_h = HistogramMetricFamily(name, doc, labels=label_names)
            for labels, series in hist.series.items():
                cumulative, running = [], 0.0
                for bound, count in zip((*hist.buckets, float("inf")), series[:-1], strict=True):
                    running += count
                    cumulative.append((_bound(bound), running))
                family_h.add_metric(list(labels), cumulative, series[-1])
            yield family_h
        for gauge_name, gauge_doc, samples in self.gauges():
            gauge_labels = sorted({k for sample_labels, _ in samples for k in sample_labels})
            family_g = GaugeMetricFamily(gauge_name, gauge_doc, labels=gauge_labels)
            for sample_labels, value in samples:
                family_g.add_metric([sample_labels.get(k, "") for k in gauge_labels], value)
            yield family_g


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))
