"""Claude Code itself against the gateway (``ANTHROPIC_BASE_URL``), in print mode, answered by an OpenAI-shaped
backend through ``/v1/messages``. Runs when a ``claude`` binary is found (``CLAUDE_CODE_BIN``, or on PATH; e.g.
``npm install @anthropic-ai/claude-code``); without one it skips, as the promtool tests do."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .fakes import FakeOpenAI
from .servers import GatewayServer


def _claude() -> str:
    found = os.environ.get("CLAUDE_CODE_BIN") or shutil.which("claude")
    if not found:
        pytest.skip("no Claude Code binary (set CLAUDE_CODE_BIN, or npm install @anthropic-ai/claude-code)")
    return found


def test_claude_code_answers_through_the_gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    claude = _claude()
    fake, url = start_upstream("a")
    names = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-haiku-4-5-20251001", "claude-3-5-haiku-20241022"]
    gw = start_gateway(
        {"services": {"chat": {"instances": [{"name": names[0], "models": names[1:], "base_url": url}]}}}
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # no user settings, no login
        "ANTHROPIC_BASE_URL": gw.url,
        "ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    done = subprocess.run(
        [claude, "-p", "say hello", "--model", names[0]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tok0" in done.stdout  # the fake backend's answer, as Claude Code printed it
    chats = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    assert chats, [r.path for r in fake.requests]
    assert any(r.json.get("tools") for r in chats)  # Claude Code's own tools arrived as function tools
