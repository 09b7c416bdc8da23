"""Idle memory of ``modelrouter serve`` with the store open, and what it is made of (issue 19: idle RSS <= 70 MB).

    bench/idle_rss.py                 # first start (migrates) + 3 restarts on the same, up-to-date SQLite store
    bench/idle_rss.py --imports       # and the breakdown: memory and import time per package
    bench/idle_rss.py --runs 5 --json bench/results/idle_rss.json --strict
    bench/idle_rss.py --baseline HEAD~1   # the same, for a git revision's src too, interleaved: before/after

Each gateway is the embedded default config with its SQLite store in a temp data dir, on a free loopback port. It is
measured once ``GET /health`` answers 200 plus a second to settle, before any request: VmRSS (and VmHWM, the peak)
of the gateway process from /proc. The first start creates the store (runs the migrations, makes the first admin
and hashes its password); restarts find the schema at the newest revision: the figure the target is judged on is
the median of the restarts. With ``--baseline REV`` that revision's ``src/`` (``git archive``, plus the compiled
speedups of this tree) is measured the same way, each of its starts next to this tree's, on a store of its own. Every
wait is bounded (``--timeout``), and every gateway is stopped (SIGTERM, then
SIGKILL) whatever happens.

``--imports`` adds three views of the same memory:

* the gateway's import memory per package: a gateway started with tracemalloc and a loader wrapper that counts the
  Python allocations made while each module executes (its own, not its imports'). Memory outside Python's allocator
  (shared libraries, pydantic-core's validators) is not in it;
* RSS added by importing each heavy package on top of the previous ones in a fresh interpreter (order: the
  gateway's), and by the ones the gateway must not load (the ORM, Alembic, asyncpg, redis, prometheus_client);
* ``-X importtime``: import self-time per top-level package in a real gateway start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 70.0
SETTLE = 1.0  # seconds after /health answers: startup's last allocations (the first poll of the store) are done
# Fresh-interpreter RSS deltas, in this order; the later ones are those the gateway must not load.
PACKAGES = (
    "asyncio",
    "ssl",
    "yaml",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "aiohttp",
    "sqlalchemy",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "aiosqlite",
    "greenlet",
    "modelrouter.cli.main",
    "modelrouter.store.store",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "argon2",
    "wsproto",
    "alembic.command",
    "asyncpg",
    "redis.asyncio",
    "prometheus_client",
)


def _env(src: Path = ROOT / "src") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def export_revision(revision: str, into: Path) -> Path:
    """``revision``'s ``src/`` in ``into``, with this tree's compiled extension (not in git) copied in."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], capture_output=True, check=True, timeout=60
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    for built in (ROOT / "src" / "modelrouter").glob("*.so"):
        shutil.copy2(built, into / "src" / "modelrouter" / built.name)
    return into / "src"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status(pid: int) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(port):
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited ({proc.returncode}) during startup:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 on /health within {timeout:g} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


def start_and_measure(
    data_dir: Path, timeout: float, python_flags: tuple[str, ...] = (), src: Path = ROOT / "src"
) -> tuple[dict[str, float], str]:
    """One gateway on ``data_dir`` (code from ``src``): its VmRSS/VmHWM in MB once idle, and its output."""
    port = _free_port()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"gateway-{port}.log"
    argv = [sys.executable, *python_flags, "-m", "modelrouter", "serve", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env(src), start_new_session=True)
    try:
        _wait_healthy(proc, port, timeout, log)
        time.sleep(SETTLE)
        return _status(proc.pid), log.read_text()
    finally:
        _stop(proc)


# --- --imports -------------------------------------------------------------------------------------------------

# Run in a child: a gateway whose every module execution is counted (tracemalloc), dumped once it is idle.
_PROBE = r"""
import json, os, signal, sys, threading, time, tracemalloc, urllib.request
tracemalloc.start()
own, stack = {}, []

class Counted:
    def __init__(self, loader): self._loader = loader
    def __getattr__(self, name): return getattr(self._loader, name)
    def create_module(self, spec): return self._loader.create_module(spec)
    def exec_module(self, module):
        stack.append([tracemalloc.get_traced_memory()[0], 0])
        try:
            self._loader.exec_module(module)
        finally:
            start, inner = stack.pop()
            total = tracemalloc.get_traced_memory()[0] - start
            own[module.__name__] = own.get(module.__name__, 0) + total - inner
            if stack:
                stack[-1][1] += total

class Finder:
    def find_spec(self, name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = Counted(spec.loader)
                return spec
        return None

sys.meta_path.insert(0, Finder())
port, data_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def watch():
    deadline = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.1)
    time.sleep(1.0)
    with open(out, "w") as fh:
        json.dump({"own": own, "traced": tracemalloc.get_traced_memory()[0], "modules": sorted(sys.modules)}, fh)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=watch, daemon=True).start()
from modelrouter.cli.main import main
sys.exit(main(["serve", "--port", str(port), "--data-dir", data_dir]))
"""

# Run in a child: RSS after importing each of argv's modules in turn.
_DELTAS = r"""
import gc, importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
rows, before = [], rss()
rows.append(["python", before, 0.0])
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        rows.append([name, None, None]); continue
    gc.collect()
    now = rss(); rows.append([name, now, now - before]); before = now
print(json.dumps(rows))
"""


def _package(module: str) -> str:
    top = module.split(".")[0]
    if top in ("sqlalchemy", "modelrouter") and "." in module:
        return ".".join(module.split(".")[:2])  # sqlalchemy.orm, modelrouter.store: the parts that matter here
    return top


def import_breakdown(work: Path, timeout: float) -> dict[str, Any]:
    data_dir = work / "probe-data"
    start_and_measure(data_dir, timeout)  # the store exists and is up to date: the probe measures a restart
    out = work / "probe.json"
    port = _free_port()
    argv = [sys.executable, "-c", _PROBE, str(port), str(data_dir), str(out), str(timeout)]
    subprocess.run(argv, env=_env(), timeout=timeout + 30, capture_output=True, check=False)
    probe = json.loads(out.read_text())
    own: dict[str, int] = {}
    for module, size in probe["own"].items():
        own[_package(module)] = own.get(_package(module), 0) + size
    loaded = set(probe["modules"])
    rows = json.loads(
        subprocess.run(
            [sys.executable, "-c", _DELTAS, *PACKAGES], env=_env(), timeout=120, capture_output=True, check=True
        ).stdout
    )
    _, log = start_and_measure(data_dir, timeout, ("-X", "importtime"))
    times: dict[str, int] = {}
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, _, name = line[len("import time:") :].split("|")
            times[_package(name.strip())] = times.get(_package(name.strip()), 0) + int(self_us)
    return {
        "traced_mb": probe["traced"] / 2**20,
        "own_mb": {k: v / 2**20 for k, v in sorted(own.items(), key=lambda kv: -kv[1])},
        "rss_deltas": [
            {"module": name, "rss_mb": rss, "delta_mb": delta, "in_gateway": name in loaded}
            for name, rss, delta in rows
        ],
        "import_ms": {k: v / 1000 for k, v in sorted(times.items(), key=lambda kv: -kv[1])},
    }


def print_breakdown(found: dict[str, Any], top: int = 20) -> None:
    print(f"\nPython allocations made by imports in the idle gateway (tracemalloc): {found['traced_mb']:.1f} MB")
    for name, size in list(found["own_mb"].items())[:top]:
        print(f"  {size:6.2f} MB  {name}")
    print("\nRSS added by each import on top of the previous ones (fresh interpreter; * = the gateway loads it)")
    for row in found["rss_deltas"]:
        if row["rss_mb"] is None:
            print(f"  {'-':>7}      {row['module']} (not installed)")
        else:
            mark = "*" if row["in_gateway"] or row["module"] == "python" else " "
            print(f"  {row['delta_mb']:+7.1f} MB {mark} {row['module']}  (RSS {row['rss_mb']:.1f})")
    print("\nimport self-time per package in a gateway start (-X importtime)")
    for name, ms in list(found["import_ms"].items())[:top]:
        print(f"  {ms:7.1f} ms  {name}")


def report(label: str, figures: dict[str, Any]) -> None:
    first, restarts = figures["first"], figures["restarts"]
    print(f"{label}: first start (creates and migrates the store): RSS {first['VmRSS']:.1f} MB", end="")
    print(f" (peak {first['VmHWM']:.1f}); restarts (store up to date): ", end="")
    print(", ".join(f"{r['VmRSS']:.1f}" for r in restarts) + f" MB, median {figures['idle_mb']:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="restarts measured after the first start (default 3)")
    parser.add_argument("--imports", action="store_true", help="also the memory and import-time breakdown")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision's src, interleaved")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each /health (default 60)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--strict", action="store_true", help=f"exit 3 when the restarts' median is over {TARGET_MB}")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    breakdown = None
    with tempfile.TemporaryDirectory(prefix="idle-rss-") as tmp:
        work = Path(tmp)
        try:
            trees = {"current": ROOT / "src"}
            if args.baseline:
                trees[f"baseline {args.baseline}"] = export_revision(args.baseline, work / "baseline")
            stores = {label: work / f"store{i}" / "data" for i, label in enumerate(trees)}
            for label, src in trees.items():
                results[label] = {"first": start_and_measure(stores[label], args.timeout, src=src)[0], "restarts": []}
            for round_ in range(max(1, args.runs)):
                # Alternating order (A B, then B A): a drift of the machine does not favour one of them.
                order = list(trees.items()) if round_ % 2 == 0 else list(reversed(trees.items()))
                for label, src in order:
                    results[label]["restarts"].append(start_and_measure(stores[label], args.timeout, src=src)[0])
            if args.imports:
                breakdown = import_breakdown(work, args.timeout)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
            print(f"idle_rss: {exc}", file=sys.stderr)
            return 1
    for label, figures in results.items():
        figures["idle_mb"] = statistics.median(r["VmRSS"] for r in figures["restarts"])
        report(label, figures)
    idle = results["current"]["idle_mb"]
    verdict = "PASS" if idle <= TARGET_MB else "MISS"
    print(f"{verdict} idle RSS with the store open: {idle:.1f} MB (target <= {TARGET_MB:g} MB)")
    if breakdown is not None:
        print_breakdown(breakdown)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"target_mb": TARGET_MB, "verdict": verdict, "results": results, "breakdown": breakdown}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 3 if args.strict and verdict == "MISS" else 0


if __name__ == "__main__":
    raise SystemExit(main())
