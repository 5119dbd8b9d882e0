"""The routing cookbook runs end to end against the real local server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "cookbooks" / "route_local_and_hosted" / "main.py"


@pytest.mark.integration
def test_route_local_and_hosted_cookbook(local_llm) -> None:
    env = {**os.environ, "TOKENLEAN_BASE_URL": local_llm.base_url, "TOKENLEAN_MODEL": local_llm.model}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.count("    why:    cascade:") == 3  # every question went through a cascade
    assert "city schema" in out and "two samples agree" in out
    assert "calls: " in out and " local)" in out
