"""Rate limits, concurrency caps and quotas.

Algorithms are pure state steps (``algorithms``); a ``StateBackend`` keeps their states and runs a step
atomically per key (``MemoryBackend`` in this process; a shared one can follow the same interface); the
``Limiter`` takes a request from all its buckets at once. ``Concurrency`` and ``Quota`` are the per-key caps
that are not rates.
"""

from .algorithms import ALGORITHMS, Algorithm, FixedWindow, LeakyBucket, SlidingWindow, State, TokenBucket, Warmup
from .base import Decision, StateBackend
from .concurrency import Concurrency
from .limiter import Limiter
from .memory import MemoryBackend
from .quota import Quota, QuotaRefusal, QuotaUsage, key_rate_rules

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Concurrency",
    "Decision",
    "FixedWindow",
    "LeakyBucket",
    "Limiter",
    "MemoryBackend",
    "Quota",
    "QuotaRefusal",
    "QuotaUsage",
    "SlidingWindow",
    "State",
    "StateBackend",
    "TokenBucket",
    "Warmup",
    "key_rate_rules",
]
