"""Prompt-cache breakpoints for requests a client sends to an Anthropic upstream without any.

Why: Anthropic caches a prompt prefix only where the request carries a ``cache_control`` marker,
and most clients place none. On a route with ``layout = true``, the layout lever's planner
(``tokenlean.layout.plan_cache_markers``, which knows the minimum cacheable length per model and
where the stable prefix ends) decides where markers pay; they are then put on the Anthropic body
itself: on the last tool, the end of the system prompt, the end of the history or of the request.
A client that placed its own markers knows its traffic better: its request is left as it is.

The planner works on the OpenAI-shaped translation of the request (``anthropic.to_openai``); each
of its message positions is mapped back to the Anthropic message it came from (a user message
with tool results becomes several OpenAI messages), and the marker goes on that message's last
content block, which ends the same or a slightly longer prefix.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

#: Anthropic request body -> OpenAI chat body.
Translate = Callable[[Mapping[str, Any]], dict[str, Any]]

__all__ = ["has_cache_control", "plan_breakpoints", "with_breakpoints"]

log = logging.getLogger("tokenlean.gateway")

_EPHEMERAL = {"type": "ephemeral"}


def has_cache_control(value: Any) -> bool:
    """Whether any part of a request body already carries a ``cache_control`` marker."""
    if isinstance(value, Mapping):
        return "cache_control" in value or any(has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(has_cache_control(v) for v in value)
    return False


def _mark_last_block(content: Any) -> Any:
    """``content`` (a string or blocks) with a marker on its last block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content, "cache_control": dict(_EPHEMERAL)}] if content else content
    if isinstance(content, list) and content and isinstance(content[-1], dict):
        return [*content[:-1], {**content[-1], "cache_control": dict(_EPHEMERAL)}]
    return content


def plan_breakpoints(body: Mapping[str, Any], to_openai: Translate) -> dict[str, Any] | None:
    """``body`` with planned ``cache_control`` markers, or None when none pays (or it has its own).
    ``to_openai`` is the gateway's Anthropic -> OpenAI translation (``anthropic.to_openai``)."""
    from tokenlean.layout.markers import plan_cache_markers

    if has_cache_control(body):
        return None
    chat = to_openai({**body, "stream": False})
    plan = plan_cache_markers(chat, "anthropic", model=str(body.get("model") or "") or None)
    if not plan.breakpoints:
        return None
    # OpenAI message index -> the Anthropic message it came from (None: the system prompt)
    owner: list[int | None] = [None] if body.get("system") else []
    for index, message in enumerate(body.get("messages") or ()):
        part = to_openai({"model": body.get("model"), "max_tokens": 1, "messages": [message]})["messages"]
        owner.extend([index] * len(part))
    if len(owner) != len(chat["messages"]):  # a translation this mapping does not follow
        log.warning("tokenlean gateway: cache breakpoints not planned (message mapping mismatch)")
        return None
    out = copy.deepcopy(dict(body))
    marked: set[tuple[str, int | None]] = set()
    for bp in plan.breakpoints:
        if bp.message_index is None:
            tools = out.get("tools")
            if bp.tool_index is not None and isinstance(tools, list) and 0 <= bp.tool_index < len(tools):
                tools[bp.tool_index] = {**tools[bp.tool_index], "cache_control": dict(_EPHEMERAL)}
            continue
        k = owner[bp.message_index]
        if ("m", k) in marked:
            continue
        marked.add(("m", k))
        if k is None:
            out["system"] = _mark_last_block(out["system"])
        else:
            out["messages"][k] = {
                **out["messages"][k],
                "content": _mark_last_block(out["messages"][k]["content"]),
            }
    return out


def with_breakpoints(body: dict[str, Any], raw: bytes, to_openai: Translate) -> tuple[dict[str, Any], bytes]:
    """What to send: ``body``/``raw`` with planned markers, or as they came (also when planning
    fails: logged, the request is still sent)."""
    try:
        planned = plan_breakpoints(body, to_openai)
    except Exception:
        log.exception("tokenlean gateway: cache breakpoint planning failed; request sent as it came")
        return body, raw
    if planned is None:
        return body, raw
    return planned, json.dumps(planned).encode()
