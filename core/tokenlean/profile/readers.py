"""Trace readers: every format the profiler accepts, into one ``Trace``.

Formats (detected from the content, never from the file name alone):

- **ledger** — tokenlean's own JSONL (one ``UsageRecord.to_dict()`` a line, what
  ``tokenlean.metering`` exports). Numbers and timings only: the content levers report that
  they cannot be estimated from it.
- **openai** — JSONL of ``{"request": {chat-completions body}, "response": {...}}`` with optional
  ``task_id``, ``started_at`` / ``first_token_at`` / ``ended_at`` (epoch seconds) or
  ``ttft_s`` / ``latency_s``, and ``endpoint``.
- **langchain** — a LangChain / LangSmith run export: a JSON list of runs, ``{"runs": [...]}``,
  a single run, or JSONL of runs. LLM runs (``run_type`` "llm") become calls; nested
  ``child_runs`` are walked; the task is the run's ``trace_id`` (its root run).
- **swe-agent** — SWE-agent ``.traj`` files: every assistant turn of ``history`` is one call
  whose prompt is everything before it. No usage is recorded, so tokens are counted.
- **claude-code** / **codex** — coding-agent transcripts (``coding_agents``): a Claude Code
  session (its transcript, subagents included, or its session folder) and a Codex CLI rollout.
- **otlp** — OpenTelemetry GenAI spans in OTLP JSON, or JSONL of exports (``otlp``).

A file that is in none of these shapes raises ``TraceFormatError`` naming the file (and line),
so a user never gets an empty profile from a typo'd path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tokenlean.errors import InputError, MeteringError, TraceFormatError
from tokenlean.profile.coding_agents import (
    is_claude_session_dir,
    merge_agent_sessions,
    read_claude_code,
    read_codex,
    sniff_agent_format,
)
from tokenlean.profile.otlp import is_otlp_export, read_otlp
from tokenlean.profile.trace import Call, Trace
from tokenlean.tokens import count_messages, count_tokens
from tokenlean.types import Message, Request, Response, ToolCall, Usage, normalize_usage

__all__ = ["FORMATS", "detect_format", "read_trace", "read_traces"]

log = logging.getLogger("tokenlean.profile")

FORMATS = ("ledger", "openai", "langchain", "swe-agent", "claude-code", "codex", "otlp")


# -- helpers -----------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{path}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{path}: not valid JSON ({exc})") from exc


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{path}: not UTF-8 text") from exc
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc


def _epoch(value: object) -> float | None:
    """Epoch seconds from a number or an ISO-8601 string (LangChain writes ISO times)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:  # LangSmith exports naive UTC times
            from datetime import UTC

            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return None


def _cost(value: object, where: str) -> Decimal | None:
    """A row's recorded cost; ``TraceFormatError`` for one that is not a finite number."""
    if value is None:
        return None
    try:
        cost = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        cost = None
    if cost is None or not cost.is_finite():
        raise TraceFormatError(f"{where}: cost must be a number, got {value!r}")
    return cost


def _counted_usage(request: Request, response: Response | None) -> Usage:
    model = request.model
    inp = count_messages(request.messages, model, request.tools)
    out = 0
    if response is not None:
        out = count_tokens(response.message.text, model)
        for tc in response.message.tool_calls:
            out += count_tokens(tc.name, model) + count_tokens(tc.arguments, model)
    return Usage(inp, out)


def _is_ledger_row(row: object) -> bool:
    return (
        isinstance(row, Mapping)
        and isinstance(row.get("usage"), Mapping)
        and "input_tokens" in row["usage"]
        and "request" not in row
        and ("started_at" in row or "model" in row)
    )


def _is_openai_row(row: object) -> bool:
    return (
        isinstance(row, Mapping) and isinstance(row.get("request"), Mapping) and "messages" in row["request"]
    )


def _is_run(obj: object) -> bool:
    return isinstance(obj, Mapping) and ("run_type" in obj or ("inputs" in obj and "outputs" in obj))


def _runs_of(data: Any) -> list[Mapping[str, Any]] | None:
    if isinstance(data, Mapping) and isinstance(data.get("runs"), list):
        data = data["runs"]
    if isinstance(data, Mapping) and _is_run(data):
        return [data]
    if isinstance(data, list) and data and all(_is_run(r) for r in data):
        return list(data)
    return None


def detect_format(path: str | Path) -> str:
    """The format name of ``path`` (one of ``FORMATS``); ``TraceFormatError`` if none fits."""
    p = Path(path)
    if is_claude_session_dir(p):
        return "claude-code"
    if not p.is_file():
        raise TraceFormatError(f"{p}: no such trace file")
    if p.suffix == ".traj":
        return "swe-agent"
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{p}: not UTF-8 text") from exc
    lines = [ln for ln in text.split("\n") if ln.strip()]  # U+2028 in a JSON string is no line end
    if not lines:
        raise TraceFormatError(f"{p}: empty trace file")
    if len(lines) > 1:  # JSONL (a pretty-printed JSON document fails to parse line by line)
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError:
            first = None
        if isinstance(first, Mapping):
            if _is_ledger_row(first):
                return "ledger"
            if _is_openai_row(first):
                return "openai"
            if _is_run(first):
                return "langchain"
            if is_otlp_export(first):
                return "otlp"
            if agent := sniff_agent_format(lines):
                return agent
            raise TraceFormatError(
                f"{p}:1: a JSONL row in no known trace format (keys {sorted(map(str, first))[:8]}); "
                f"expected one of {', '.join(FORMATS)}"
            )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"{p}: neither JSON nor JSONL ({exc})") from exc
    if isinstance(data, Mapping) and isinstance(data.get("history"), list):
        return "swe-agent"
    if _runs_of(data) is not None:
        return "langchain"
    if _is_ledger_row(data):
        return "ledger"
    if _is_openai_row(data):
        return "openai"
    if is_otlp_export(data):
        return "otlp"
    if len(lines) == 1 and (agent := sniff_agent_format(lines)):
        return agent
    raise TraceFormatError(f"{p}: JSON in no known trace format; expected one of {', '.join(FORMATS)}")


# -- ledger ------------------------------------------------------------------------------------
def _read_ledger(path: Path) -> list[Call]:
    from tokenlean.metering.records import UsageRecord

    calls: list[Call] = []
    per_task: dict[str, int] = {}
    for lineno, row in _jsonl_rows(path):
        if not _is_ledger_row(row):
            raise TraceFormatError(f"{path}:{lineno}: not a tokenlean ledger record")
        try:
            rec = UsageRecord.from_dict(row)
        except (MeteringError, InputError) as exc:
            raise TraceFormatError(f"{path}:{lineno}: {exc}") from exc
        task = rec.task_id or "(no task)"
        idx = per_task.get(task, 0)
        per_task[task] = idx + 1
        calls.append(
            Call(
                task_id=task,
                index=idx,
                usage=rec.usage,
                model=rec.model,
                endpoint=rec.endpoint,
                started_at=rec.started_at,
                first_token_at=rec.first_token_at,
                ended_at=rec.ended_at,
                cache_hit=rec.cache_hit,
                cost=rec.cost,
                source=f"{path}:{lineno}",
                extra={"tags": dict(rec.tags)},
            )
        )
    return calls


# -- OpenAI JSONL ------------------------------------------------------------------------------
def _conversation_key(request: Request) -> str:
    """Task id for logs without one: the system prompt plus the first user turn.

    Turns of one conversation resend the same opening, so they group together; a new
    conversation starts a new task.
    """
    import hashlib

    parts = [m.text for m in request.messages if m.role in ("system", "developer")][:1]
    first_user = next((m.text for m in request.messages if m.role == "user"), "")
    key = "\x00".join([*parts, first_user]).encode("utf-8", "surrogatepass")  # odd text is still a key
    digest = hashlib.sha1(key).hexdigest()[:10]
    return f"conv-{digest}"


def _read_openai(path: Path) -> list[Call]:
    calls: list[Call] = []
    per_task: dict[str, int] = {}
    for lineno, row in _jsonl_rows(path):
        if not _is_openai_row(row):
            raise TraceFormatError(
                f"{path}:{lineno}: expected {{'request': {{...messages...}}, 'response': ...}}"
            )
        try:
            meta = row.get("metadata") if isinstance(row.get("metadata"), Mapping) else {}
            request = Request.from_openai(row["request"], metadata=meta)
            raw_resp = row.get("response")
            response = Response.from_openai(raw_resp) if isinstance(raw_resp, Mapping) else None
        except InputError as exc:
            raise TraceFormatError(f"{path}:{lineno}: {exc}") from exc
        task = str(row.get("task_id") or request.task_id or _conversation_key(request))
        idx = per_task.get(task, 0)
        per_task[task] = idx + 1
        if response is not None and response.usage is not None:
            usage, counted = response.usage, False
        else:
            usage, counted = _counted_usage(request, response), True
        started = _epoch(row.get("started_at"))
        first = _epoch(row.get("first_token_at"))
        ended = _epoch(row.get("ended_at"))
        if started is None and ("ttft_s" in row or "latency_s" in row):
            started = 0.0
        if first is None and isinstance(row.get("ttft_s"), (int, float)) and started is not None:
            first = started + float(row["ttft_s"])
        if ended is None and isinstance(row.get("latency_s"), (int, float)) and started is not None:
            ended = started + float(row["latency_s"])
        calls.append(
            Call(
                task_id=task,
                index=idx,
                usage=usage,
                request=request,
                response=response,
                model=(response.model if response and response.model else None) or request.model,
                endpoint=row.get("endpoint"),
                started_at=started,
                first_token_at=first,
                ended_at=ended,
                cache_hit=bool(row.get("cache_hit", False)),
                cost=_cost(row.get("cost"), f"{path}:{lineno}"),
                usage_counted=counted,
                source=f"{path}:{lineno}",
            )
        )
    return calls


# -- LangChain runs ----------------------------------------------------------------------------
_LC_ROLES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "function",
    "developer": "developer",
    "HumanMessage": "user",
    "AIMessage": "assistant",
    "SystemMessage": "system",
    "ToolMessage": "tool",
    "FunctionMessage": "function",
    "ChatMessage": "user",
}


def _lc_message(obj: object, where: str) -> Message:
    """A serialised LangChain message (``dumpd`` constructor form, ``message_to_dict``, or OpenAI)."""
    if not isinstance(obj, Mapping):
        if isinstance(obj, str):
            return Message("user", obj)
        raise TraceFormatError(f"{where}: a message must be an object, got {type(obj).__name__}")
    if "role" in obj and "content" in obj and "kwargs" not in obj:
        try:
            return Message.from_openai(
                {
                    k: v
                    for k, v in obj.items()
                    if k in ("role", "content", "tool_calls", "tool_call_id", "name")
                }
            )
        except InputError as exc:
            raise TraceFormatError(f"{where}: {exc}") from exc
    kind: str | None = None
    data: Mapping[str, Any]
    if obj.get("lc") == 1 and isinstance(obj.get("kwargs"), Mapping):  # dumpd form
        ids = obj.get("id") or []
        kind = str(ids[-1]) if ids else None
        data = obj["kwargs"]
        kind = str(data.get("type") or kind)
    elif isinstance(obj.get("data"), Mapping):  # messages_to_dict form
        kind = str(obj.get("type"))
        data = obj["data"]
    else:
        kind = str(obj.get("type"))
        data = obj
    role = _LC_ROLES.get(kind or "")
    if role is None and kind == "chat":
        role = str(data.get("role", "user"))
    if role is None:
        raise TraceFormatError(f"{where}: unknown LangChain message type {kind!r}")
    content = data.get("content", "")
    if isinstance(content, list):
        content = tuple(p if isinstance(p, Mapping) else {"type": "text", "text": str(p)} for p in content)
    calls = []
    for tc in data.get("tool_calls") or ():
        if isinstance(tc, Mapping) and "function" not in tc:
            args = tc.get("args", {})
            calls.append(
                ToolCall(
                    id=str(tc.get("id") or ""),
                    name=str(tc.get("name", "")),
                    arguments=args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                )
            )
        elif isinstance(tc, Mapping):
            calls.append(ToolCall.from_openai(tc))
    tool_call_id = data.get("tool_call_id")
    try:
        return Message(
            role=role,
            content=content,
            tool_calls=tuple(calls),
            tool_call_id=str(tool_call_id) if tool_call_id else ("unknown" if role == "tool" else None),
            name=data.get("name") if isinstance(data.get("name"), str) else None,
        )
    except InputError as exc:
        raise TraceFormatError(f"{where}: {exc}") from exc


def _lc_usage(outputs: Mapping[str, Any], gen_msg: Mapping[str, Any] | None) -> Usage | None:
    candidates: list[object] = []
    llm_output = outputs.get("llm_output")
    if isinstance(llm_output, Mapping):
        candidates += [llm_output.get("token_usage"), llm_output.get("usage")]
    if gen_msg is not None:
        kw = gen_msg.get("kwargs") if isinstance(gen_msg.get("kwargs"), Mapping) else gen_msg
        if isinstance(kw, Mapping):
            candidates.append(kw.get("usage_metadata"))
            rm = kw.get("response_metadata")
            if isinstance(rm, Mapping):
                candidates += [rm.get("token_usage"), rm.get("usage")]
    for c in candidates:
        if isinstance(c, Mapping) and c:
            try:
                return normalize_usage(c)
            except InputError:
                continue
    return None


def _walk_runs(runs: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for r in runs:
        yield r
        children = r.get("child_runs")
        if isinstance(children, list):
            yield from _walk_runs(c for c in children if isinstance(c, Mapping))


def _lc_call(run: Mapping[str, Any], where: str) -> tuple[str, float, Call] | None:
    if run.get("run_type", "llm") != "llm":
        return None
    inputs = run.get("inputs")
    outputs = run.get("outputs") or {}
    if not isinstance(inputs, Mapping) or not isinstance(outputs, Mapping):
        raise TraceFormatError(f"{where}: an llm run needs 'inputs' and 'outputs' objects")
    raw_msgs = inputs.get("messages")
    if isinstance(raw_msgs, list) and raw_msgs and isinstance(raw_msgs[0], list):
        raw_msgs = raw_msgs[0]  # chat models log a batch: [[...messages...]]
    if raw_msgs is None and isinstance(inputs.get("prompts"), list):
        raw_msgs = [{"role": "user", "content": str(p)} for p in inputs["prompts"][:1]]
    if not isinstance(raw_msgs, list):
        raise TraceFormatError(f"{where}: llm run without 'inputs.messages' or 'inputs.prompts'")
    messages = [_lc_message(m, where) for m in raw_msgs]
    extra: Mapping[str, Any] = run["extra"] if isinstance(run.get("extra"), Mapping) else {}
    inv: Mapping[str, Any] = (
        extra["invocation_params"] if isinstance(extra.get("invocation_params"), Mapping) else {}
    )
    meta: Mapping[str, Any] = extra["metadata"] if isinstance(extra.get("metadata"), Mapping) else {}
    model = inv.get("model") or inv.get("model_name") or meta.get("ls_model_name")
    gens = outputs.get("generations")
    gen: Mapping[str, Any] | None = None
    if isinstance(gens, list) and gens:
        g0 = gens[0]
        if isinstance(g0, list) and g0:
            g0 = g0[0]
        if isinstance(g0, Mapping):
            gen = g0
    response: Response | None = None
    gen_msg: Mapping[str, Any] | None = None
    if gen is not None:
        if isinstance(gen.get("message"), Mapping):
            gen_msg = gen["message"]
            reply = _lc_message(gen_msg, where)
        else:
            reply = Message("assistant", str(gen.get("text", "")))
        response = Response(message=reply, model=str(model) if model else None)
    request = Request(
        messages=tuple(messages),
        model=str(model) if model else None,
        metadata=dict(meta),
    )
    usage = _lc_usage(outputs, gen_msg)
    counted = usage is None
    if usage is None:
        usage = _counted_usage(request, response)
    started = _epoch(run.get("start_time"))
    ended = _epoch(run.get("end_time"))
    first = None
    for ev in run.get("events") or ():
        if isinstance(ev, Mapping) and ev.get("name") == "new_token":
            first = _epoch(ev.get("time"))
            break
    task = str(
        run.get("trace_id") or meta.get("task_id") or run.get("parent_run_id") or run.get("id") or where
    )
    call = Call(
        task_id=task,
        index=0,
        usage=usage,
        request=request,
        response=response,
        model=str(model) if model else None,
        started_at=started,
        first_token_at=first,
        ended_at=ended,
        usage_counted=counted,
        source=where,
    )
    return task, started or 0.0, call


def _read_langchain(path: Path) -> list[Call]:
    if path.suffix == ".jsonl":
        runs = []
        for lineno, row in _jsonl_rows(path):
            if not _is_run(row):
                raise TraceFormatError(f"{path}:{lineno}: not a LangChain run")
            runs.append(row)
    else:
        found = _runs_of(_load_json(path))
        if found is None:
            raise TraceFormatError(f"{path}: not a LangChain run export")
        runs = found
    found_calls: list[tuple[str, float, Call]] = []
    for i, run in enumerate(_walk_runs(runs)):
        got = _lc_call(run, f"{path}[run {i}]")
        if got is not None:
            found_calls.append(got)
    if runs and not found_calls:
        raise TraceFormatError(f"{path}: the run export has no llm runs")
    found_calls.sort(key=lambda t: (t[0], t[1]))
    out: list[Call] = []
    per_task: dict[str, int] = {}
    from dataclasses import replace

    for task, _, call in found_calls:
        idx = per_task.get(task, 0)
        per_task[task] = idx + 1
        out.append(replace(call, index=idx))
    return out


# -- SWE-agent trajectories --------------------------------------------------------------------
def _swe_message(m: Mapping[str, Any], where: str) -> Message:
    role = m.get("role")
    content = m.get("content", "")
    if isinstance(content, list):  # some versions store [{"type": "text", "text": ...}]
        content = tuple(p for p in content if isinstance(p, Mapping))
    calls = tuple(ToolCall.from_openai(tc) for tc in (m.get("tool_calls") or ()) if isinstance(tc, Mapping))
    tc_id = m.get("tool_call_id")
    ids = m.get("tool_call_ids")
    if tc_id is None and isinstance(ids, list) and ids:  # anything else is left to Message to refuse
        tc_id = ids[0]
    try:
        return Message(role=str(role), content=content, tool_calls=calls, tool_call_id=tc_id)
    except InputError as exc:
        raise TraceFormatError(f"{where}: {exc}") from exc


def _read_swe_agent(path: Path, model: str | None = None) -> list[Call]:
    data = _load_json(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("history"), list):
        raise TraceFormatError(f"{path}: a SWE-agent trajectory needs a 'history' list")
    history = data["history"]
    task = path.stem
    msgs: list[Message] = []
    calls: list[Call] = []
    for i, raw in enumerate(history):
        if not isinstance(raw, Mapping) or "role" not in raw:
            raise TraceFormatError(f"{path}: history[{i}] is not a message")
        if raw.get("is_demo"):
            continue
        msg = _swe_message(raw, f"{path}: history[{i}]")
        if msg.role == "assistant" and msgs:
            request = Request(messages=tuple(msgs), model=model, metadata={"task_id": task})
            response = Response(message=msg, model=model)
            calls.append(
                Call(
                    task_id=task,
                    index=len(calls),
                    usage=_counted_usage(request, response),
                    request=request,
                    response=response,
                    model=model,
                    usage_counted=True,
                    source=f"{path}: history[{i}]",
                )
            )
        msgs.append(msg)
    if not calls:
        raise TraceFormatError(f"{path}: the trajectory has no assistant turns")
    return calls


# -- entry points ------------------------------------------------------------------------------
def read_trace(
    path: str | Path, *, fmt: str | None = None, model: str | None = None, empty_sessions: bool = False
) -> Trace:
    """Read one trace file (format detected unless ``fmt`` is given).

    ``model`` names the model for formats that do not record one (SWE-agent trajectories), so
    they can be priced; calls that name their model keep it. ``empty_sessions`` lets a
    coding-agent transcript without model calls (only summaries or snapshots) read as an empty
    trace instead of an error, as ``read_traces`` does for the files of a directory.
    """
    p = Path(path)
    kind = fmt or detect_format(p)
    if kind not in FORMATS:
        raise TraceFormatError(f"unknown trace format {kind!r}; expected one of {', '.join(FORMATS)}")
    if not p.is_file() and not (kind == "claude-code" and is_claude_session_dir(p)):
        raise TraceFormatError(f"{p}: no such trace file")
    if kind == "ledger":
        calls = _read_ledger(p)
    elif kind == "openai":
        calls = _read_openai(p)
    elif kind == "langchain":
        calls = _read_langchain(p)
    elif kind == "claude-code":
        calls = read_claude_code(p)
    elif kind == "codex":
        calls = read_codex(p)
    elif kind == "otlp":
        calls = read_otlp(p)
    else:
        calls = _read_swe_agent(p, model)
    if not calls and not (empty_sessions and kind in ("claude-code", "codex")):
        raise TraceFormatError(f"{p}: no calls in the trace")
    if model is not None:
        from dataclasses import replace

        calls = [c if c.model else replace(c, model=model) for c in calls]
    log.info("read %d calls from %s (%s)", len(calls), p, kind)
    return Trace.from_calls(calls, str(p), kind)


_TRACE_SUFFIXES = (".traj", ".json", ".jsonl")


def _traces_below(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file() and f.suffix in _TRACE_SUFFIXES and "subagents" not in f.relative_to(folder).parts
    )


def read_traces(
    paths: Sequence[str | Path],
    *,
    model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    skip_empty: bool = False,
) -> Trace:
    """Read and merge several trace files (a directory means every file in it).

    ``progress(done, total)`` is called after each file (a large folder of sessions takes a while).
    ``skip_empty``: a coding-agent session with no model call is skipped even when named (as the
    files of a listed directory always are), instead of failing the read.
    """
    files: list[tuple[Path, bool]] = []  # (file, listed from a directory)
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and not is_claude_session_dir(p):
            direct = [f for f in sorted(p.iterdir()) if f.is_file() and f.suffix in _TRACE_SUFFIXES]
            # A folder of folders (~/.claude/projects, ~/.codex/sessions): every trace below it;
            # subagent transcripts are read with their session, not on their own.
            files.extend((f, True) for f in (direct or _traces_below(p)))
        else:
            files.append((p, False))
    if not files:
        raise TraceFormatError("no trace files given")
    parts = []
    for i, (f, listed) in enumerate(files, 1):
        parts.append(read_trace(f, model=model, empty_sessions=listed or skip_empty))
        if progress is not None:
            progress(i, len(files))
    trace = Trace.merge(parts)
    if not trace.calls:
        raise TraceFormatError("no calls in the trace files given")
    return merge_agent_sessions(trace)
