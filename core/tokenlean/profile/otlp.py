"""OpenTelemetry GenAI spans (OTLP JSON) as a trace.

Teams that trace their LLM calls already hold what the profiler needs: a span per model call
carrying the GenAI semantic conventions' usage attributes, which tokenlean emits itself
(``tokenlean.metering.otel``) as do OpenLLMetry, OpenInference and vendors' SDKs. This reads the
OTLP/HTTP JSON encoding: one ``ExportTraceServiceRequest`` document (``{"resourceSpans": [...]}``)
or JSONL of them, one per line, as the OpenTelemetry Collector's file exporter writes (lines that
hold only metrics or logs are skipped). Attribute values come as ``AnyValue`` objects whose
integers are JSON strings; they are decoded before use.

One call per inference span: ``gen_ai.operation.name`` chat, text_completion or generate_content,
or no operation name but usage attributes (older instrumentations, OpenInference LLM spans). Agent
and tool spans are left out even when they carry usage: theirs sums their children's, which are
read already. A span exported twice (an exporter retry) counts once.

Where tokenlean annotated a span (``tokenlean.*``), its figures win: they are what its ledger
recorded, and a cache hit keeps its replayed usage with ``cache_hit`` set, as the ledger reader
gives it. tokenlean's separate child span, made when a foreign LLM span had already ended, is
folded into that span's call rather than counted again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenlean.errors import InputError, TraceFormatError
from tokenlean.profile.trace import Call, renumber_by_time
from tokenlean.tokens import count_messages, count_tokens
from tokenlean.types import Message, Request, Response, ToolCall, Usage

__all__ = ["is_otlp_export", "read_otlp"]

_INFERENCE_OPS = frozenset({"chat", "text_completion", "generate_content"})
_SIGNALS = ("resourceSpans", "resourceMetrics", "resourceLogs")
# (tokenlean convention, current GenAI convention, older names) for each Usage field.
_TL = "tokenlean.usage."
_GA = "gen_ai.usage."
_OI = "llm.token_count."


def is_otlp_export(obj: object) -> bool:
    """Whether ``obj`` is an OTLP JSON export document (traces, or metrics / logs beside them)."""
    return isinstance(obj, Mapping) and any(k in obj for k in _SIGNALS)


# -- decoding ----------------------------------------------------------------------------------
def _value(v: object, where: str) -> Any:
    """An OTLP ``AnyValue`` as a Python value (``intValue`` arrives as a string)."""
    if not isinstance(v, Mapping):
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError) as exc:
            raise TraceFormatError(f"{where}: intValue {v['intValue']!r} is not an integer") from exc
    if "doubleValue" in v:
        try:
            return float(v["doubleValue"])
        except (TypeError, ValueError) as exc:
            raise TraceFormatError(f"{where}: doubleValue {v['doubleValue']!r} is not a number") from exc
    if "boolValue" in v:
        return v["boolValue"] is True or v["boolValue"] == "true"
    if "arrayValue" in v:
        arr = v["arrayValue"] if isinstance(v["arrayValue"], Mapping) else {}
        return [_value(x, where) for x in arr.get("values") or ()]
    if "kvlistValue" in v:
        kv = v["kvlistValue"] if isinstance(v["kvlistValue"], Mapping) else {}
        return _attributes(kv.get("values"), where)
    return v.get("bytesValue")


def _attributes(items: object, where: str) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise TraceFormatError(f"{where}: 'attributes' must be a list of {{key, value}}")
    out: dict[str, Any] = {}
    for kv in items:
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key"), str):
            raise TraceFormatError(f"{where}: an attribute must be {{'key': ..., 'value': ...}}")
        out[kv["key"]] = _value(kv.get("value"), where)
    return out


def _list(obj: Mapping[str, Any], key: str, where: str, alt: str | None = None) -> list[Any]:
    value = obj.get(key, obj.get(alt) if alt else None)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TraceFormatError(f"{where}: '{key}' must be a list")
    return value


def _documents(path: Path) -> Iterator[tuple[str, Mapping[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"{path}: not UTF-8 text") from exc
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if whole is not None:
        docs = whole if isinstance(whole, list) else [whole]
        for i, doc in enumerate(docs):
            yield (f"{path}" if len(docs) == 1 else f"{path}[{i}]"), doc
        return
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc


# -- one span ----------------------------------------------------------------------------------
def _int(a: Mapping[str, Any], keys: Sequence[str], where: str) -> int | None:
    for k in keys:
        v = a.get(k)
        if v is None:
            continue
        if isinstance(v, str) and v.strip().isdigit():  # a count some exporters send as a string
            return int(v)
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or v < 0
            or (isinstance(v, float) and not v.is_integer())
        ):
            raise TraceFormatError(f"{where}: {k} must be a non-negative integer, got {v!r}")
        return int(v)
    return None


def _usage(a: Mapping[str, Any], where: str) -> tuple[Usage | None, dict[str, Any]]:
    """The span's usage, and notes on where it came from; ``None`` when it records none."""
    notes: dict[str, Any] = {}
    reasoning = _int(a, (_GA + "reasoning.output_tokens", _OI + "completion_details.reasoning"), where) or 0
    if (inp := _int(a, (_TL + "input_tokens",), where)) is not None:
        notes["usage_from"] = "tokenlean"
        out = _int(a, (_TL + "output_tokens",), where) or 0
        read = _int(a, (_TL + "cache_read.input_tokens",), where) or 0
        write = _int(a, (_TL + "cache_creation.input_tokens",), where) or 0
    elif (
        inp := _int(a, (_GA + "input_tokens", _GA + "prompt_tokens"), where)
    ) is not None or _GA + "output_tokens" in a:
        notes["usage_from"] = "gen_ai"
        inp = inp or 0
        out = _int(a, (_GA + "output_tokens", _GA + "completion_tokens"), where) or 0
        read = _int(a, (_GA + "cache_read.input_tokens", _GA + "cache_read_input_tokens"), where) or 0
        write = (
            _int(a, (_GA + "cache_creation.input_tokens", _GA + "cache_creation_input_tokens"), where) or 0
        )
    elif (inp := _int(a, (_OI + "prompt",), where)) is not None:
        notes["usage_from"] = "openinference"
        out = _int(a, (_OI + "completion",), where) or 0
        read = _int(a, (_OI + "prompt_details.cache_read",), where) or 0
        write = _int(a, (_OI + "prompt_details.cache_write",), where) or 0
    else:
        return None, notes
    if read + write > inp:  # an instrumentation that passed Anthropic's input_tokens through
        inp += read + write
        notes["input_tokens_excluded_cache"] = True
    try:
        return Usage(inp, out, read, write, min(reasoning, out)), notes
    except InputError as exc:
        raise TraceFormatError(f"{where}: {exc}") from exc


def _parts_message(role: object, parts: object) -> list[Message]:
    """A GenAI-convention message (``{"role", "parts": [...]}``) as tokenlean messages."""
    if role not in ("system", "developer", "user", "assistant", "tool"):
        return []
    texts: list[str] = []
    calls: list[ToolCall] = []
    out: list[Message] = []
    for p in parts if isinstance(parts, list) else ():
        if not isinstance(p, Mapping):
            continue
        kind = p.get("type")
        if kind == "tool_call":
            args = p.get("arguments", {})
            args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            calls.append(ToolCall(str(p.get("id") or ""), str(p.get("name", "")), args))
        elif kind == "tool_call_response":
            resp = p.get("response", p.get("result", ""))
            text = resp if isinstance(resp, str) else json.dumps(resp, ensure_ascii=False)
            out.append(Message("tool", text, tool_call_id=str(p.get("id") or "unknown")))
        elif kind != "reasoning" and isinstance(p.get("content"), str):
            texts.append(p["content"])
    if role == "tool":
        return out + ([Message("tool", "\n".join(texts), tool_call_id="unknown")] if texts else [])
    if texts or calls:
        content = "\n".join(texts) if texts else None
        out.append(Message(str(role), content, tool_calls=tuple(calls) if role == "assistant" else ()))
    return out


def _json_attr(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def _content(a: Mapping[str, Any]) -> tuple[list[Message] | None, Message | None]:
    """The request messages and the answer the span recorded, when content capture was on."""
    msgs: list[Message] | None = None
    answer: Message | None = None
    inputs = _json_attr(a.get("gen_ai.input.messages"))
    if isinstance(inputs, list):
        msgs = []
        system = _json_attr(a.get("gen_ai.system_instructions"))
        if isinstance(system, list):
            msgs += _parts_message("system", system)
        for m in inputs:
            if isinstance(m, Mapping):
                msgs += _parts_message(m.get("role"), m.get("parts"))
    elif isinstance(a.get("gen_ai.prompt.0.role"), str):  # OpenLLMetry's indexed attributes
        msgs = []
        i = 0
        while isinstance(role := a.get(f"gen_ai.prompt.{i}.role"), str):
            content = a.get(f"gen_ai.prompt.{i}.content")
            if role in ("system", "developer", "user", "assistant"):
                msgs.append(Message(role, content if isinstance(content, str) else ""))
            i += 1
    outputs = _json_attr(a.get("gen_ai.output.messages"))
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], Mapping):
        got = _parts_message("assistant", outputs[0].get("parts"))
        answer = got[-1] if got else None
    elif isinstance(a.get("gen_ai.completion.0.content"), str):
        answer = Message("assistant", a["gen_ai.completion.0.content"])
    return msgs, answer


def _seconds(nanos: object) -> float | None:
    if isinstance(nanos, bool) or not isinstance(nanos, (int, str)):
        return None
    try:
        n = int(nanos)
    except ValueError:
        return None
    return n / 1e9 if n > 0 else None


def _call(span: Mapping[str, Any], a: Mapping[str, Any], resource: Mapping[str, Any], where: str) -> Call:
    usage, notes = _usage(a, where)
    msgs, answer = _content(a)
    model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model") or a.get("llm.model_name")
    model = str(model) if model else None
    counted = usage is None
    if usage is None:  # an inference span without usage: count what it recorded
        inp = count_messages(msgs, model) if msgs else 0
        usage = Usage(inp, count_tokens(answer.text, model) if answer is not None else 0)
    trace_id = str(span.get("traceId") or "")
    task = a.get("tokenlean.task.id") or a.get("gen_ai.conversation.id") or a.get("session.id") or trace_id
    task = str(task or where)
    started, ended = _seconds(span.get("startTimeUnixNano")), _seconds(span.get("endTimeUnixNano"))
    ttfc = a.get("gen_ai.response.time_to_first_chunk")
    first = started + float(ttfc) if started is not None and isinstance(ttfc, (int, float)) else None
    cost = a.get("tokenlean.cost")
    endpoint = a.get("tokenlean.endpoint") or a.get("server.address")
    if endpoint and not a.get("tokenlean.endpoint") and a.get("server.port") is not None:
        endpoint = f"{endpoint}:{a['server.port']}"
    finish = a.get("gen_ai.response.finish_reasons")
    extra: dict[str, Any] = {
        "session_id": task,
        "sidechain": False,
        "trace_id": trace_id,
        "span_id": str(span.get("spanId") or ""),
        "parent_span_id": str(span.get("parentSpanId") or ""),
        "span_name": str(span.get("name") or ""),
        **notes,
    }
    for key, name in (
        ("operation", "gen_ai.operation.name"),
        ("provider", "gen_ai.provider.name"),
        ("service_name", "service.name"),
    ):
        value = a.get(name) or (a.get("gen_ai.system") if key == "provider" else resource.get(name))
        if value is not None:
            extra[key] = value
    return Call(
        task_id=task,
        index=0,
        usage=usage,
        request=Request(tuple(msgs), model=model, metadata={"task_id": task}) if msgs else None,
        response=Response(
            answer,
            model=model,
            usage=None if counted else usage,
            finish_reason=str(finish[0]) if isinstance(finish, list) and finish else None,
            id=str(a["gen_ai.response.id"]) if a.get("gen_ai.response.id") else None,
        )
        if answer is not None
        else None,
        model=model,
        endpoint=str(endpoint) if endpoint else None,
        started_at=started,
        first_token_at=first,
        ended_at=ended,
        cache_hit=a.get("tokenlean.cache.hit") is True,
        cost=Decimal(str(cost)) if isinstance(cost, (int, float)) and math.isfinite(cost) else None,
        usage_counted=counted,
        source=f"{where} span {extra['span_id'] or '?'}",
        extra=extra,
    )


def _is_tokenlean_child(span: Mapping[str, Any], a: Mapping[str, Any]) -> bool:
    """tokenlean's own span under a foreign LLM span that had ended before tokenlean recorded."""
    return (
        span.get("name") == "tokenlean"
        and a.get("tokenlean.source") == "tokenlean"
        and "gen_ai.operation.name" not in a
    )


def _is_inference(a: Mapping[str, Any]) -> bool:
    op = a.get("gen_ai.operation.name")
    if op is not None:
        return op in _INFERENCE_OPS
    return a.get("openinference.span.kind") == "LLM" or any(
        k.startswith((_GA, _TL)) or k == _OI + "prompt" for k in a
    )


# -- the file ----------------------------------------------------------------------------------
def read_otlp(path: str | Path) -> list[Call]:
    """One call per GenAI inference span of an OTLP JSON export (or a JSONL file of exports)."""
    p = Path(path)
    spans: list[tuple[Mapping[str, Any], dict[str, Any], Mapping[str, Any], str]] = []
    seen: set[tuple[str, str]] = set()
    for where, doc in _documents(p):
        if not is_otlp_export(doc):
            raise TraceFormatError(f"{where}: not an OTLP JSON export (no 'resourceSpans')")
        for i, rs in enumerate(_list(doc, "resourceSpans", where)):
            here = f"{where} resourceSpans[{i}]"
            if not isinstance(rs, Mapping):
                raise TraceFormatError(f"{here}: must be an object")
            res = rs.get("resource")
            resource = _attributes(res.get("attributes"), here) if isinstance(res, Mapping) else {}
            for ss in _list(rs, "scopeSpans", here, "instrumentationLibrarySpans"):
                if not isinstance(ss, Mapping):
                    raise TraceFormatError(f"{here}: a scopeSpans entry must be an object")
                for span in _list(ss, "spans", here):
                    if not isinstance(span, Mapping):
                        raise TraceFormatError(f"{here}: a span must be an object")
                    ident = (str(span.get("traceId") or ""), str(span.get("spanId") or ""))
                    if ident[1]:
                        if ident in seen:
                            continue
                        seen.add(ident)
                    spans.append((span, _attributes(span.get("attributes"), here), resource, here))
    children: dict[tuple[str, str], dict[str, Any]] = {}
    for span, a, _, _ in spans:
        if _is_tokenlean_child(span, a):
            children[(str(span.get("traceId") or ""), str(span.get("parentSpanId") or ""))] = a
    by_id = {(str(s.get("traceId") or ""), str(s.get("spanId") or "")): a for s, a, _, _ in spans}
    calls: list[Call] = []
    for span, a, res_attrs, where in spans:
        ident = (str(span.get("traceId") or ""), str(span.get("spanId") or ""))
        if _is_tokenlean_child(span, a):
            parent = (ident[0], str(span.get("parentSpanId") or ""))
            if parent in by_id and _is_inference(by_id[parent]):
                continue  # folded into its parent's call below
            merged = {**by_id.get(parent, {}), **a}
            calls.append(_call(span, merged, res_attrs, where))
        elif _is_inference(a):
            child = children.get(ident)
            calls.append(_call(span, {**a, **child} if child else a, res_attrs, where))
    return renumber_by_time(calls)
