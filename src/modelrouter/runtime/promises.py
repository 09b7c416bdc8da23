"""What would count per process: the guard of ``serve --workers N`` on the memory state backend.

With ``state.backend: memory`` every process counts its own limits, quotas and caps, so N workers would let N
times the traffic through, silently. The supervisor refuses to start when the config, the store's keys or (store
mode) the newest stored version promise any of it (cli/main.py); a worker refuses a reload or a config version
that would bring some (``worker_refusals``, through ``Gateway.refusals``), and says once per key when a key with
quotas appears in the store meanwhile (``PerWorkerKeys``), which it cannot refuse. With Redis, nothing counts per
process and none of this applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.model import Config, KeyQuotas, LimitRule
    from ..store.records import KeyRecord

__all__ = ["PerWorkerKeys", "per_process_promises", "worker_refusals", "workers_refusal"]

log = logging.getLogger("modelrouter")


def per_process_promises(
    config: Config, store_keys: Sequence[KeyRecord] = (), *, backend: str | None = None
) -> list[str]:
    """What ``config`` (and the store's keys) promise that would count in each process separately: with
    ``state.backend: memory`` (or ``backend``, the one running), every rate limit and per-key quota or cap."""
    if (backend or config.state.backend) != "memory":
        return []
    found = [f"limits ({len(config.limits)} rule(s))"] if config.limits else []
    keys = [(f"auth.keys {key.name!r}", key.quotas, key.limits) for key in config.auth.keys]
    keys += [(f"store key {key.name!r}", key.quotas, key.limits) for key in store_keys]
    for where, quotas, limits in keys:
        if counted := _counted(quotas, limits):
            found.append(f"{where}: {', '.join(counted)}")
    return found


def _counted(quotas: KeyQuotas, limits: Sequence[LimitRule]) -> list[str]:
    return [*quotas.model_dump(exclude_none=True), *(["limits"] if limits else [])]


def workers_refusal(workers: int | str, promises: list[str]) -> str:
    """Why ``serve --workers`` will not count ``promises``, and what to do instead."""
    return (
        f"--workers {workers} would count these in each worker separately, letting {workers} times the traffic "
        f"through: {'; '.join(promises)}. Set state.backend: redis (with state.url) so that every worker counts in "
        "one place, or run one process"
    )


def worker_refusals(config: Config, backend: str) -> list[str]:
    """In a worker (on the ``backend`` it started with): why ``config`` may not serve, if it may not."""
    promises = per_process_promises(config, backend=backend)
    return [workers_refusal("N", promises)] if promises else []


class PerWorkerKeys:
    """Store keys with quotas seen by a worker on the memory backend: each said once."""

    __slots__ = ("_said",)

    def __init__(self) -> None:
        self._said: set[int] = set()

    def check(self, records: Sequence[KeyRecord]) -> None:
        for record in records:
            if record.id not in self._said and (counted := _counted(record.quotas, record.limits)):
                self._said.add(record.id)
                log.warning("%s", workers_refusal("N", [f"store key {record.name!r}: {', '.join(counted)}"]))
