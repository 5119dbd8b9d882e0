"""Coding-agent transcripts as traces: Claude Code sessions and Codex CLI rollouts.

Claude Code keeps every session under ``~/.claude/projects`` and the Codex CLI under
``~/.codex/sessions``, each model call's usage next to the conversation: reading them shows where a
team's coding-agent tokens go with no instrumentation at all. What the totals depend on:

- Claude Code writes one API response as several assistant rows (one per content block), each
  repeating the response's ``usage`` while ``output_tokens`` grows. Rows are grouped by message id
  (else request id) and counted once, with the largest output count; a response copied into
  another file (a resumed session) counts once when the files are read together.
- Subagent (sidechain) calls are billed like any other: they count in their parent's session, with
  ``extra["sidechain"]`` set, whether written inline (older versions) or under
  ``<session>/subagents/`` (read with the session's transcript).
- Claude's ``input_tokens`` leaves out cache reads and writes, which ``Usage`` counts in; writes
  are priced by TTL tier, so ``extra`` keeps ``cache_write_5m_tokens`` and ``cache_write_1h_tokens``.
- Rows that are not model calls (progress, snapshots, hooks, summaries) are skipped; a line that is
  not a JSON object is a ``TraceFormatError`` naming it, as in every reader.
- Codex ``token_count`` events carry the running total next to the last call's usage, and repeat
  with unchanged totals: each new total is one call, from ``last_token_usage`` when those add up to
  the totals, else from the totals' differences. Codex's ``input_tokens`` include the cached ones.

Each call keeps the conversation the transcript shows up to it (tool outputs included) for the
content levers; neither tool records the system prompt or tool schemas in its transcript.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tokenlean.errors import InputError, TraceFormatError
from tokenlean.profile.trace import Call, Trace, renumber_by_time
from tokenlean.types import Message, Request, Response, ToolCall, Usage

__all__ = [
    "claude_code_files",
    "find_claude_code_sessions",
    "find_codex_sessions",
    "is_claude_session_dir",
    "merge_agent_sessions",
    "read_claude_code",
    "read_codex",
    "sniff_agent_format",
]

_CODEX_TYPES = frozenset({"session_meta", "turn_context", "response_item", "event_msg", "compacted"})
_SYNTHETIC = "<synthetic>"  # assistant rows Claude Code writes itself (errors, interruptions)


# -- shared helpers ----------------------------------------------------------------------------
def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The JSON objects of a JSONL file, split on newlines only (Node leaves U+2028 unescaped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, Mapping):
            raise TraceFormatError(f"{path}:{lineno}: a row must be a JSON object, got {type(row).__name__}")
        yield lineno, row


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _count(value: object, name: str, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value % 1:
        raise TraceFormatError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    return int(value)


def _usage(inp: int, out: int, read: int, write: int, reasoning: int, where: str) -> Usage:
    try:
        return Usage(inp, out, read, write, min(reasoning, out))
    except InputError as exc:
        raise TraceFormatError(f"{where}: {exc}") from exc


def _json(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _merge_assistant(a: Message, b: Message) -> Message:
    """One assistant message from two consecutive output pieces (text and tool calls)."""
    texts = [t for t in (a.text, b.text) if t]
    content = "\n\n".join(texts) if texts else None
    return Message("assistant", content, tool_calls=a.tool_calls + b.tool_calls)


def sniff_agent_format(lines: Sequence[str], limit: int = 20) -> str | None:
    """``"claude-code"`` or ``"codex"`` when the first JSONL lines are one of those transcripts."""
    for line in lines[:limit]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(row, Mapping) or not isinstance(row.get("type"), str):
            return None
        if row["type"] in _CODEX_TYPES and isinstance(row.get("payload"), Mapping):
            return "codex"
        if "sessionId" in row or "leafUuid" in row or ("messageId" in row and "snapshot" in row):
            return "claude-code"
    return None


def merge_agent_sessions(trace: Trace) -> Trace:
    """``trace`` with each Claude Code response once, and sessions read from several files renumbered.

    A resumed Claude Code session copies earlier rows into its new file, so reading a projects
    folder meets some responses twice; the first read is kept.
    """
    seen: set[str] = set()
    kept: list[Call] = []
    for c in trace.calls:
        key = c.extra.get("response_key") if c.extra.get("client") == "claude-code" else None
        if isinstance(key, str):
            if key in seen:
                continue
            seen.add(key)
        kept.append(c)
    changed = len(kept) != len(trace.calls)
    by_task: dict[str, list[int]] = {}
    for i, c in enumerate(kept):
        if c.extra.get("client") in ("claude-code", "codex"):
            by_task.setdefault(c.task_id, []).append(i)
    for idxs in by_task.values():
        if changed or len({kept[i].index for i in idxs}) != len(idxs):
            changed = True
            for i, c in zip(idxs, renumber_by_time([kept[i] for i in idxs]), strict=True):
                kept[i] = c
    return Trace(tuple(kept), trace.sources, trace.formats) if changed else trace


# -- finding sessions --------------------------------------------------------------------------
def find_claude_code_sessions(root: str | Path | None = None) -> list[Path]:
    """Claude Code session transcripts under ``root``, sorted.

    Default root: ``$CLAUDE_CONFIG_DIR/projects`` when that is set, else ``~/.claude/projects``
    (and ``~/.config/claude/projects``, where some versions write). Files under a ``subagents``
    folder are left out: reading their session's transcript reads them. A session folder whose
    transcript is gone (deleted, or cleaned up) is listed itself, so its subagents still count.
    """
    if root is not None:
        roots = [Path(root).expanduser()]
    elif os.environ.get("CLAUDE_CONFIG_DIR", "").strip():
        roots = [Path(os.environ["CLAUDE_CONFIG_DIR"].strip()).expanduser() / "projects"]
    else:
        home = Path.home()
        roots = [home / ".claude" / "projects", home / ".config" / "claude" / "projects"]
    found: set[Path] = set()
    for r in roots:
        if not r.is_dir():
            continue
        for p in r.rglob("*.jsonl"):
            if "subagents" not in p.relative_to(r).parts[:-1]:
                if p.is_file():
                    found.add(p)
            elif p.parent.name == "subagents":
                session = p.parent.parent
                if not (session.parent / f"{session.name}.jsonl").is_file():
                    found.add(session)
    return sorted(found)


def find_codex_sessions(root: str | Path | None = None) -> list[Path]:
    """Codex CLI rollout files under ``root`` (default ``$CODEX_HOME/sessions``, else
    ``~/.codex/sessions``), sorted: their ``YYYY/MM/DD`` folders make that time order."""
    if root is None:
        home = os.environ.get("CODEX_HOME", "").strip()
        root = (Path(home).expanduser() if home else Path.home() / ".codex") / "sessions"
    r = Path(root).expanduser()
    if not r.is_dir():
        return []
    return sorted(p for p in r.rglob("rollout-*.jsonl") if p.is_file())


# -- Claude Code -------------------------------------------------------------------------------
def is_claude_session_dir(path: Path) -> bool:
    """Whether ``path`` is a Claude Code session folder (the one holding ``subagents/``)."""
    return path.is_dir() and (path / "subagents").is_dir()


def claude_code_files(path: Path) -> list[Path]:
    """The files of one session: its transcript, then its subagents' (for a transcript or a folder)."""
    if path.is_dir():
        main = path.parent / f"{path.name}.jsonl"
        files = [main] if main.is_file() else []
        sub = path / "subagents"
    else:
        files = [path]
        sub = path.parent / path.stem / "subagents"
    if sub.is_dir() and sub.parent.name != "subagents":
        files.extend(sorted(p for p in sub.glob("*.jsonl") if p.is_file()))
    return files


@dataclass
class _Row:
    path: Path
    lineno: int
    row: Mapping[str, Any]
    key: str | None = None  # the response an assistant row belongs to

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


def _text(content: object) -> str:
    """The text of a string or of a list of content parts (Claude's text, Codex's input/output_text)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else ()
    return "\n".join(p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str))


def _claude_user(r: _Row) -> list[Message]:
    """A user row as messages: its tool results (one tool message each), then its text."""
    msg = r.row.get("message")
    content = msg.get("content") if isinstance(msg, Mapping) else None
    if isinstance(content, str):
        return [Message("user", content)]
    out: list[Message] = []
    parts: list[Mapping[str, Any]] = []
    for b in content if isinstance(content, list) else ():
        if not isinstance(b, Mapping):
            continue
        if b.get("type") == "tool_result":
            call_id = b.get("tool_use_id")
            text = _text(b.get("content"))
            out.append(Message("tool", text, tool_call_id=str(call_id) if call_id else "unknown"))
        elif b.get("type") == "text":
            parts.append({"type": "text", "text": str(b.get("text", ""))})
        else:  # images, documents: kept as sent
            parts.append(b)
    if parts:
        plain = all(p.get("type") == "text" for p in parts)
        out.append(Message("user", "\n".join(str(p["text"]) for p in parts) if plain else tuple(parts)))
    return out


def _claude_assistant(rows: Sequence[_Row]) -> Message:
    """The response the rows of one message id make together (text, then tool calls)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    seen_calls: set[str] = set()
    for r in rows:
        content = r.row["message"].get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for b in blocks if isinstance(blocks, list) else ():
            if not isinstance(b, Mapping):
                continue
            kind = b.get("type")
            if kind == "text" and isinstance(b.get("text"), str) and b["text"] not in texts:
                texts.append(b["text"])
            elif kind in ("tool_use", "server_tool_use"):
                call_id = str(b.get("id") or "")
                if call_id and call_id in seen_calls:
                    continue
                seen_calls.add(call_id)
                calls.append(ToolCall(call_id, str(b.get("name", "")), _json(b.get("input", {}))))
    content_out = "\n\n".join(texts) if texts else (None if calls else "")
    return Message("assistant", content_out, tool_calls=tuple(calls))


class _Conversation:
    """The messages of the row chain (``parentUuid`` links) ending at a row.

    One path is kept and moved between calls, so a session of many calls costs about one walk of
    its rows instead of one walk per call. Rows of every type stay in the chain (progress rows
    can be parents); only user and assistant rows add messages, each response once.
    """

    def __init__(self, rows: Mapping[str, _Row], responses: Mapping[str, Message]) -> None:
        self.rows = rows
        self.responses = responses
        self.path: list[str] = []
        self.pos: dict[str, int] = {}
        self.ends: list[int] = []  # len(msgs) after each path entry
        self.msgs: list[Message] = []
        self.emitted: dict[str, int] = {}  # response key -> path index that added it
        self.user: dict[str, list[Message]] = {}

    def upto(self, uuid: object) -> tuple[Message, ...]:
        seg: list[str] = []
        u = uuid if isinstance(uuid, str) else None
        while u is not None and u not in self.pos and u in self.rows and u not in seg:
            seg.append(u)
            parent = self.rows[u].row.get("parentUuid")
            u = parent if isinstance(parent, str) else None
        self._cut(self.pos[u] + 1 if u is not None and u in self.pos else 0)
        for x in reversed(seg):
            self._push(x)
        return tuple(self.msgs)

    def _cut(self, n: int) -> None:
        for i in range(len(self.path) - 1, n - 1, -1):
            x = self.path.pop()
            del self.pos[x]
            key = self.rows[x].key
            if key is not None and self.emitted.get(key) == i:
                del self.emitted[key]
        del self.ends[n:]
        del self.msgs[self.ends[-1] if self.ends else 0 :]

    def _push(self, uuid: str) -> None:
        r = self.rows[uuid]
        kind = r.row.get("type")
        if r.key is not None and r.key not in self.emitted:
            self.msgs.append(self.responses[r.key])
            self.emitted[r.key] = len(self.path)
        elif kind == "user":
            if uuid not in self.user:
                self.user[uuid] = _claude_user(r)
            self.msgs.extend(self.user[uuid])
        self.pos[uuid] = len(self.path)
        self.path.append(uuid)
        self.ends.append(len(self.msgs))


def _response_key(r: _Row) -> str:
    mid, rid = r.row["message"].get("id"), r.row.get("requestId")
    return f"msg:{mid}" if isinstance(mid, str) and mid else f"req:{rid}" if rid else f"row:{r.where}"


def _claude_usage(r: _Row) -> tuple[Usage, dict[str, Any]]:
    raw = r.row["message"].get("usage")
    if not isinstance(raw, Mapping):
        raise TraceFormatError(f"{r.where}: an assistant row without a 'usage' object")
    w = r.where
    inp = _count(raw.get("input_tokens"), "input_tokens", w)
    out = _count(raw.get("output_tokens"), "output_tokens", w)
    read = _count(raw.get("cache_read_input_tokens"), "cache_read_input_tokens", w)
    write = _count(raw.get("cache_creation_input_tokens"), "cache_creation_input_tokens", w)
    tiers = raw.get("cache_creation")
    one_hour = 0
    if isinstance(tiers, Mapping):
        five = _count(tiers.get("ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens", w)
        one_hour = _count(tiers.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens", w)
        if "cache_creation_input_tokens" not in raw:
            write = five + one_hour
        one_hour = min(one_hour, write)
    extra: dict[str, Any] = {
        "cache_write_5m_tokens": write - one_hour,
        "cache_write_1h_tokens": one_hour,
        "cache_tiers_recorded": isinstance(tiers, Mapping),
    }
    if isinstance(raw.get("service_tier"), str):
        extra["service_tier"] = raw["service_tier"]
    server = raw.get("server_tool_use")
    if isinstance(server, Mapping) and server.get("web_search_requests"):
        extra["web_search_requests"] = _count(server["web_search_requests"], "web_search_requests", w)
    return _usage(inp + read + write, out, read, write, 0, w), extra


def _claude_cost(value: object, where: str) -> Decimal | None:
    try:
        cost = None if value is None or isinstance(value, bool) else Decimal(str(value))
    except InvalidOperation:
        cost = Decimal("NaN")
    if cost is not None and not cost.is_finite():
        raise TraceFormatError(f"{where}: costUSD must be a number, got {value!r}")
    return cost


def read_claude_code(path: str | Path) -> list[Call]:
    """One call per API response of a Claude Code session (a transcript, or a session folder).

    Reading a transcript also reads ``<session>/subagents/*.jsonl`` beside it. Calls are grouped by
    the rows' ``sessionId`` (subagents count in their parent's session) and ordered by time.
    """
    p = Path(path)
    files = claude_code_files(p)
    if not files:
        raise TraceFormatError(f"{p}: no Claude Code transcript in this session folder")
    rows: dict[str, _Row] = {}
    groups: dict[str, list[_Row]] = {}
    for f in files:
        for lineno, row in _rows(f):
            r = _Row(f, lineno, row)
            if row.get("type") == "assistant":
                msg = row.get("message")
                if not isinstance(msg, Mapping):
                    raise TraceFormatError(f"{r.where}: an assistant row needs a 'message' object")
                if msg.get("model") != _SYNTHETIC:
                    r.key = _response_key(r)
                    groups.setdefault(r.key, []).append(r)
            uuid = row.get("uuid")
            if isinstance(uuid, str):
                rows[uuid] = r
    responses = {key: _claude_assistant(g) for key, g in groups.items()}
    conv = _Conversation(rows, responses)
    file_rank = {f: i for i, f in enumerate(files)}
    # Walk one chain at a time (main, then each subagent) so the path rarely jumps.
    ordered = sorted(
        groups.items(),
        key=lambda kv: (
            file_rank[kv[1][0].path],
            bool(kv[1][0].row.get("isSidechain")),
            str(kv[1][0].row.get("agentId") or ""),
            kv[1][0].lineno,
        ),
    )
    calls: list[Call] = []
    for key, group in ordered:
        first = group[0]
        best = max(enumerate(group), key=lambda ir: (_output_count(ir[1]), ir[0]))[1]
        usage, extra = _claude_usage(best)
        row, msg = first.row, first.row["message"]
        model = msg.get("model") if isinstance(msg.get("model"), str) else None
        session = str(row.get("sessionId") or first.path.stem)
        last_msg = group[-1].row["message"]
        stop = last_msg.get("stop_reason") if isinstance(last_msg.get("stop_reason"), str) else None
        history = conv.upto(row.get("parentUuid"))
        mid = msg.get("id") if isinstance(msg.get("id"), str) else None
        extra.update(
            client="claude-code",
            session_id=session,
            sidechain=any(bool(r.row.get("isSidechain")) for r in group),
            response_key=key,
            message_id=mid,
            request_id=row.get("requestId") if isinstance(row.get("requestId"), str) else None,
            timestamp=row.get("timestamp"),
            rows=len(group),
        )
        for name in ("agentId", "cwd", "version", "gitBranch"):
            if isinstance(row.get(name), str):
                extra[{"agentId": "agent_id", "gitBranch": "git_branch"}.get(name, name)] = row[name]
        calls.append(
            Call(
                task_id=session,
                index=0,
                usage=usage,
                request=Request(history, model=model, metadata={"task_id": session}) if history else None,
                response=Response(responses[key], model=model, usage=usage, finish_reason=stop, id=mid),
                model=model,
                started_at=_epoch(row.get("timestamp")),
                cost=_claude_cost(row.get("costUSD"), first.where),
                source=first.where,
                extra=extra,
            )
        )
    return renumber_by_time(calls)


def _output_count(r: _Row) -> int:
    usage = r.row["message"].get("usage")
    value = usage.get("output_tokens") if isinstance(usage, Mapping) else None
    return value if isinstance(value, int) else 0


# -- Codex CLI ---------------------------------------------------------------------------------
_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")
_Counts = tuple[int, int, int, int, int]  # the _FIELDS, then cache writes


def _codex_counts(raw: Mapping[str, Any], where: str) -> _Counts:
    a, b, c, d = (_count(raw.get(f), f, where) for f in _FIELDS)
    write = raw.get("cache_write_input_tokens", raw.get("cache_write_tokens"))
    return (a, b, c, d, _count(write, "cache_write_input_tokens", where))


def _codex_item(item: Mapping[str, Any]) -> tuple[Message | None, bool]:
    """A rollout ``response_item`` as a message, and whether the model wrote it (an output)."""
    kind = item.get("type")
    if kind == "message":
        role = item.get("role")
        text = _text(item.get("content"))
        if role == "assistant":
            return Message("assistant", text), True
        return (Message(role, text), False) if role in ("user", "developer", "system") else (None, False)
    call_id = str(item.get("call_id") or item.get("id") or "")
    if kind == "function_call":
        call = ToolCall(call_id, str(item.get("name", "")), _json(item.get("arguments", "{}")))
    elif kind == "custom_tool_call":
        call = ToolCall(call_id, str(item.get("name", "")), _json(item.get("input", "")))
    elif kind in ("local_shell_call", "web_search_call"):
        call = ToolCall(call_id, kind.removesuffix("_call"), _json(item.get("action") or {}))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        out = item.get("output")
        text = _text(out.get("content", out.get("output", "")) if isinstance(out, Mapping) else out)
        return Message("tool", text, tool_call_id=call_id or "unknown"), False
    else:  # reasoning (an output, encrypted) and anything newer
        return None, kind == "reasoning"
    return Message("assistant", None, tool_calls=(call,)), True


@dataclass
class _Event:  # one distinct token_count: a model request and what the rollout showed of it
    where: str
    timestamp: object
    total: _Counts
    last: _Counts | None
    model: str | None
    request: tuple[Message, ...]
    response: Message | None
    window: object


def _minus(a: _Counts, b: _Counts) -> _Counts:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4])


def _sums(rows: Sequence[_Counts]) -> list[int]:
    return [sum(r[i] for r in rows) for i in range(5)]


def _codex_usages(events: Sequence[_Event]) -> tuple[list[_Counts], str]:
    """Each event's call: its ``last_token_usage`` when those add up to the totals, else the totals'
    differences (a running total that restarts begins a new difference)."""
    deltas: list[_Counts] = []
    prev: _Counts | None = None
    for e in events:
        if prev is None or any(a < b for a, b in zip(e.total, prev, strict=True)):
            # A first total may carry usage from before this file (a resumed session): its own
            # last usage is the call, when it fits inside the total.
            fits = e.last is not None and all(a <= b for a, b in zip(e.last, e.total, strict=True))
            deltas.append(e.last if fits and e.last is not None else e.total)
        else:
            deltas.append(_minus(e.total, prev))
        prev = e.total
    lasts = [e.last for e in events if e.last is not None]
    if len(lasts) == len(events) and _sums(lasts) == _sums(deltas):
        return lasts, "last_token_usage"
    return deltas, "total_token_usage"


def read_codex(path: str | Path) -> list[Call]:
    """One call per model request of a Codex CLI rollout (``rollout-*.jsonl``)."""
    p = Path(path)
    meta: Mapping[str, Any] = {}
    model: str | None = None
    history: list[Message] = []
    out_start: int | None = None  # where the current request's outputs begin in ``history``
    events: list[_Event] = []
    for lineno, row in _rows(p):
        kind, payload = row.get("type"), row.get("payload")
        if kind not in _CODEX_TYPES:
            continue
        where = f"{p}:{lineno}"
        if not isinstance(payload, Mapping):
            raise TraceFormatError(f"{where}: a {kind} row needs a 'payload' object")
        if kind == "session_meta" and not meta:
            meta = payload
        elif kind == "turn_context" and isinstance(payload.get("model"), str):
            model = payload["model"]
        elif kind == "compacted":
            repl = payload.get("replacement_history")
            items = (
                [_codex_item(i)[0] for i in repl if isinstance(i, Mapping)] if isinstance(repl, list) else []
            )
            history = [m for m in items if m is not None] or [
                Message("user", str(payload.get("message", "")))
            ]
            out_start = None
        elif kind == "response_item":
            msg, is_output = _codex_item(payload)
            if not is_output and payload.get("type") == "message":
                out_start = None  # a new turn's input: outputs before it had no token count
            elif is_output and out_start is None:
                out_start = len(history)
            start = len(history) if out_start is None else out_start
            if msg is not None and is_output and len(history) > start and history[-1].role == "assistant":
                history[-1] = _merge_assistant(history[-1], msg)
            elif msg is not None:
                history.append(msg)
        elif kind == "event_msg" and payload.get("type") == "token_count":
            info = payload.get("info")
            if info is None:  # a rate-limit update before any usage
                continue
            total = info.get("total_token_usage") if isinstance(info, Mapping) else None
            if not isinstance(info, Mapping) or not isinstance(total, Mapping):
                raise TraceFormatError(f"{where}: a token_count event without 'info.total_token_usage'")
            counts = _codex_counts(total, where)
            if events and counts == events[-1].total:
                continue  # the same totals again: no new call
            last = info.get("last_token_usage")
            cut = len(history) if out_start is None else out_start
            answer: Message | None = None
            for m in history[cut:]:  # the request's outputs (tool results may sit between them)
                if m.role == "assistant":
                    answer = m if answer is None else _merge_assistant(answer, m)
            events.append(
                _Event(
                    where,
                    row.get("timestamp"),
                    counts,
                    _codex_counts(last, where) if isinstance(last, Mapping) else None,
                    model,
                    tuple(history[:cut]),
                    answer,
                    info.get("model_context_window"),
                )
            )
            out_start = None
    session = str(meta.get("id") or p.stem)
    source = meta.get("source")
    sidechain = isinstance(source, Mapping) and "subagent" in source
    usages, origin = _codex_usages(events)
    calls: list[Call] = []
    for i, (e, (inp, cached, out, reasoning, write)) in enumerate(zip(events, usages, strict=True)):
        usage = _usage(inp, out, cached, write, reasoning, e.where)
        extra: dict[str, Any] = {
            k: meta[k]
            for k in ("cwd", "cli_version", "model_provider", "originator")
            if isinstance(meta.get(k), str)
        }
        extra.update(
            client="codex", session_id=session, sidechain=sidechain, usage_from=origin, timestamp=e.timestamp
        )
        if source is not None:
            extra["session_source"] = source
        if isinstance(e.window, int):
            extra["model_context_window"] = e.window
        calls.append(
            Call(
                task_id=session,
                index=i,
                usage=usage,
                request=Request(e.request, model=e.model, metadata={"task_id": session})
                if e.request
                else None,
                response=Response(e.response, model=e.model, usage=usage) if e.response else None,
                model=e.model,
                started_at=_epoch(e.timestamp),
                source=e.where,
                extra=extra,
            )
        )
    return calls
