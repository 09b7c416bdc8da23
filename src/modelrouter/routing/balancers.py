"""Load-balancing strategies: one class each, and the ``BALANCERS`` name -> class table the config refers to.

A balancer is built once per pool per config and picks among the instances that are usable right now (a subset
of the pool that health and breakers may shrink). Picks never allocate more than they must: this runs on
every request.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence

from .instance import Instance

__all__ = [
    "BALANCERS",
    "Balancer",
    "ConsistentHash",
    "IpHash",
    "LeastConnections",
    "PeakEwmaP2C",
    "SmoothRoundRobin",
    "WeightedRandom",
]


class Balancer:
    #: True if ``select`` needs a hash key (client IP, user, header) in ``key``.
    needs_key = False

    def __init__(self, pool: Sequence[Instance]) -> None:
        self.pool = tuple(pool)

    def select(self, usable: Sequence[Instance], key: str | None = None) -> Instance:
        """Pick one of ``usable`` (never empty)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {len(self.pool)} instance(s)>"


class WeightedRandom(Balancer):
    def __init__(self, pool: Sequence[Instance]) -> None:
        super().__init__(pool)
        self._cum = self._cumulative(self.pool)

    @staticmethod
    def _cumulative(instances: Sequence[Instance]) -> list[float]:
        total, cum = 0.0, []
        for inst in instances:
            total += inst.weight
            cum.append(total)
        return cum

    def select(self, usable: Sequence[Instance], key: str | None = None) -> Instance:
        if len(usable) == 1:
            return usable[0]
        cum = self._cum if len(usable) == len(self.pool) else self._cumulative(usable)
        return usable[bisect.bisect_right(cum, random.random() * cum[-1])]


class SmoothRoundRobin(Balancer):
    """nginx's smooth weighted round-robin: weights 5,1,1 give a,a,b,a,c,a,a - spread out, not bursty."""

    def __init__(self, pool: Sequence[Instance]) -> None:
        super().__init__(pool)
        self._current: dict[int, float] = {id(i): 0.0 for i in self.pool}

    def select(self, usable: Sequence[Instance], key: str | None = None) -> Instance:
        if len(usable) == 1:
            return usable[0]
        current = self._current
        total = 0.0
        best: Instance | None = None
        best_cw = 0.0
        for inst in usable:
            cw = current.get(id(inst), 0.0) + inst.weight
            current[id(inst)] = cw
            total += inst.weight
            if best is None or cw > best_cw:
                best, best_cw = inst, cw
        assert best is not None
        current[id(best)] = best_cw - total
        return best


class LeastConnections(Balancer):
    """Fewest in-flight requests relative to weight; ties broken at random so equal instances share load."""

    def select(self, usable: Sequence[Instance], key: str | None = None) -> Instance:
        if len(usable) == 1:
            return usable[0]
        best: Instance = usable[0]
        best_score = (best.inflight + 1) / best.weight
        ties = 1
        for inst in usable[1:]:
            score = (inst.inflight + 1) / inst.weight
            if score < best_score:
                best, best_score, ties = inst, score, 1
            elif score == best_score:
                ties += 1
                if random.randrange(ties) == 0:
                    best = inst
        return best


class PeakEwmaP2C(Balancer):
    """Power of two choices over cost = peak-EWMA latency x (in-flight + 1), as in Finagle/linkerd.

    An instance with no latency sample yet costs nothing while idle (so it gets tried) and a large penalty while
    busy (so an unknown instance is not flooded)."""

    _PENALTY = 1e6

    @classmethod
    def _cost(cls, inst: Instance) -> float:
        if inst.ewma == 0.0:
            return cls._PENALTY + inst.inflight if inst.inflight else 0.0
        return inst.ewma * (inst.inflight + 1) / inst.weight

    def select(self, usable: Sequence[Instance], key: str | None = None) -> Instance:
        n = len(usable)
        if n == 1:
            return usable[0]
        a = random.randrange(n)
        b = random.randrange(n - 1)
        if b >= a:
            b += 1
        ia, ib = usable[a], usable[b]
        return ia if self._cost(ia) <= self._cost(ib) else ib


def _hash64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class ConsistentHash(Balancer):
    """A hash ring with virtual nodes (proportional to weight), built once per config. The same key maps to the
    same instance; adding an instance moves only about 1/N of the keys. An unusable instance's keys go to the
    next usable instance on the ring."""

    needs_key = True
    VNODES = 160

    def __init__(self, pool: Sequence[Instance]) -> None:
        super().__init__(pool)
        points: list[tuple[int, int]] = []
        seen: dict[str, int] = {}
        for idx, inst in enumerate(self.pool):
            # Point names come from the instance's identity, not its position, so that a change elsewhere in the
            # pool does not move its keys. Two instances of one backend that differ only in headers (say, two
            # API keys) are told apart by their identity, and identical twins by an occurrence count.
            ident = f"{inst.base_url}|{inst.config.path}|{inst.upstream_model}|{sorted(inst.headers.items())}"
            seen[ident] = seen.get(ident, 0) + 1
            ident = f"{ident}|{seen[ident]}"
            for v in range(max(1, round(self.VNODES * inst.weight))):
                points.append((_hash64(f"{ident}|{v}"), idx))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]

    def select(self, usable: Sequence[Instance], key: str | None = None) -> Instance:
        if len(usable) == 1 or key is None:
            return usable[0]
        start = bisect.bisect(self._hashes, _hash64(key))
        n = len(self._hashes)
        full = len(usable) == len(self.pool)
        for step in range(n):
            inst = self.pool[self._owners[(start + step) % n]]
            if full or inst in usable:
                return inst
        return usable[0]


class IpHash(Balancer):
    """Key hash modulo the pool (weighted). Simple and even, but most keys move when the pool changes; use
    ``consistent_hash`` where that matters. An unusable instance's keys are re-hashed over the usable ones."""

    needs_key = True

    def __init__(self, pool: Sequence[Instance]) -> None:
        super().__init__(pool)
        self._cum = WeightedRandom._cumulative(self.pool)

    def select(self, usable: Sequence[Instance], key: str | None = None) -> Instance:
        if len(usable) == 1 or key is None:
            return usable[0]
        h = _hash64(key)
        cum = self._cum if len(usable) == len(self.pool) else WeightedRandom._cumulative(usable)
        point = (h % 1_000_003) / 1_000_003 * cum[-1]
        return usable[bisect.bisect_right(cum, point)]


BALANCERS: dict[str, type[Balancer]] = {
    "random": WeightedRandom,
    "round_robin": SmoothRoundRobin,
    "least_connections": LeastConnections,
    "ip_hash": IpHash,
    "consistent_hash": ConsistentHash,
    "latency": PeakEwmaP2C,
}
