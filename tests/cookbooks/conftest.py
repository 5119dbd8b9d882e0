"""Shared runner for the cookbook tests: each cookbook runs as a user would run it, as a script.

The script gets the session's local llama.cpp server through ``TOKENLEAN_BASE_URL`` /
``TOKENLEAN_MODEL`` (so it does not start a second server) and one thread, and must exit 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

RunCookbook = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_cookbook(local_llm: Any) -> RunCookbook:
    """``run_cookbook(name, *args, cwd=ROOT, timeout=240, env=None)``: run ``cookbooks/<name>/main.py``.

    Fails the test with the end of stderr when the script exits non-zero; returns the finished
    process (``stdout`` for the assertions).
    """

    def run(
        name: str,
        *args: str,
        cwd: Path = ROOT,
        timeout: float = 240,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            **os.environ,
            "TOKENLEAN_BASE_URL": local_llm.base_url,
            "TOKENLEAN_MODEL": local_llm.model,
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        proc = subprocess.run(
            [sys.executable, str(ROOT / "cookbooks" / name / "main.py"), *args],
            env=full_env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    return run
