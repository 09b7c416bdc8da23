"""The last resort when every instance failed: the stale-answer cache.

Off by default (``services.X.stale_cache.enabled``): it remembers successful non-streaming JSON answers and
serves one for an identical request only when no instance could answer. Bounded by entries, bytes and age.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from ..config.model import StaleCacheConfig
from ..endpoints import Endpoint

if TYPE_CHECKING:
    from ..dataplane.responses import Response
    from ..routing.router import Pool

__all__ = ["StaleCache", "StaleCaches"]


class StaleCache:
    def __init__(self, config: StaleCacheConfig) -> None:
        self.config = config
        self._entries: OrderedDict[bytes, tuple[float, Response, int]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(endpoint: Endpoint, payload: dict[str, Any]) -> bytes:
        # Sorted keys: the same request written in another key order is the same request.
        canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(endpoint.name.encode() + b"\0" + canonical, digest_size=16).digest()

    def put(self, key: bytes, response: Response) -> None:
        size = len(response.body) + 64 * len(response.headers)
        if size > self.config.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        self._entries[key] = (time.monotonic() + self.config.ttl, response, size)
        self._bytes += size
        while len(self._entries) > self.config.max_entries or self._bytes > self.config.max_bytes:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def lookup(self, key: bytes) -> Response | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            self._bytes -= entry[2]
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<StaleCache {len(self._entries)} entries, {self._bytes} bytes, ttl={self.config.ttl:g}s>"


class StaleCaches:
    """One cache per (service, model), kept across config reloads while still enabled."""

    def __init__(self) -> None:
        self._caches: dict[tuple[str, str], StaleCache] = {}

    def get(self, pool: Pool) -> StaleCache | None:
        config = pool.settings.stale_cache
        if not config.enabled:
            return None
        cache = self._caches.get((pool.service, pool.model))
        if cache is None:
            cache = self._caches[(pool.service, pool.model)] = StaleCache(config)
        cache.config = config
        return cache
