"""A second, normal client for fault tests: it keeps asking while a fault plays, and must keep being served."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import openai


class Bystander:
    """A second, normal client asking another model over and over while a fault plays; its latencies."""

    def __init__(self, base_url: str, model: str) -> None:
        self.client = openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0, timeout=10)
        self.model = model
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                out = self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": "x"}])
                assert out.choices[0].message.content
            except Exception as exc:  # collected: the test asserts there are none
                self.errors.append(exc)
            self.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def assert_served(self, p50: float = 0.25, worst: float = 3.0) -> None:
        """Every request succeeded, quickly: generous bounds (the healthy median is a few milliseconds)."""
        assert not self.errors, self.errors[:3]
        assert len(self.latencies) >= 3, self.latencies
        assert statistics.median(self.latencies) < p50, sorted(self.latencies)[-5:]
        assert max(self.latencies) < worst, sorted(self.latencies)[-5:]


def two_models(fault_url: str, ok_url: str, **chat_service: Any) -> dict[str, Any]:
    """Model `m` at the faulty upstream, model `ok` at a healthy one."""
    return {
        "services": {
            "chat": {
                **chat_service,
                "instances": [{"name": "m", "base_url": fault_url}, {"name": "ok", "base_url": ok_url}],
            }
        }
    }
