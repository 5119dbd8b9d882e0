"""Async LangChain paths never block the event loop on disk I/O (asyncio debug mode's check)."""

from __future__ import annotations

import os
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_tokenlean.callbacks import TokenleanCallbackHandler
from langchain_tokenlean.compaction import TokenleanCompactionMiddleware
from tokenlean.compaction import SQLiteOmissionStore
from tokenlean.metering import Ledger, Meter, read_jsonl
from tokenlean.metering.exporters import JsonlSink

STALL = 0.5  # what one slow disk write costs in these tests; the loop may not feel it


@pytest.mark.integration
async def test_metering_sink_does_not_fsync_on_the_loop(
    local_chat_model, loop_watch, tmp_path, monkeypatch
) -> None:
    sink = JsonlSink(tmp_path / "calls.jsonl")
    meter = Meter(ledger=Ledger(sink))
    model = local_chat_model(callbacks=[TokenleanCallbackHandler(meter)])
    await model.ainvoke("Say hi.")  # warm-up: imports, tokenizer, connection
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(STALL)  # a busy disk
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    async with loop_watch(STALL * 0.8) as blocked:
        for _ in range(2):
            await model.ainvoke("Say hi.")
    assert blocked == []
    assert sink.flush(timeout=10)
    assert len(list(read_jsonl(tmp_path / "calls.jsonl"))) == 3  # every call is on disk, in order
    sink.close()


class _SlowStore(SQLiteOmissionStore):
    def put_many(self, texts):  # type: ignore[no-untyped-def]
        time.sleep(STALL)
        return super().put_many(texts)


async def test_rewrite_history_writes_omissions_off_the_loop(loop_watch, tmp_path) -> None:
    log = "\n".join(f"2024-05-01 12:00:{i:02d} INFO worker-{i} finished job {i * 7}" for i in range(60))
    history = [
        HumanMessage("Which worker finished job 91?", id="h1"),
        AIMessage("Reading.", tool_calls=[{"id": "c1", "name": "read_log", "args": {}}], id="a1"),
        ToolMessage(log, tool_call_id="c1", name="read_log", id="t1"),
        AIMessage("Done reading.", id="a2"),
        HumanMessage("So which one?", id="h2"),
    ]
    mw = TokenleanCompactionMiddleware(
        ratio=0.7,
        keep_last_turns=1,
        mode="lexical",
        rewrite_history=True,
        store=_SlowStore(tmp_path / "om.db"),
    )
    async with loop_watch(STALL * 0.8) as blocked:
        update = await mw.abefore_model({"messages": history}, None)
    assert update is not None and blocked == []
