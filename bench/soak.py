"""RSS soak: one plain gateway (bench/bench.py's config) under a bounded, mixed load for a fixed time, its resident
memory sampled every 10 s - does it stay flat, or grow with the requests it has served?

    .venv/bin/python bench/soak.py --client pyreqwest            # 10 minutes at 500 req/s, a quarter streamed
    .venv/bin/python bench/soak.py --minutes 1 --rate 200         # a quick look

The load is an aiohttp client in this process at a fixed rate (requests are started on schedule, at most
``--concurrency`` at once; one that would exceed it is counted as skipped, not queued, so the rate stays bounded).
Growth is from the first sample after the first minute (pools, caches and the allocator warmed up) to the mean of
the last three samples. The client is chosen with ``--client`` (the config's ``upstream.client``), or
``BENCH_CLIENT``. Results in bench/results/soak-<client>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

import bench as harness

SAMPLE_EVERY = 10.0  # seconds
WARM_UP = 60.0  # seconds before the baseline sample


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--client", choices=("aiohttp", "pyqwest", "pyreqwest"), default=harness.UPSTREAM_CLIENT)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (at most 60)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests started per second (at most 5,000)")
    parser.add_argument("--stream-share", type=float, default=0.25, help="share of streamed requests (0-1)")
    parser.add_argument("--concurrency", type=int, default=64, help="most requests in flight")
    args = parser.parse_args(argv)
    if not (0 < args.minutes <= 60 and 0 < args.rate <= 5000 and 0 <= args.stream_share <= 1):
        parser.error("--minutes must be in (0, 60], --rate in (0, 5000], --stream-share in [0, 1]")
    return args


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def load(port: int, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    url = f"http://{harness.HOST}:{port}/v1/chat/completions"
    bodies = [
        json.dumps({"model": harness.MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}).encode()
        for stream in (False, True)
    ]
    counts = {"ok": 0, "errors": 0, "skipped": 0}
    samples: list[tuple[float, float]] = []
    in_flight = 0
    headers = {"Content-Type": "application/json"}

    async def one(session: aiohttp.ClientSession, stream: bool) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            async with session.post(url, data=bodies[stream], headers=headers) as resp:
                await resp.read()
                counts["ok" if resp.status == 200 else "errors"] += 1
        except (aiohttp.ClientError, OSError):
            counts["errors"] += 1
        finally:
            in_flight -= 1

    tasks: set[asyncio.Task[None]] = set()
    duration = args.minutes * 60
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        next_sample = started
        n = 0
        while (now := time.monotonic()) - started < duration:
            if now >= next_sample:
                samples.append((round(now - started, 1), round(rss_mb(pid), 2)))
                print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MB  {counts}", flush=True)
                next_sample += SAMPLE_EVERY
            due = started + n / args.rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            n += 1
            if in_flight >= args.concurrency:
                counts["skipped"] += 1
                continue
            # Every 1/share-th request streamed, spread evenly (no randomness: two runs send the same mix).
            stream = args.stream_share > 0 and int(n * args.stream_share) != int((n - 1) * args.stream_share)
            task = asyncio.create_task(one(session, stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        samples.append((round(time.monotonic() - started, 1), round(rss_mb(pid), 2)))
    return {"counts": counts, "samples": samples}


def growth(samples: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """(baseline MB, end MB, growth %) or None when the run was too short to have a baseline after warm-up."""
    after = [rss for at, rss in samples if at >= WARM_UP]
    if len(after) < 4:
        return None
    base, end = after[0], sum(after[-3:]) / 3
    return base, end, 100 * (end - base) / base


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["BENCH_CLIENT"] = args.client
    harness.UPSTREAM_CLIENT = args.client  # write_config reads it
    harness.RESULTS_DIR.mkdir(exist_ok=True)
    children = harness.Children()
    try:
        pin = harness.plan_pinning(True)
        _, upstream_port = harness.start_upstream(children, pin)
        proc, port = harness.start_gateway(children, pin, upstream_port, 20.0)
        print(f"soak: {args.client}, {args.minutes:g} min at {args.rate:g} req/s, {args.stream_share:.0%} streamed")
        result = asyncio.run(load(port, args, proc.pid))
    finally:
        children.close()
    result.update(client=args.client, minutes=args.minutes, rate=args.rate, stream_share=args.stream_share)
    found = growth(result["samples"])
    if found is None:
        print("soak: too short for a baseline after the first minute; no growth figure")
    else:
        base, end, pct = found
        result["growth"] = {"baseline_mb": round(base, 2), "end_mb": round(end, 2), "pct": round(pct, 2)}
        print(f"soak: RSS {base:.1f} MB after warm-up -> {end:.1f} MB at the end: {pct:+.2f} % ({result['counts']})")
    out = harness.RESULTS_DIR / f"soak-{args.client}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out.relative_to(harness.ROOT)}")
    return 0 if result["counts"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
