"""Message-level peer compressors for the agent-session benchmark (``compaction_sessions.py``).

Each adapter takes an OpenAI-format message list and returns the message list the peer would send
instead, called exactly as the peer's own docs show it (its defaults, no tuning):

* ``headroom-ai``: ``headroom.compress(messages)`` (``CompressConfig()`` defaults). Its ML text
  compressor (Kompress, ``chopratejas/kompress-v2-base``) is downloaded from Hugging Face on first
  use; offline it never loads and text passes through ("Kompress model still loading ... requests
  pass through uncompressed"). Only its deterministic transforms (JSON crushing, routing) run.
* ``distil-llm``: ``distil.compress_messages(messages)`` (Tier-1 digests of tool results, elided
  spans behind an 8-hex handle) and ``compress_messages(messages, verbatim=True)`` (Tier-0
  lossless transforms only).

Both are optional benchmark extras (``pip install headroom-ai distil-llm``), never runtime
dependencies of tokenlean. Their on-disk stores and telemetry are pointed at a temporary folder /
switched off before import, so a benchmark run leaves nothing in the user's home.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

Messages = list[dict[str, Any]]
Adapter = Callable[[Messages], Messages]

# Offline, no telemetry, the peers' stores in a throwaway folder: one switch for both benchmarks.
from compaction_peers import _isolate  # noqa: E402  (benchmarks/ is on sys.path when run)


class HeadroomCompress:
    """``headroom.compress(messages)`` at its defaults; counts the transforms it reports."""

    name = "headroom-compress"

    def __init__(self) -> None:
        _isolate()
        import logging

        from headroom import compress  # type: ignore[import-not-found]

        # one warning per call ("Kompress model still loading") is noise in a benchmark log
        logging.getLogger("headroom").setLevel(logging.ERROR)
        self._compress = compress
        self.transforms: Counter[str] = Counter()

    def __call__(self, messages: Messages) -> Messages:
        res = self._compress([dict(m) for m in messages])
        for t in res.transforms_applied or ():
            self.transforms[":".join(t.split(":")[:2])] += 1
        return list(res.messages)

    def note(self) -> str:
        top = ", ".join(f"{k} x{v}" for k, v in self.transforms.most_common(4)) or "none"
        return (
            "headroom.compress(messages) defaults (compress_user_messages=False: user-role observations "
            "are protected; protect_recent=4); its Kompress ML model cannot be downloaded offline, so text "
            "passes through; 'inflation_guard:reverted' = its pipeline grew the prompt and it sent the "
            f"input instead; transforms reported over all calls: {top}"
        )


class DistilCompress:
    """``distil.compress_messages(messages, verbatim=...)``."""

    def __init__(self, verbatim: bool = False) -> None:
        _isolate()
        from distil import compress_messages  # type: ignore[import-not-found]

        self._compress = compress_messages
        self.verbatim = verbatim
        self.name = "distil-compress_messages" + ("-verbatim" if verbatim else "")

    def __call__(self, messages: Messages) -> Messages:
        res = self._compress([dict(m) for m in messages], verbatim=self.verbatim)
        return list(res.messages)

    def note(self) -> str:
        if self.verbatim:
            return "distil.compress_messages(messages, verbatim=True): Tier-0 lossless transforms only"
        return (
            "distil.compress_messages(messages): Tier-1 digests of tool-role results "
            "(<< +N lines, handle=... >>), Tier-0 on user/system text, assistant turns untouched"
        )


PEERS: dict[str, Callable[[], Any]] = {
    "headroom-compress": HeadroomCompress,
    "distil-compress_messages": lambda: DistilCompress(verbatim=False),
    "distil-compress_messages-verbatim": lambda: DistilCompress(verbatim=True),
}

PACKAGES = {
    "headroom-compress": "headroom-ai",
    "distil-compress_messages": "distil-llm",
    "distil-compress_messages-verbatim": "distil-llm",
}


def load_peer(name: str) -> tuple[Any | None, str | None]:
    """The adapter, or ``(None, why)`` when the peer's package is not installed."""
    try:
        return PEERS[name](), None
    except ImportError as exc:
        return None, f"not installed ({PACKAGES[name]}): {exc}"
