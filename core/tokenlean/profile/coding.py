"""Lever estimates that fit coding-agent sessions, whose prompt cache is already hot.

A Claude Code or Codex session re-sends its whole conversation on every call, and the provider's
prompt cache already serves most of it at the cache-read price: the transcripts record those reads.
Compaction then saves far less than its token count suggests (the stale tool output it masks was
being read at a tenth of the input price) and can even cost money, because changing a message
inside the cached prefix makes the provider re-write everything after it. So the estimate here is
*on top of* the realised cache: each call's recorded usage is the baseline, and the compacted call
is priced from the cache it would really find.

The compactor runs incrementally (``Compactor(incremental=True)``), one compactor session per
conversation, call by call in recorded order: a message is decided once, when it leaves the live
window, and frozen, so the compacted history stays a byte-stable prefix and each newly masked
message is one prefix change. For each call:

- the transcript holds the conversation but not the system prompt and tool schemas; they are a
  hidden prefix compaction never touches, sized per conversation as the smallest gap between a
  call's recorded input and its counted transcript, and the rest of the recorded input is the
  transcript scaled to the provider's tokenizer;
- the realised read boundary (the recorded cache reads) is mapped through the compacted messages;
  after compaction the call reads up to that boundary or up to the first message that differs
  from the previous compacted call, whichever is earlier, and everything after it is written again
  at the cache-write price (1-hour writes where the call's recorded writes were), or billed as
  uncached input where the conversation never recorded a write (providers without write prices);
- output is unchanged, and the after-cost is compared with the call's realised cost.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from tokenlean.profile.estimates import LeverEstimate, ProfileContext
from tokenlean.profile.trace import Call
from tokenlean.tokens import TokenCounter, get_counter
from tokenlean.types import Message, Usage

__all__ = [
    "CACHE_SAFE_COMPACTION",
    "CACHE_SAFE_COMPACTION_TITLE",
    "cache_safe_compactor",
    "estimate_cache_safe_compaction",
]

log = logging.getLogger("tokenlean.profile")

CACHE_SAFE_COMPACTION = "cache-safe-compaction"
CACHE_SAFE_COMPACTION_TITLE = (
    "Cache-safe compaction of stale tool output (on top of the realised prompt cache)"
)

_ZERO = Decimal(0)


def cache_safe_compactor(**options: Any) -> Any:
    """The stale-output policy, in incremental mode so each decision is made once and frozen.

    The same message-level policies as the plain compaction estimate (tool observations older than
    a few turns masked, duplicate outputs collapsed to their latest copy, no budget), because those
    are the cuts that need no tuning. No deadline: an estimate must not depend on how busy the
    profiling machine is. ``options`` override any ``Compactor`` keyword.
    """
    from tokenlean.compaction import Compactor

    settings: dict[str, Any] = {
        "ratio": None,
        "mask_observations_after": 3,
        "dedupe": True,
        "mode": "lexical",
        "store": "memory",
        "incremental": True,
        "deadline": None,
    }
    settings.update(options)
    return Compactor(**settings)


@dataclass(frozen=True)
class _MemoCounter(TokenCounter):
    """A token counter that remembers each text's count.

    A coding session re-sends the same messages on every call; counting them afresh each time
    would make the replay quadratic in tokenizer work.
    """

    _memo: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def count(self, text: str | bytes) -> int:
        key = text if isinstance(text, str) else None
        if key is not None:
            n = self._memo.get(key)
            if n is not None:
                return n
        n = TokenCounter.count(self, text)
        if key is not None:
            self._memo[key] = n
        return n

    @classmethod
    def of(cls, counter: TokenCounter) -> _MemoCounter:
        return cls(counter.encoding, counter.exact, counter.source, counter._encoder)


def _memoise_counts(compactor: Any, counter: _MemoCounter) -> None:
    """Give the profiler's own compactor the memoising counter (same counts, computed once).

    The compactor counts every message of every request it is given; the replay gives it each
    message again on every later call of the conversation.
    """
    svc = getattr(compactor, "_services", None)
    if isinstance(getattr(compactor, "_counter", None), TokenCounter) and svc is not None:
        compactor._counter = counter
        svc.counter = counter


def _chain_key(c: Call) -> str:
    """The conversation a call continues: its session, or a subagent's own chain inside it."""
    if c.extra.get("sidechain"):
        return f"{c.task_id}\x00sidechain:{c.extra.get('agent_id') or ''}"
    return c.task_id


def _first_difference(a: Sequence[Message], b: Sequence[Message]) -> int:
    """Index of the first message where ``a`` and ``b`` differ (the shorter length if none)."""
    n = min(len(a), len(b))
    for i in range(n):
        x, y = a[i], b[i]
        if x is not y and x != y:
            return i
    return n


def _map_boundary(x: float, before: Sequence[int], after: Sequence[int]) -> float:
    """Where a position ``x`` tokens into the original messages lands in the compacted ones."""
    acc_b = 0
    acc_a = 0
    for b, a in zip(before, after, strict=True):
        if acc_b + b >= x:
            return acc_a + (a * (x - acc_b) / b if b else 0.0)
        acc_b += b
        acc_a += a
    return acc_a + (x - acc_b)


def _price(ctx: ProfileContext, model: str, usage: Usage, write_1h: int) -> Decimal:
    """Cost of ``usage`` with ``write_1h`` of its cache writes at the 1-hour price, when priced."""
    write_1h = max(0, min(int(write_1h), usage.cache_write_tokens))
    value = None
    if write_1h:
        try:
            value = ctx.prices.cost(model, usage, cache_write_1h_tokens=write_1h)
        except TypeError:  # a price table without the 1-hour tier: all writes at the 5-minute price
            value = ctx.prices.cost(model, usage)
    else:
        value = ctx.prices.cost(model, usage)
    return _ZERO if value is None else value


@dataclass
class _Chain:
    """One conversation's replay state: the previous call's messages as sent and as compacted."""

    key: str
    calls: list[tuple[int, Call]]
    hidden: int = 0
    bills_writes: bool = False
    share_1h: float = 0.0
    prev_msgs: Sequence[Message] | None = None
    prev_out: Sequence[Message] | None = None


@dataclass
class _Totals:
    saved: int = 0
    affected: int = 0
    prefix_changes: int = 0
    rewritten: int = 0
    rewrite_cost: Decimal = _ZERO
    runs: int = 0
    compact_s: float = 0.0
    sampled_chains: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    measured_before: int = 0
    measured_after: int = 0


def _message_counts(counter: _MemoCounter, msgs: Sequence[Message]) -> list[int]:
    return [counter.count_message(m) for m in msgs]


def _prepare(chain: _Chain, counter: _MemoCounter) -> None:
    """The chain's hidden prefix, whether it bills cache writes, and its 1-hour write share."""
    gaps = []
    writes = 0
    writes_1h = 0
    for _, c in chain.calls:
        writes += c.usage.cache_write_tokens
        writes_1h += min(int(c.extra.get("cache_write_1h_tokens") or 0), c.usage.cache_write_tokens)
        if c.request is not None and not c.cache_hit:
            gaps.append(c.usage.input_tokens - sum(_message_counts(counter, c.request.messages)))
    # The smallest gap is the hidden prefix plus the least tokenizer drift; a transcript counted
    # above its recorded input (a negative gap) says nothing about the prefix, so it is left out.
    chain.hidden = min((g for g in gaps if g >= 0), default=0)
    chain.bills_writes = writes > 0
    chain.share_1h = writes_1h / writes if writes else 0.0


def _replay_call(
    ctx: ProfileContext,
    chain: _Chain,
    i: int,
    c: Call,
    out: Sequence[Message],
    counter: _MemoCounter,
    totals: _Totals,
) -> tuple[Usage, int]:
    """The call's usage after compaction under the cache it would find, and its 1-hour writes."""
    assert c.request is not None
    u = c.usage
    msgs = c.request.messages
    before = _message_counts(counter, msgs)
    after = _message_counts(counter, out) if len(out) == len(msgs) else []
    counted_b = sum(before)
    counted_a = sum(after) if after else sum(_message_counts(counter, out))
    totals.measured_before += counted_b
    totals.measured_after += counted_a
    hidden = min(chain.hidden, u.input_tokens)
    scale = (u.input_tokens - hidden) / counted_b if counted_b else 1.0
    saved = max(0, min(round(scale * (counted_b - counted_a)), u.input_tokens - hidden))
    inp = u.input_tokens - saved
    # The realised read boundary, carried into the compacted messages.
    read = u.cached_input_tokens
    if read > hidden and counted_b:
        x = (read - hidden) / scale
        y = _map_boundary(x, before, after) if after else x * counted_a / counted_b
        read_mapped = min(inp, round(hidden + scale * y))
    else:
        read_mapped = min(inp, read)
    # The prefix change: compaction made the request differ from what the cache holds earlier
    # than the conversation itself did.
    prev_msgs = chain.prev_msgs if chain.prev_msgs is not None else msgs
    prev_out = chain.prev_out if chain.prev_out is not None else msgs
    j_sent = _first_difference(prev_msgs, msgs)
    j_comp = _first_difference(prev_out, out)
    new_read = read_mapped
    if j_comp < j_sent:
        prefix = sum(after[:j_comp]) if after else sum(_message_counts(counter, out[:j_comp]))
        new_read = min(read_mapped, round(hidden + scale * prefix))
    chain.prev_msgs, chain.prev_out = msgs, out
    rest = inp - new_read
    uncached = min(u.uncached_input_tokens, rest) if chain.bills_writes else rest
    writes = rest - uncached
    if u.cache_write_tokens:
        share_1h = (
            min(int(c.extra.get("cache_write_1h_tokens") or 0), u.cache_write_tokens) / u.cache_write_tokens
        )
    else:
        share_1h = chain.share_1h
    write_1h = round(writes * share_1h)
    usage = replace(u, input_tokens=inp, cached_input_tokens=new_read, cache_write_tokens=writes)
    totals.saved += saved
    if new_read < read_mapped:
        model = ctx.priced_as[i]
        totals.prefix_changes += 1
        totals.rewritten += read_mapped - new_read
        rest0 = inp - read_mapped
        unc0 = min(u.uncached_input_tokens, rest0) if chain.bills_writes else rest0
        kept = replace(usage, cached_input_tokens=read_mapped, cache_write_tokens=rest0 - unc0)
        totals.rewrite_cost += _price(ctx, model, usage, write_1h) - _price(
            ctx, model, kept, round((rest0 - unc0) * share_1h)
        )
    return usage, write_1h


def _sample_every(n: int, sample: int | None) -> int:
    """Run the compactor on every call, or on every k-th one when a conversation exceeds ``sample``."""
    return 1 if sample is None or n <= sample else math.ceil(n / max(1, sample))


def _freeze_age(compactor: Any) -> int:
    """How many turns old a message is when an incremental compactor decides it (as it computes it)."""
    steps = getattr(compactor, "steps", None) or ()
    return max([0, *(int(getattr(s, "live_turns", 0) or 0) for s in steps)])


def _backdate(
    msgs: Sequence[Message],
    earlier: tuple[Sequence[Message], Sequence[Message]],
    later: tuple[Sequence[Message], Sequence[Message]],
    age: int,
) -> tuple[Message, ...]:
    """A skipped call's compacted messages, from the compacted calls before and after it.

    Each decision of the later call is dated back to the call where its message was first old
    enough to be decided, so the prefix changes fall on the calls they would fall on if every call
    were compacted (only a duplicate sent in between can be judged differently). Where the
    conversation was cut before the later call (an agent's own summary), the earlier call's
    decisions hold, so a skipped call never looks un-compacted.
    """
    from tokenlean.compaction.compactor import _turns

    turns = _turns(msgs)
    last = turns[-1] if turns else 0
    m0 = min(_first_difference(earlier[0], msgs), len(earlier[1]))
    m1 = min(_first_difference(later[0], msgs), len(later[1]))
    return tuple(
        later[1][i] if i < m1 and last - turns[i] >= age else earlier[1][i] if i < m0 else msg
        for i, msg in enumerate(msgs)
    )


def _run_chain(
    ctx: ProfileContext,
    chain: _Chain,
    compactor: Any,
    counter: _MemoCounter,
    sample: int | None,
    totals: _Totals,
    after: list[Usage],
    after_1h: list[int],
    progress: list[int],
) -> None:
    with_req = [(i, c) for i, c in chain.calls if c.request is not None and not c.cache_hit]
    every = _sample_every(len(with_req), sample)
    if every > 1:
        totals.sampled_chains += 1
    age = _freeze_age(compactor)
    session = f"cache-safe:{chain.key}"
    pending: list[tuple[int, Call]] = []
    ran: tuple[Sequence[Message], Sequence[Message]] = ((), ())

    def replay(i: int, c: Call, out: Sequence[Message]) -> None:
        usage, w1h = _replay_call(ctx, chain, i, c, out, counter, totals)
        if usage != c.usage:
            totals.affected += 1
        after[i] = usage
        after_1h[i] = w1h
        progress[0] += 1
        if progress[0] % 25 == 0:
            ctx.tick(CACHE_SAFE_COMPACTION, progress[0], progress[1])

    for pos, (i, c) in enumerate(with_req):
        assert c.request is not None
        if pos % every and pos != len(with_req) - 1:
            pending.append((i, c))
            continue
        t0 = time.perf_counter()
        result = compactor.compact(c.request, session=session)
        totals.compact_s += time.perf_counter() - t0
        totals.runs += 1
        out: Sequence[Message] = result.messages
        for k, v in getattr(result, "dropped", {}).items():
            totals.dropped[k] += int(v)
        for pi, pc in pending:
            assert pc.request is not None
            replay(pi, pc, _backdate(pc.request.messages, ran, (c.request.messages, out), age))
        pending.clear()
        ran = (c.request.messages, out)
        replay(i, c, out)
    reset = getattr(compactor, "reset", None)
    if callable(reset):
        reset(session)


def _share(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


def _cache_metrics(calls: Sequence[Call]) -> dict[str, Any]:
    """The realised cache: read and write shares of input, for the trace and each session."""
    total_in = sum(c.usage.input_tokens for c in calls)
    reads = sum(c.usage.cached_input_tokens for c in calls)
    writes = sum(c.usage.cache_write_tokens for c in calls)
    per: dict[str, list[int]] = {}
    for c in calls:
        row = per.setdefault(c.task_id, [0, 0])
        row[0] += c.usage.cached_input_tokens
        row[1] += c.usage.input_tokens
    biggest = sorted(per.items(), key=lambda kv: -kv[1][1])[:50]
    return {
        "cache_read_share": _share(reads, total_in),
        "cache_write_share": _share(writes, total_in),
        "session_cache_read_share": {k: _share(r, i) for k, (r, i) in biggest},
        "sessions": len(per),
    }


def estimate_cache_safe_compaction(
    ctx: ProfileContext, *, compactor: Any = None, sample: int | None = 2000
) -> LeverEstimate:
    """What masking stale tool output saves on top of the prompt cache the trace already used.

    ``compactor`` is the compactor you would deploy (default ``cache_safe_compactor()``); one that
    is not incremental re-decides old messages on every call and the estimate shows what that
    costs in cache re-writes. ``sample`` caps the compactor runs per conversation (``None``: every
    call): a longer one is compacted every k-th call, and each decision is dated back to the call
    where its message first became old enough, rather than interpolating costs, because one call's
    re-write must not be smeared over its neighbours. See the module docstring for the cost model.
    """
    calls = ctx.trace.calls
    est = LeverEstimate(
        lever=CACHE_SAFE_COMPACTION,
        title=CACHE_SAFE_COMPACTION_TITLE,
        action="tokenlean.compaction.Compactor(incremental=True): mask stale tool output once, keep the prefix stable",
    )
    est.metrics = _cache_metrics(calls)
    unchanged = [c.usage for c in calls]
    if not ctx.trace.has_content:
        est.applicable = False
        est.reason = "the trace has no request content: there is nothing to compact"
        return ctx.finish(est, unchanged)
    if not any(c.usage.cached_input_tokens for c in calls):
        est.applicable = False
        est.reason = "the trace records no prompt-cache reads: the plain compaction estimate applies"
        return ctx.finish(est, unchanged)
    counter = _MemoCounter.of(get_counter(getattr(compactor, "model", None)))
    if compactor is None:
        compactor = cache_safe_compactor()
        _memoise_counts(compactor, counter)
    chains: dict[str, _Chain] = {}
    for i, c in enumerate(calls):
        key = _chain_key(c)
        chain = chains.get(key)
        if chain is None:
            chain = chains[key] = _Chain(key, [])
        chain.calls.append((i, c))
    for chain in chains.values():
        chain.calls.sort(key=lambda ic: (ic[1].index, ic[0]))
        _prepare(chain, counter)
    totals = _Totals()
    after = list(unchanged)
    after_1h = [
        min(int(c.extra.get("cache_write_1h_tokens") or 0), c.usage.cache_write_tokens) for c in calls
    ]
    before_1h = list(after_1h)
    progress = [0, sum(1 for c in calls if c.request is not None and not c.cache_hit)]
    for chain in chains.values():
        _run_chain(ctx, chain, compactor, counter, sample, totals, after, after_1h, progress)
    ctx.tick(CACHE_SAFE_COMPACTION, progress[1], progress[1])
    ctx.finish(est, after)
    # Priced here, 1-hour writes included, as a change on top of each call's realised cost.
    per_task: dict[str, Decimal] = {}
    for c, base in zip(calls, ctx.baseline_costs, strict=True):
        per_task[c.task_id] = per_task.get(c.task_id, _ZERO) + base
    delta_total = _ZERO
    for i, c in enumerate(calls):
        if after[i] == c.usage:
            continue
        model = ctx.priced_as[i]
        delta = _price(ctx, model, after[i], after_1h[i]) - _price(ctx, model, c.usage, before_1h[i])
        delta_total += delta
        per_task[c.task_id] += delta
    est.cost_after = est.cost_before + delta_total
    est.task_cost_after = per_task
    est.input_tokens_saved = totals.saved
    est.calls_affected = totals.affected
    per_call_s = totals.compact_s / totals.runs if totals.runs else 0.0
    est.latency_saved_s -= per_call_s * progress[1]
    total_in = sum(u.input_tokens for u in after)
    est.metrics.update(
        {
            "cache_read_share_after": _share(sum(u.cached_input_tokens for u in after), total_in),
            "cache_write_share_after": _share(sum(u.cache_write_tokens for u in after), total_in),
            "prefix_changes": totals.prefix_changes,
            "rewritten_tokens": totals.rewritten,
            "rewrite_cost": str(totals.rewrite_cost),
            "measured_reduction": round(1 - totals.measured_after / totals.measured_before, 4)
            if totals.measured_before
            else 0.0,
            "dropped_by_policy": dict(totals.dropped),
            "conversations": len(chains),
            "calls_compacted": totals.runs,
            "sampled_conversations": totals.sampled_chains,
            "incremental": bool(getattr(compactor, "incremental", False)),
            "compactor_ms_per_call": round(per_call_s * 1000, 2),
        }
    )
    est.basis = (
        f"{type(compactor).__name__} replayed call by call over {len(chains)} conversations"
        + (
            f" ({totals.runs} of {progress[1]} calls compacted, decisions dated back to the calls in between)"
            if totals.runs < progress[1]
            else ""
        )
        + f"; each call reads its realised cache up to the first changed message and re-writes the rest "
        f"({totals.prefix_changes} prefix changes, {totals.rewritten:,} tokens re-written); "
        f"realised cache-read share {est.metrics['cache_read_share']:.0%}"
    )
    if not totals.saved:
        est.applicable = False
        est.reason = "the compactor removes nothing from these sessions (no stale or duplicate tool output)"
    return est
