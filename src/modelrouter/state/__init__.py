"""Shared state (``state.backend: redis``): the counts behind limits, quotas and concurrency caps kept in one Redis
that every process and replica of a gateway uses, so that a limit means the same however many serve it.

``SharedState`` is the connection: scripts, one pipeline per event-loop tick, the timeout and what happens when
Redis cannot answer. The Lua scripts next to it are the algorithms, run atomically where the state is. Nothing
here is imported unless the config asks for Redis.
"""

from .connection import SharedState, StateUnavailable, script

__all__ = ["SharedState", "StateUnavailable", "script"]
