"""Check metering against the wire: the usage an OpenAI-compatible server actually sent.

An adapter test that compares the ledger with what the adapter itself read proves nothing;
``ServerUsage`` reads the ``usage`` block of every non-streamed ``/chat/completions`` response
off the HTTP client (an httpx response hook), independently of any framework, so "the ledger
equals what the server reported" can be asserted. Used by the LangChain and LlamaIndex adapter
tests; equally useful to verify metering of your own client setup.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["ServerUsage"]


class ServerUsage:
    """Collects the ``usage`` block of every non-streamed response the server sends.

    Pass ``hook`` / ``ahook`` as httpx ``event_hooks={"response": [...]}`` of the sync / async
    client the framework's model uses.
    """

    def __init__(self) -> None:
        self.usages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _keep(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions") and "json" in response.headers.get(
            "content-type", ""
        ):
            with self._lock:
                self.usages.append(response.json()["usage"])

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self._keep(response)

    async def ahook(self, response: httpx.Response) -> None:
        await response.aread()
        self._keep(response)

    def total(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) summed over every response seen."""
        return (
            sum(u["prompt_tokens"] for u in self.usages),
            sum(u["completion_tokens"] for u in self.usages),
        )
