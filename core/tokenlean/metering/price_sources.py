"""Price data from ``genai-prices`` (pydantic/genai-prices, MIT), read offline from its bundled data.

``genai_prices_table()`` turns the package's bundled provider data into the TOML shape that
``PriceTable.from_dict`` reads: ``{"models": {...}, "aliases": {...}, "meta": {...}}``. It never
touches the network: it reads ``genai_prices.data.providers`` (the data shipped in the wheel) and
never starts ``genai_prices.UpdatePrices``, the package's opt-in background fetcher. Even when the
host application runs that fetcher (it replaces genai-prices' process-wide snapshot), tokenlean
keeps reading the bundled data, so its prices do not change under a running meter.

Matching is exact. genai-prices matches a model reference with ``starts_with`` / ``contains`` /
regex clauses, so ``claude-sonnet-4-5-whatever`` would be priced as Claude Sonnet 4.5. Here only
the literal names those clauses spell (and the model's id) become table keys, each kept only when
genai-prices itself resolves that exact name to the same model; dated snapshots and provider
prefixes are handled by ``tokenlean.metering.prices``' own name normalisation (``normalize_model_name``). A name no source
knows stays unpriced rather than borrowing a neighbour's price.

Which provider prices a bare name: the provider genai-prices picks for it (its ``model_match``
rule: ``claude`` -> Anthropic, ``gpt-`` -> OpenAI, ``gemini`` -> Google, ...); otherwise the only
provider that lists the name, or any of them when all list the same price. A name that several
hosts list at different prices gets no bare entry, only provider-qualified ones
(``groq/llama-3.3-70b-versatile``), which also exist for every host that is not the bare name's
owner. Prices are the base tier plus the long-context tiers (``tiers``); batch / priority variants,
per-request and tool fees (web search) are not modelled. A model whose token price depends on
something tokenlean does not measure (a per-request fee, separately priced reasoning tokens) or
that has no input price gets no entry: it is unpriced, not mispriced.

This module imports nothing from tokenlean (the price table imports it lazily).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["genai_prices_table"]

# genai-prices price keys -> tokenlean ModelPrice fields.
_FIELDS = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cached_input",
    "cache_write_mtok": "cache_write",
    "cache_write_1h_mtok": "cache_write_1h",
}
# Prices of usage tokenlean never reports (other modalities, tool calls, audio time): ignoring them
# cannot misprice a token count. Any other unmapped key (requests_kcount, output_reasoning_mtok, a
# key added by a later release) makes the model unpriced rather than priced without it.
_IGNORABLE = re.compile(r"audio|image|video|document|searches|hours|mchars|kpages")


def _literals(clause: Any) -> Iterator[str]:
    """The plain strings a match clause spells (regex clauses spell none)."""
    for attr in ("equals", "starts_with", "contains", "ends_with"):
        value = getattr(clause, attr, None)
        if isinstance(value, str):
            yield value
    for attr in ("or_", "and_"):
        for sub in getattr(clause, attr, None) or ():
            yield from _literals(sub)


def _price_value(value: Any, start: int | None) -> Decimal:
    """A flat price, or the price of a tiered one for prompts above ``start`` tokens (base: None)."""
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return Decimal(value)
    price = Decimal(value.base)
    if start is not None:
        for tier in tiers:  # ascending; the highest tier at or below ``start`` applies above it
            if tier.start <= start:
                price = Decimal(tier.price)
    return price


def _entry(model_price: Any, source: str) -> dict[str, Any] | None:
    """A TOML-shaped price entry, or ``None`` when tokenlean cannot price this model's calls."""
    given = {k: v for k, v in vars(model_price).items() if not k.startswith("_") and v is not None}
    if "input_mtok" not in given:
        return None
    if any(k not in _FIELDS and not _IGNORABLE.search(k) for k in given):
        return None
    mapped = {k: v for k, v in given.items() if k in _FIELDS}
    entry: dict[str, Any] = {_FIELDS[k]: _price_value(v, None) for k, v in mapped.items()}
    entry.setdefault("output", Decimal(0))  # input-only models (embeddings): the source prices no output
    starts = sorted({t.start for v in mapped.values() for t in (getattr(v, "tiers", None) or ())})
    if starts:
        entry["tiers"] = [
            {
                "above_input_tokens": start,
                **{_FIELDS[k]: _price_value(v, start) for k, v in mapped.items()},
                **({} if "output_mtok" in mapped else {"output": Decimal(0)}),
            }
            for start in starts
        ]
    entry["source"] = source
    return entry


def _id_steps(name: str) -> Iterator[str]:
    """Shorter spellings of a model id tried as its canonical key (``-latest`` dropped, ...)."""
    yield name
    for pattern in (r"-latest$", r"-\d{4}-\d{2}-\d{2}$", r"-\d{8}$", r"-v\d+(:\d+)?$"):
        stripped = re.sub(pattern, "", name)
        if stripped != name and stripped:
            yield stripped


class _Index:
    """A provider's models, matched as genai-prices does (first match wins), without a full scan."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.models = list(provider.models)
        rule = provider.model_match  # how genai-prices picks this provider from a bare model name
        self.rule = None if rule is None else (_Tests(t) if (t := _plain_tests(rule)) is not None else rule)
        self.equals: dict[str, list[int]] = {}
        # Models with any clause other than equals, checked in order: by plain string tests when
        # the clause is an "or" of them, else (None) by genai-prices' own matcher.
        self.fuzzy: list[tuple[int, _Tests | None]] = []
        for i, model in enumerate(self.models):
            tests = _plain_tests(model.match)
            if tests is not None and all(kind == "equals" for kind, _ in tests):
                for _, text in tests:
                    self.equals.setdefault(text, []).append(i)
            else:
                self.fuzzy.append((i, None if tests is None else _Tests(tests)))

    def first(self, name: str) -> Any:
        """The model ``provider.find_model(name)`` finds among its own models, or ``None``."""
        hits = self.equals.get(name)
        limit = hits[0] if hits else len(self.models)
        for i, tests in self.fuzzy:
            if i >= limit:
                break
            if self.models[i].is_match(name) if tests is None else tests.match(name):
                return self.models[i]
        return self.models[limit] if hits else None


_KINDS = ("equals", "starts_with", "contains", "ends_with")


def _plain_tests(clause: Any) -> list[tuple[str, str]] | None:
    """A clause that is an "or" of plain string tests, as (kind, lowercased text); else ``None``."""
    for kind in _KINDS:
        value = getattr(clause, kind, None)
        if isinstance(value, str):
            return [(kind, value.lower())]
    subs = getattr(clause, "or_", None)
    if subs is None:
        return None  # regex, "and"
    tests: list[tuple[str, str]] = []
    for sub in subs:
        found = _plain_tests(sub)
        if found is None:
            return None
        tests.extend(found)
    return tests


class _Tests:
    """An "or" of plain string tests on a lowercased name, as genai-prices' clauses define them."""

    def __init__(self, tests: list[tuple[str, str]]) -> None:
        self.equals = frozenset(t for k, t in tests if k == "equals")
        self.prefixes = tuple(t for k, t in tests if k == "starts_with")
        self.suffixes = tuple(t for k, t in tests if k == "ends_with")
        self.contains = tuple(t for k, t in tests if k == "contains")

    def match(self, name: str) -> bool:
        if name in self.equals or name.startswith(self.prefixes) or name.endswith(self.suffixes):
            return True
        return any(text in name for text in self.contains)


def genai_prices_table(as_of: datetime | None = None) -> dict[str, Any] | None:
    """genai-prices' bundled prices (in force at ``as_of``, default now) in the ``PriceTable`` shape.

    ``None`` when genai-prices is not installed.
    """
    try:
        import genai_prices
        from genai_prices import data as gp_data
    except ImportError:
        return None
    version = str(genai_prices.__version__)
    when = as_of or datetime.now(UTC)
    indexes = {p.id: _Index(p) for p in gp_data.providers}

    # 1. Every usable (provider, model) and the exact names it owns within its provider.
    owned: dict[str, list[tuple[Any, Any, dict[str, Any]]]] = {}
    for index in indexes.values():
        provider = index.provider
        source = f"genai-prices {version} ({provider.id})"
        for model in index.models:
            entry = _entry(model.get_prices(when), source)
            if entry is None:
                continue
            names = {model.id.strip().lower(), *(s.strip().lower() for s in _literals(model.match))}
            for name in sorted(n for n in names if n):
                if index.first(name) is model:  # genai-prices' own first-match rule
                    owned.setdefault(name, []).append((provider, model, entry))

    # 2. Who owns each bare name.
    winners: dict[str, tuple[Any, Any, dict[str, Any]]] = {}
    for name, candidates in owned.items():
        chosen = _bare_owner(name, candidates, indexes)
        if chosen is not None:
            winners[name] = chosen
    for name in [n for n in winners if "/" in n]:
        # "anthropic/claude-3.5-sonnet" as an aggregator lists it: when the prefix names the
        # provider that owns the tail, the name normalises to that first-party price instead.
        head, _, tail = name.rpartition("/")
        head_index = indexes.get(head.rsplit("/", 1)[-1])
        tail_owner = winners.get(tail)
        if head_index is not None and tail_owner is not None and tail_owner[0] is head_index.provider:
            del winners[name]

    # 3. Keys: one canonical entry per model, its other names as aliases.
    models: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}

    def add(group: dict[int, tuple[Any, dict[str, Any], list[str]]], prefix: str) -> None:
        for model, entry, names in group.values():
            name_set = set(names)
            steps = [s for s in _id_steps(model.id.lower()) if s in name_set]
            canonical = steps[-1] if steps else min(names, key=lambda n: (len(n), n))
            models[prefix + canonical] = entry
            for name in names:
                if name != canonical:
                    aliases[prefix + name] = prefix + canonical

    bare: dict[int, tuple[Any, dict[str, Any], list[str]]] = {}
    for name, (_, model, entry) in winners.items():
        bare.setdefault(id(model), (model, entry, []))[2].append(name)
    add(bare, "")
    qualified: dict[str, dict[int, tuple[Any, dict[str, Any], list[str]]]] = {}
    for name, candidates in owned.items():
        for owner, model, entry in candidates:
            if name not in winners or winners[name][0] is not owner:
                group = qualified.setdefault(owner.id, {})
                group.setdefault(id(model), (model, entry, []))[2].append(name)
    for provider_id, group in qualified.items():
        add(group, f"{provider_id}/")
    return {
        "models": models,
        "aliases": aliases,
        "meta": {
            "currency": "USD",
            "unit": "per_million_tokens",
            "source": f"genai-prices {version}",
            "genai_prices_version": version,
            "as_of": when.date().isoformat(),
        },
    }


def _claimed(name: str, picked: _Index, indexes: dict[str, _Index]) -> Any:
    """The model genai-prices finds for ``name`` in the provider it picked (and its fallbacks)."""
    chain = [picked, *(indexes[i] for i in picked.provider.fallback_model_providers or () if i in indexes)]
    for ref in dict.fromkeys([name, _compact_date(name)]):
        for index in chain:
            model = index.first(ref)
            if model is not None:
                return model
    return None


def _compact_date(name: str) -> str:
    """genai-prices' retry spelling of a compact date (``-20251211`` -> ``-2025-12-11``), if it has one."""
    try:
        from genai_prices.types import _normalize_compact_dated_ref
    except ImportError:  # private helper: absent in another release, the retry is skipped
        return name
    return str(_normalize_compact_dated_ref(name))


def _bare_owner(
    name: str, candidates: list[tuple[Any, Any, dict[str, Any]]], indexes: dict[str, _Index]
) -> tuple[Any, Any, dict[str, Any]] | None:
    """The (provider, model, entry) that prices ``name`` with no provider given, or ``None``."""
    # The provider genai-prices itself picks from the name ("claude" -> Anthropic, ...), with its
    # fallbacks (Vertex -> Anthropic, Azure -> OpenAI): when it claims the name at all, it decides,
    # and a name it claims only through a prefix rule gets no bare entry (tokenlean's normalisation
    # handles dated snapshots) rather than another host's price.
    picked = next(
        (
            i
            for i in indexes.values()
            if i.rule is not None and (i.rule.match if isinstance(i.rule, _Tests) else i.rule.is_match)(name)
        ),
        None,
    )
    if picked is not None:
        model = _claimed(name, picked, indexes)
        if model is not None:
            return next((c for c in candidates if c[1] is model), None)
    if len(candidates) == 1:
        return candidates[0]
    first = candidates[0][2]
    if all(_same_price(first, c[2]) for c in candidates[1:]):
        # Same price everywhere: name the provider the others fall back to (Azure -> OpenAI).
        fallbacks = {f for c in candidates for f in (c[0].fallback_model_providers or ())}
        return next((c for c in candidates if c[0].id in fallbacks), candidates[0])
    return None  # listed by several hosts at different prices: only provider-qualified keys


def _same_price(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}
