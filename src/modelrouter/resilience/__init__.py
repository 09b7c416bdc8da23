"""Surviving backends that fail: the per-instance circuit breaker (``breaker``), active health checks
(``health``), and the stale-answer cache used when every instance failed (``stale``)."""
