"""``modelrouter serve --workers N``: several processes on one port, metrics added up across them, one drain."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .fakes import FakeOpenAI
from .servers import free_port
from .test_lifecycle import wait_until


def _metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = httpx2.get(url + "/metrics", timeout=5)
    assert reply.status_code == 200, reply.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def test_two_workers_share_the_port_and_their_metrics(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], tmp_path: Path
) -> None:
    _, upstream = start_upstream("a")
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "health_check": {"enabled": False},
                "store": {"data_dir": str(tmp_path / "data")},
                "services": {"chat": {"instances": [{"name": "m", "base_url": upstream}]}},
            }
        )
    )
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelrouter", "serve", "--config", str(config), "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def both_up() -> bool:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                series = _metrics(url)
            except httpx2.HTTPError:
                return False
            workers = {dict(labels).get("worker") for name, labels in series if name == "modelrouter_build_info"}
            return workers == {"0", "1"}  # each worker has published its snapshot

        wait_until(both_up, "both workers to serve and publish metrics", 30)
        requests = 40
        for _ in range(requests):
            # A new connection each time, so the kernel hands them to both workers.
            client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=10)
            assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            client.close()
        key = ("modelrouter_requests_total", frozenset({"endpoint": "chat", "model": "m", "status": "200"}.items()))

        # Whichever worker answers the scrape, it reports all requests (others' snapshots are at most 1 s old).
        def all_counted() -> bool:
            return all(_metrics(url).get(key) == requests for _ in range(4))

        wait_until(all_counted, f"every scrape to count {requests} requests", 10)
        series = _metrics(url)
        in_flight = [v for (name, labels), v in series.items() if name == "modelrouter_instance_in_flight"]
        assert len(in_flight) == 2
        assert sum(in_flight) == 0
        # One config version for the file, though two workers loaded it at the same moment.
        assert {v for (name, _), v in series.items() if name == "modelrouter_config_version"} == {1.0}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            log.close()
    assert code == 0, (tmp_path / "gateway.log").read_text()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            httpx2.get(url + "/health", timeout=1)
        except httpx2.HTTPError:
            break  # nobody listens any more
        time.sleep(0.1)
    else:
        raise AssertionError("the port still answers after the supervisor exited")
