"""Under CI a missing package or a service that cannot start fails the run; locally it skips.

Runs a small test session in a subprocess (the repository's own ``conftest.py``), once with
``CI`` set and once without, where the Redis Stack launcher is made to fail and a test imports
a package that does not exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BROKEN = """
import pytest

pytest.importorskip("tokenlean_no_such_package")


def test_never_runs() -> None:
    assert False
"""

DEAD_REDIS = """
import tokenlean.cache.redis_server as rs


def _fail(self):
    raise RuntimeError("port in use")


rs.RedisStackServer.start = _fail


def test_needs_redis(redis_stack: str) -> None:
    assert redis_stack
"""


def _session(tmp_path: Path, ci: bool) -> str:
    tests = tmp_path / ("ci" if ci else "local")
    tests.mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_broken_import.py").write_text(BROKEN)
    (tests / "test_dead_service.py").write_text(DEAD_REDIS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfEs",
            "--continue-on-collection-errors",
            str(tests),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    return proc.stdout + proc.stderr


def test_ci_fails_where_a_local_run_skips(tmp_path: Path) -> None:
    local = _session(tmp_path, ci=False)
    assert "2 skipped" in local and "failed" not in local and "error" not in local
    ci = _session(tmp_path, ci=True)
    assert "skipped" not in ci
    assert "redis-stack-server could not start: port in use" in ci
    assert "tokenlean_no_such_package" in ci
