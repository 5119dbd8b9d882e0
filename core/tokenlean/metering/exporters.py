"""Getting records out of the process: a crash-safe JSONL log and Prometheus text exposition.

JSONL: one record per line, appended with a single ``write`` on an ``O_APPEND`` descriptor and
``fsync``-ed before the call returns, so a crash loses at most the line being written. Such a
torn last line is expected after a crash: the reader skips it with a warning, and a sink that
reopens the file cuts it off before appending (otherwise the next record would be glued to
the fragment and both would be lost). Any *other* unreadable line is real corruption and is
reported with its line number (or skipped with ``strict=False``).

On an asyncio event loop's thread the write is handed to a background writer instead (an
``fsync`` there would stall every coroutine of the application): the call returns at once, lines
keep their order, and a crash can also lose the lines still queued; ``flush()`` waits for them,
and ``close()`` and interpreter exit flush.

Prometheus: the text exposition format (version 0.0.4), one series per (task, model), meant for
the node-exporter textfile collector or a ``/metrics`` handler. ``write_prometheus`` replaces
the file atomically so a scraper never reads half a file.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from tokenlean.errors import MeteringError, TextEncodingError
from tokenlean.metering.records import UsageRecord
from tokenlean.metering.summary import TaskSummary, summarize

if TYPE_CHECKING:
    from tokenlean.metering.ledger import Ledger

__all__ = ["JsonlSink", "prometheus_text", "read_jsonl", "to_prometheus", "write_prometheus"]

log = logging.getLogger("tokenlean.metering.exporters")


def _encode(rec: UsageRecord) -> bytes:
    # ensure_ascii keeps the file pure ASCII: even a lone surrogate in a model name cannot make
    # a line undecodable later.
    return (json.dumps(rec.to_dict(), separators=(",", ":"), default=str) + "\n").encode("ascii")


def _on_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop (without importing asyncio)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_open_sinks: weakref.WeakSet[JsonlSink] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for sink in list(_open_sinks):
        sink.flush(timeout=10.0)


class JsonlSink:
    """Appends each record to a JSONL file, one ``fsync``-ed line per record (a ``Ledger`` sink).

    Thread-safe; several processes may append to one file (each line is one ``O_APPEND`` write).
    ``fsync=False`` trades durability on power loss for speed (a process crash still loses
    nothing that was written, the OS has it). Called on an event loop's thread it never blocks:
    the line goes to a background writer (see the module docstring).
    """

    IDLE_S = 30.0  # the background writer exits after this long without work

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._cv = threading.Condition()
        self._pending: deque[bytes] = deque()
        self._busy = False
        self._writer: threading.Thread | None = None
        _open_sinks.add(self)

    def _open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as exc:
                raise MeteringError(f"cannot open ledger file {self.path}: {exc}") from exc
            self._repair_tail(fd)
            self._fd = fd
        return self._fd

    def _repair_tail(self, fd: int) -> None:
        """Cut off a torn last line left by a crash, so the next record starts on a fresh line."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        block = 65536
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            chunk = os.pread(fd, pos - start, start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        log.warning("ledger file %s ends with a torn line (%d bytes); cutting it off", self.path, size - keep)
        os.ftruncate(fd, keep)

    def __call__(self, rec: UsageRecord) -> None:
        data = _encode(rec)
        if _on_event_loop():
            self._enqueue(data)
            return
        self.flush()  # lines queued from the loop come first: keep call order (no wait if none)
        self._write([data])

    def _write(self, lines: list[bytes]) -> None:
        with self._lock:
            fd = self._open()
            try:
                for data in lines:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                raise MeteringError(f"cannot append to ledger file {self.path}: {exc}") from exc

    def _enqueue(self, data: bytes) -> None:
        with self._cv:
            self._pending.append(data)
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="tokenlean-jsonl-writer", daemon=True)
                self._writer.start()
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._pending:
                    self._cv.wait(self.IDLE_S)
                if not self._pending:
                    self._writer = None
                    self._cv.notify_all()
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._busy = True
            try:
                self._write(batch)  # one fsync for everything queued meanwhile
            except MeteringError:
                log.exception("%d usage records could not be written to %s", len(batch), self.path)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued line is written; ``False`` if ``timeout`` passed first."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"


def read_jsonl(path: str | Path, *, strict: bool = True) -> Iterator[UsageRecord]:
    """The records of a JSONL ledger file, streaming.

    A torn last line (no trailing newline, unparsable) is skipped with a warning: that is what a
    crash mid-write leaves. Other bad lines raise ``MeteringError`` / ``TextEncodingError`` naming
    the line, or are skipped with a warning when ``strict`` is false.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise MeteringError(f"cannot read ledger file {path}: {exc}") from exc
    with fh:
        lineno = 0
        for raw in fh:
            lineno += 1
            torn = not raw.endswith(b"\n")
            if not raw.strip():
                continue
            try:
                rec = _parse_line(raw, path, lineno)
            except (MeteringError, TextEncodingError) as exc:
                if torn:
                    log.warning("%s:%d: skipping torn last line (crash while writing?)", path, lineno)
                    return
                if strict:
                    raise
                log.warning("skipping unreadable ledger line: %s", exc)
                continue
            yield rec


def _parse_line(raw: bytes, path: Path, lineno: int) -> UsageRecord:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextEncodingError(f"{path}:{lineno}: line is not valid UTF-8 ({exc.reason})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeteringError(f"{path}:{lineno}: not a JSON object: {exc.msg}") from exc
    try:
        return UsageRecord.from_dict(data)
    except (MeteringError, ValueError, TypeError) as exc:
        raise MeteringError(f"{path}:{lineno}: not a usage record: {exc}") from exc


# -- Prometheus ------------------------------------------------------------------------------

_METRICS: tuple[tuple[str, str, str], ...] = (
    ("tokenlean_llm_calls_total", "counter", "LLM calls recorded."),
    ("tokenlean_llm_cache_hits_total", "counter", "Calls answered from a cache without the model."),
    ("tokenlean_input_tokens_total", "counter", "Prompt tokens, cache reads and writes included."),
    ("tokenlean_cached_input_tokens_total", "counter", "Prompt tokens read from a provider prompt cache."),
    ("tokenlean_cache_write_tokens_total", "counter", "Prompt tokens written to a provider prompt cache."),
    ("tokenlean_output_tokens_total", "counter", "Completion tokens, reasoning included."),
    ("tokenlean_cost_usd_total", "counter", "Cost of the priced calls in USD."),
    ("tokenlean_unpriced_calls_total", "counter", "Calls whose model has no price."),
    ("tokenlean_ttft_p50_seconds", "gauge", "Median time to first token of streamed calls."),
    ("tokenlean_ttft_p95_seconds", "gauge", "95th percentile time to first token of streamed calls."),
    ("tokenlean_output_tokens_per_second", "gauge", "Output tokens over generation time."),
)


def _label(value: str) -> str:
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def to_prometheus(source: Ledger | Iterable[UsageRecord], *, by_task: bool = True) -> str:
    """Prometheus text exposition of ``source``, one series per (task, model).

    ``by_task=False`` drops the ``task`` label: task ids are unbounded and a long-running
    service should not turn each into a time series.
    """
    records = list(source)  # a Ledger iterates over its records
    groups: dict[tuple[str, ...], list[UsageRecord]] = {}
    for r in records:
        key: tuple[str, ...] = (r.task_id or "", r.model) if by_task else (r.model,)
        groups.setdefault(key, []).append(r)
    names: tuple[str, ...] = ("task", "model") if by_task else ("model",)
    return prometheus_text(names, {key: summarize(key[0], recs) for key, recs in groups.items()})


def prometheus_text(names: tuple[str, ...], summaries: Mapping[tuple[str, ...], TaskSummary]) -> str:
    """The exposition of summaries already aggregated elsewhere (a shared store's counters), one
    series per key; ``names`` are the label names of the key's values. A figure that is None
    (a percentile the store cannot keep) is left out."""
    values: dict[str, list[str]] = {name: [] for name, _, _ in _METRICS}
    for key, s in summaries.items():
        labels = "{" + ",".join(f'{n}="{_label(v)}"' for n, v in zip(names, key, strict=True)) + "}"
        row: dict[str, float | int | None] = {
            "tokenlean_llm_calls_total": s.calls,
            "tokenlean_llm_cache_hits_total": s.cache_hits,
            "tokenlean_input_tokens_total": s.input_tokens,
            "tokenlean_cached_input_tokens_total": s.cached_input_tokens,
            "tokenlean_cache_write_tokens_total": s.cache_write_tokens,
            "tokenlean_output_tokens_total": s.output_tokens,
            "tokenlean_cost_usd_total": None if s.cost is None else float(s.cost),
            "tokenlean_unpriced_calls_total": s.unpriced_calls,
            "tokenlean_ttft_p50_seconds": s.ttft_p50_s,
            "tokenlean_ttft_p95_seconds": s.ttft_p95_s,
            "tokenlean_output_tokens_per_second": s.output_tokens_per_s,
        }
        for name, value in row.items():
            if value is not None:
                values[name].append(f"{name}{labels} {_num(value)}")
    lines: list[str] = []
    for name, kind, help_text in _METRICS:
        if values[name]:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *values[name]]
    return "\n".join(lines) + "\n" if lines else ""


def write_prometheus(
    source: Ledger | Iterable[UsageRecord], path: str | Path, *, by_task: bool = True
) -> None:
    """Write ``to_prometheus(source)`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    text = to_prometheus(source, by_task=by_task)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise MeteringError(f"cannot write Prometheus file {path}: {exc}") from exc
