"""Serving an ASGI app on loopback from a background thread (tests, benchmarks, cookbooks).

Why a thread and not a subprocess: a test that drives the gateway with real clients also wants to
look inside it (its ledger, its cache) and to script the stub upstream it talks to; a thread keeps
both in one process while the traffic still crosses a real socket, as a client's would.
"""

from __future__ import annotations

import http.client
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tokenlean.errors import ServerError
from tokenlean.server import free_port

if TYPE_CHECKING:
    import uvicorn

__all__ = ["AppServer"]


class AppServer:
    """An ASGI app served by uvicorn in a background thread on ``127.0.0.1:port``.

    ``with AppServer(app) as s:`` starts it and waits until ``/health`` answers (``ready_timeout``
    seconds at most, else :class:`~tokenlean.errors.ServerError`); leaving the block stops it.
    ``s.base_url`` is what an OpenAI client takes. Tests, benchmarks and cookbooks use it to run
    the gateway and the stub upstream in-process, on loopback only.
    """

    name = "app server"

    def __init__(
        self, app: Any, *, port: int | None = None, ready_timeout: float = 10.0, lifespan: str = "auto"
    ) -> None:
        self.app = app
        self.lifespan = lifespan
        self.port = port if port is not None else free_port()
        self.ready_timeout = ready_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._startup_failure: int | str | None = None

    @property
    def url(self) -> str:
        """The server root, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> AppServer:
        """Start serving and wait until ``/health`` answers."""
        if self.running:
            return self
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan=self.lifespan,  # type: ignore[arg-type]
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._configured()  # after Config, which (re)configures uvicorn's loggers
        self._server = uvicorn.Server(config)
        self._startup_failure = None
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _configured(self) -> None:
        """A hook run once uvicorn's config (and its loggers) exist."""

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot bind (the port was taken)
            self._startup_failure = exc.code

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last: str = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise ServerError(
                    f"{self.name} on port {self.port} exited while starting "
                    f"(exit code {self._startup_failure!r}: port taken?)"
                )
            if self._server is not None and self._server.started:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                try:
                    conn.request("GET", "/health")
                    status = conn.getresponse().status
                    if status == 200:
                        return
                    last = f"/health answered {status}"
                except OSError as exc:
                    last = repr(exc)
                finally:
                    conn.close()
            time.sleep(0.01)
        raise ServerError(f"{self.name} on port {self.port} not ready after {self.ready_timeout}s: {last}")

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and join its thread (forcing the exit if it lingers)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
