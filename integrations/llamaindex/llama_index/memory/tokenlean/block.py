"""A LlamaIndex memory block that keeps chat history and hands it back compacted, verbatim.

LlamaIndex's ``Memory`` ejects old messages from short-term memory into long-term blocks; the
stock blocks either summarise them (an LLM call that paraphrases, and loses exact paths, numbers
and code) or retrieve a few by vector search. ``TokenleanCompactedHistoryBlock`` keeps every
ejected message and, on each ``aget``, returns them compacted towards the latest user message:
sentences, lines and code blocks that do not bear on it are dropped, every surviving byte is the
original's, and each omission marker's handle can be expanded through the compactor's
``expand_omitted`` (see ``llama_index.postprocessor.tokenlean.compaction.expand_omitted_tool``).
Decisions are frozen once made (incremental mode), so the block's output is byte-stable between
turns and provider prompt caches keep hitting.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.memory import BaseMemoryBlock

from llama_index.llms.tokenlean.convert import messages_to_core, with_text
from tokenlean.compaction import Compactor
from tokenlean.errors import TokenleanError

__all__ = ["TokenleanCompactedHistoryBlock"]

log = logging.getLogger("tokenlean.llamaindex.memory")


class TokenleanCompactedHistoryBlock(BaseMemoryBlock[list[ChatMessage]]):
    """Long-term chat history, returned compacted to the current question.

    ``ratio`` is the share of the stored history's tokens to *remove* on each ``aget``; ``keep``
    is the share to *keep* (LLMLingua's ``rate``), the explicit alternative: give one.
    ``max_messages`` bounds what is stored (oldest go first).
    """

    name: str = Field(default="compacted_history", description="The name of the memory block.")
    ratio: float = Field(default=0.6, description="share of stored tokens to remove")
    keep: float | None = Field(default=None, description="share of stored tokens to keep, instead of ratio")
    max_messages: int = Field(default=1000, description="most messages kept in the block")
    _messages: list[ChatMessage] = PrivateAttr(default_factory=list)
    _compactor: Compactor = PrivateAttr()

    def __init__(self, *, compactor: Compactor | None = None, **data: Any) -> None:
        super().__init__(**data)
        # the block's messages are all "old": no live window, every message may be shortened
        self._compactor = compactor or Compactor(
            ratio=self.ratio if self.keep is None or "ratio" in self.model_fields_set else None,
            keep=self.keep,
            keep_last_turns=0,
            keep_last_user=False,
            min_tokens=16,
            incremental=True,
        )

    @property
    def compactor(self) -> Compactor:
        return self._compactor

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    async def _aget(
        self, messages: list[ChatMessage] | None = None, **block_kwargs: Any
    ) -> list[ChatMessage]:
        if not self._messages:
            return []
        query = None
        for m in reversed(messages or []):
            if m.role == MessageRole.USER and isinstance(m.content, str) and m.content:
                query = m.content
                break
        try:
            core = messages_to_core(self._messages)  # a malformed message also passes through
            # off the event loop: scoring is CPU-bound and omissions are written to their store
            result = await self._compactor.acompact(core, query=query)
        except TokenleanError as exc:
            log.warning("history compaction skipped (%s)", exc)
            return list(self._messages)
        out: list[ChatMessage] = []
        for orig, old, new in zip(self._messages, result.original, result.messages, strict=True):
            out.append(orig if new.text == old.text else with_text(orig, new.text))
        return out

    async def _aput(self, messages: list[ChatMessage]) -> None:
        self._messages.extend(messages)
        overflow = len(self._messages) - self.max_messages
        if overflow > 0:
            del self._messages[:overflow]
            self._compactor.reset()  # the prefix changed: frozen decisions no longer line up

    async def atruncate(
        self, content: list[ChatMessage], tokens_to_truncate: int
    ) -> list[ChatMessage] | None:
        """Drop the oldest messages first (they are the least likely to matter)."""
        from tokenlean.tokens import count_tokens

        out = list(content)
        removed = 0
        while out and removed < tokens_to_truncate:
            removed += count_tokens(str(out[0].content or ""))
            out.pop(0)
        return out or None
