"""A corpus of request streams with planted prefix breakers, and a scorer.

The analyser is judged on what it must find: every breaker we plant (recall) and nothing we
did not plant (precision). Streams look like real traffic: a support assistant with a long
policy prompt, tools, few-shot examples and multi-turn conversations from several users; each
stream plants a few breakers of known kind at known places, and clean streams carry values
that *look* volatile but are stable (a knowledge-cutoff date, version numbers, prices) to
catch false positives. Used by ``benchmarks/layout.py`` (which imports it from its own folder)
and by ``tests/core/layout`` (whose ``conftest.py`` loads it as ``layout_corpus``).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenlean.layout import Breaker, BreakerKind, LayoutReport
from tokenlean.layout.canonical import message_text
from tokenlean.types import Request

__all__ = ["PLANTABLE", "Planted", "PlantedStream", "Score", "planted_corpus", "planted_stream", "score"]

# Every kind but a changed tool set, which this corpus of single-deployment streams never plants.
PLANTABLE: tuple[BreakerKind, ...] = tuple(k for k in BreakerKind if k is not BreakerKind.TOOL_SET)

_POLICY = [
    "Answer in the customer's language and keep answers under 120 words.",
    "Never promise a delivery date that the order system has not confirmed.",
    "Refunds above 200 EUR need a supervisor; say so and open a ticket.",
    "Use the lookup_order tool before answering any question about an order.",
    "Do not reveal internal ticket numbers or the names of staff members.",
    "If the customer is angry, acknowledge the problem before proposing a fix.",
    "Prices include VAT; the standard shipping fee is 4.90 EUR (free above 50 EUR).",
    "Returns are accepted within 30 days for unused items in their original packaging.",
    "For damaged items ask for a photo, then offer a replacement or a refund.",
    "Our support hours are 08:00 to 20:00 on weekdays; outside them, promise a call back.",
    "Product manuals live at docs.acme.example; link the page, never paste the manual.",
    "Knowledge cutoff: 2024-06-01. API version 2.3.1 of the order service is in use.",
    "Escalate security or privacy questions to security@acme.example immediately.",
    "Gift cards cannot be refunded or exchanged for cash.",
    "When you call a tool, explain in one sentence what you are checking.",
    "Never ask for a full card number; the last four digits are enough.",
    "Loyalty members (plan 'plus') get free express shipping on every order.",
    "If an order is marked 'lost', offer a reshipment before a refund.",
    "Keep a friendly, plain tone; avoid jargon and exclamation marks.",
    "Summarise the resolution at the end of the conversation in one line.",
]

_FEW_SHOT = [
    ("Where is order 1001?", "Let me check order 1001 for you. It shipped yesterday and arrives Friday."),
    (
        "Can I return shoes I wore once?",
        "Returns need unused items, so worn shoes cannot be returned, sorry.",
    ),
    ("Do you ship to Norway?", "Yes, we ship to Norway; delivery takes 4 to 6 working days."),
    ("My parcel arrived damaged.", "I'm sorry to hear that. Could you send a photo of the damage?"),
]

_QUESTIONS = [
    "Where is my order {n}?",
    "I want to return order {n}, how does that work?",
    "Order {n} arrived broken, what now?",
    "Can I change the address of order {n}?",
    "Why was I charged twice for order {n}?",
]

_USERS = [
    ("Alice Martin", "plus", "alice@example.com"),
    ("Bogdan Nowak", "basic", "bogdan@example.org"),
    ("Chen Wei", "plus", "chen.wei@example.net"),
    ("Dana Okafor", "basic", "dana.o@example.com"),
]


def _tools() -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Look an order up by its number; returns status, items and dates.",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string", "description": "the order number"}},
                    "required": ["order_id"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "open_ticket",
                "description": "Open a support ticket for a human agent.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "summary": {"type": "string"},
                        "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                    },
                    "required": ["summary"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "refund",
                "description": "Refund an amount in EUR to the original payment method.",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                    "required": ["order_id", "amount"],
                },
            },
        },
    ]


def _shuffle_keys(obj: Any, rng: random.Random) -> Any:
    if isinstance(obj, dict):
        keys = list(obj)
        rng.shuffle(keys)
        return {k: _shuffle_keys(obj[k], rng) for k in keys}
    if isinstance(obj, list):
        return [_shuffle_keys(v, rng) for v in obj]
    return obj


@dataclass(frozen=True, slots=True)
class Planted:
    """A planted breaker: its kind, section, message index (None: tools) and the line label."""

    kind: BreakerKind
    section: str
    message_index: int | None
    label: str = ""


@dataclass(frozen=True)
class PlantedStream:
    name: str
    requests: tuple[dict[str, Any], ...]
    planted: tuple[Planted, ...]
    meta: dict[str, Any] = field(default_factory=dict)


def planted_stream(
    kinds: Sequence[BreakerKind],
    *,
    seed: int = 0,
    n_requests: int = 8,
    name: str | None = None,
    policy_lines: int = 20,
) -> PlantedStream:
    """One stream of ``n_requests`` OpenAI request bodies with the given breakers planted.

    Several users hold multi-turn conversations; the same user keeps the same conversation.
    """
    rng = random.Random(seed)
    kinds = list(dict.fromkeys(kinds))
    policy = _POLICY[:]
    rng.shuffle(policy)
    policy = policy[:policy_lines]
    t0 = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)
    few = list(_FEW_SHOT[:3])
    has_few = BreakerKind.FEW_SHOT_ORDER in kinds or rng.random() < 0.5
    planted: list[Planted] = []
    labels_used: set[BreakerKind] = set()
    # Where each system-prompt breaker goes (line positions inside the policy).
    positions = {k: rng.randrange(0, len(policy) + 1) for k in kinds}
    conversations: dict[int, list[dict[str, Any]]] = {}
    profile_json = {"tier": "gold", "locale": "en-GB", "newsletter": True, "segment": "retail"}
    requests: list[dict[str, Any]] = []
    n_users = 3 if BreakerKind.PER_USER_DATA in kinds else 1
    if BreakerKind.HISTORY_REWRITE in kinds:
        # A rewrite is visible from a conversation's third request on: keep conversations long.
        n_users = min(n_users, max(1, n_requests // 3))
    for ri in range(n_requests):
        now = t0 + timedelta(minutes=7 * ri, seconds=rng.randrange(60))
        user = ri % n_users if n_users > 1 else 0
        name_, plan, _email = _USERS[user]
        inserts: dict[int, list[str]] = {}

        def put(kind: BreakerKind, line: str) -> None:
            inserts.setdefault(positions[kind], []).append(line)  # noqa: B023 - evaluated now

        if BreakerKind.TIMESTAMP in kinds:
            fmt = seed % 3
            value = (
                now.strftime("%Y-%m-%dT%H:%M:%SZ")
                if fmt == 0
                else now.strftime("%b %d, %Y %I:%M %p UTC")
                if fmt == 1
                else str(int(now.timestamp()))
            )
            put(BreakerKind.TIMESTAMP, f"Current time: {value}")
            labels_used.add(BreakerKind.TIMESTAMP)
        if BreakerKind.DATE in kinds:
            day = t0 + timedelta(days=ri)  # the date rolls over between requests (a day's traffic)
            value = day.strftime("%Y-%m-%d") if seed % 2 == 0 else day.strftime("%A, %B %d, %Y")
            put(BreakerKind.DATE, f"Today's date: {value}")
        if BreakerKind.UUID in kinds:
            put(BreakerKind.UUID, f"Session: {uuid.UUID(int=rng.getrandbits(128), version=4)}")
        if BreakerKind.REQUEST_ID in kinds:
            style = seed % 3
            rid = "".join(rng.choice("0123456789abcdef") for _ in range(24))
            value = f"req_{rid}" if style == 0 else f"trace id: {rid[:16]}" if style == 1 else f"nonce {rid}"
            put(BreakerKind.REQUEST_ID, f"Routing: {value}")
        if BreakerKind.PER_USER_DATA in kinds:
            put(BreakerKind.PER_USER_DATA, f"Customer name: {name_}")
            put(BreakerKind.PER_USER_DATA, f"Customer plan: {plan}")
        if BreakerKind.JSON_KEY_ORDER in kinds:
            put(
                BreakerKind.JSON_KEY_ORDER,
                "Customer profile: " + json.dumps(_shuffle_keys(profile_json, rng)),
            )

        lines: list[str] = ["You are the support assistant of ACME Home, an online shop."]
        for i in range(len(policy) + 1):
            lines.extend(inserts.get(i, []))
            if i < len(policy):
                lines.append(policy[i])
        system = "\n".join(lines)

        tools = _tools()
        if BreakerKind.TOOL_ORDER in kinds:
            while True:
                rng.shuffle(tools)
                if ri == 0 or [t["function"]["name"] for t in tools] != [
                    t["function"]["name"] for t in requests[-1]["tools"]
                ]:
                    break
        if BreakerKind.TOOL_KEY_ORDER in kinds:
            k = 1
            tools = [_shuffle_keys(t, rng) if i == k else t for i, t in enumerate(tools)]
            if ri > 0:
                prev = json.dumps(requests[-1]["tools"][k])
                while json.dumps(tools[k]) == prev:
                    tools[k] = _shuffle_keys(tools[k], rng)

        msgs: list[dict[str, Any]] = [{"role": "system", "content": system}]
        if has_few:
            pairs = few[:]
            if BreakerKind.FEW_SHOT_ORDER in kinds:
                while True:
                    rng.shuffle(pairs)
                    if ri == 0 or pairs != requests[-1]["meta_pairs"]:
                        break
            for q, a in pairs:
                msgs.append({"role": "user", "content": q, "name": "example_user"})
                msgs.append({"role": "assistant", "content": a, "name": "example_assistant"})
        else:
            pairs = []
        history = conversations.setdefault(user, [])
        turn = len(history) // 2
        if BreakerKind.HISTORY_REWRITE in kinds and history:
            # The app re-renders its first answer on every turn (a counter it appends).
            history[1] = {**history[1], "content": history[1]["content"].split(" [")[0] + f" [{turn} turns]"}
        question = rng.choice(_QUESTIONS).format(n=4000 + 17 * user + turn)
        body = {
            "model": "gpt-4o",
            "messages": [*msgs, *history, {"role": "user", "content": question}],
            "tools": tools,
            "temperature": 0,
            "meta_pairs": pairs,
        }
        requests.append(body)
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": f"Let me look into order {4000 + 17 * user + turn}."})

    # What was planted where (message 0 is the system prompt).
    first_conv_msg = 1 + 2 * len(few) if has_few else 1
    for pk in kinds:
        if pk in (BreakerKind.TOOL_ORDER, BreakerKind.TOOL_KEY_ORDER):
            planted.append(Planted(pk, "tools", None))
        elif pk is BreakerKind.FEW_SHOT_ORDER:
            planted.append(Planted(pk, "few_shot", 1))
        elif pk is BreakerKind.HISTORY_REWRITE:
            planted.append(Planted(pk, "history", first_conv_msg + 1))
        elif pk is BreakerKind.PER_USER_DATA:
            planted.append(Planted(pk, "system", 0, "Customer name:"))
            planted.append(Planted(pk, "system", 0, "Customer plan:"))
        else:
            label = {
                BreakerKind.TIMESTAMP: "Current time:",
                BreakerKind.DATE: "Today's date:",
                BreakerKind.UUID: "Session:",
                BreakerKind.REQUEST_ID: "Routing:",
                BreakerKind.JSON_KEY_ORDER: "Customer profile:",
            }[pk]
            planted.append(Planted(pk, "system", 0, label))
    for body in requests:
        body.pop("meta_pairs", None)
    n_hist = sum(1 for k in kinds if k is BreakerKind.HISTORY_REWRITE)
    return PlantedStream(
        name or "+".join(str(k) for k in kinds) or "clean",
        tuple(requests),
        tuple(planted),
        {"seed": seed, "few_shot": has_few, "history_rewrites": n_hist},
    )


def planted_corpus(
    *, seed: int = 0, n_requests: int = 8, streams_per_kind: int = 2, clean: int = 3
) -> list[PlantedStream]:
    """Streams with one planted kind each, streams with several at once, and clean streams."""
    rng = random.Random(seed)
    out: list[PlantedStream] = []
    s = seed * 1000
    for kind in PLANTABLE:
        for _ in range(streams_per_kind):
            s += 1
            out.append(planted_stream([kind], seed=s, n_requests=n_requests))
    for _ in range(max(1, streams_per_kind)):
        s += 1
        combo = rng.sample(PLANTABLE, 4)
        out.append(planted_stream(combo, seed=s, n_requests=n_requests))
    for _ in range(clean):
        s += 1
        out.append(planted_stream([], seed=s, n_requests=n_requests, name="clean"))
    return out


@dataclass(frozen=True)
class Score:
    """Matches between planted and reported breakers."""

    found: tuple[tuple[Planted, Breaker], ...]
    missed: tuple[Planted, ...]
    false: tuple[Breaker, ...]

    @property
    def recall(self) -> float:
        n = len(self.found) + len(self.missed)
        return len(self.found) / n if n else 1.0

    @property
    def precision(self) -> float:
        tp = len({id(b) for _, b in self.found})
        return tp / (tp + len(self.false)) if tp + len(self.false) else 1.0


def _matches(p: Planted, b: Breaker, stream: PlantedStream) -> bool:
    if b.kind != p.kind or b.message_index != p.message_index:
        return False
    if not p.label or b.message_index is None:
        return True
    body = stream.requests[b.request_index]
    text = message_text(Request.from_openai(body).messages[b.message_index])
    line_start = text.rfind("\n", 0, b.char_offset) + 1
    return text[line_start:].startswith(p.label)


def score(stream: PlantedStream, report: LayoutReport) -> Score:
    """Which planted breakers ``report`` found, which it missed, and what it reported falsely."""
    found: list[tuple[Planted, Breaker]] = []
    missed: list[Planted] = []
    used: set[int] = set()
    for p in stream.planted:
        hit = next((b for b in report.breakers if _matches(p, b, stream)), None)
        if hit is None:
            missed.append(p)
        else:
            found.append((p, hit))
            used.add(id(hit))
    false = tuple(
        b
        for b in report.breakers
        if id(b) not in used and not any(_matches(p, b, stream) for p in stream.planted)
    )
    return Score(tuple(found), tuple(missed), false)
