"""What a call costs: per-model list prices, user overrides, and self-hosted GPU time.

Prices are ``Decimal`` per million tokens, never floats: a ledger sums thousands of tiny
amounts and must match an invoice to the cent. ``PriceTable.cost`` never raises for a model it
does not know; it returns ``None`` (unpriced) and logs the model once, because metering must not
break the user's chain. ``PriceTable.price`` is the strict lookup and raises
``UnknownModelError`` for callers that want to fail loudly (the CLI, configuration checks).

Model names arrive in many spellings: ``gpt-4o-2024-08-06``, ``openai/gpt-4o``,
``models/gemini-2.5-flash-001``, ``claude-3-5-sonnet@20240620``,
``us.anthropic.claude-sonnet-4-5-20250929-v1:0``. ``normalize_model_name`` strips provider
prefixes and snapshot suffixes step by step and the table tries each step, so one entry per
model family member covers its dated snapshots without a prefix match that could price
``gpt-4o-audio`` as ``gpt-4o`` by accident.

Self-hosted endpoints have no per-token list price; what they cost is GPU time. ``ModelPrice.
self_hosted`` converts a GPU-hour price into per-token prices using *measured* throughput
(tokens/s at your serving load, for example from ``Ledger.throughput``).

Where prices come from: ``PriceTable.default()`` is the bundled data of ``genai-prices`` (read
offline, see ``tokenlean.metering.price_sources``) with tokenlean's override table
(``prices.toml``: only gaps and corrections, each with its reason) layered on top; without
genai-prices it is the pinned table plus the same overrides. Each ``ModelPrice`` carries its
``source`` ("genai-prices 0.2.5 (anthropic)", "tokenlean overrides", a user file's path) so a
report can say what priced each model. ``PriceTable.pinned()`` is a frozen table shipped with
tokenlean (``prices_pinned.toml``, the list prices of 2025-11) for figures that must stay
comparable across releases (the benchmarks that report money).
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import threading
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tokenlean.errors import PricingError, UnknownModelError
from tokenlean.types import Usage

__all__ = ["ModelPrice", "PriceTable", "normalize_model_name"]

log = logging.getLogger("tokenlean.metering.prices")

_MILLION = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)

# Suffixes that name a snapshot of the same model, stripped one at a time from the end.
_SNAPSHOT_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-2024-08-06
    re.compile(r"-\d{8}$"),  # claude-3-5-sonnet-20241022
    re.compile(r"-v\d+(:\d+)?$"),  # bedrock -v1:0, vertex -v2
    re.compile(r":\d+$"),
    re.compile(r"-latest$"),
    re.compile(r"-\d{3}$"),  # gemini-2.0-flash-001
    re.compile(r"-preview(-\d{2}-\d{2,4})?$"),  # gemini-2.5-flash-preview-05-20
    re.compile(r"-exp(-\d+)?$"),
)


def _name_steps(model: str) -> Iterator[str]:
    """The successively normalised spellings of ``model`` (most specific first)."""
    name = model.strip().lower()
    yield name
    while "/" in name:  # openai/gpt-4o, models/gemini-2.5-pro, openrouter/anthropic/claude-...
        name = name.split("/", 1)[1]  # one provider segment at a time: anthropic/claude-..., claude-...
        yield name
    if "@" in name:  # vertex: claude-3-5-sonnet@20240620
        name = name.split("@", 1)[0]
        yield name
    prefix = re.match(r"^(?:[a-z]{2}\.)?(?:anthropic|meta|amazon|google)\.", name)  # bedrock
    if prefix:
        name = name[prefix.end() :]
        yield name
    changed = True
    while changed:
        changed = False
        for pattern in _SNAPSHOT_SUFFIXES:
            stripped = pattern.sub("", name)
            if stripped != name and stripped:
                name = stripped
                changed = True
                yield name
                break


def normalize_model_name(model: str) -> str:
    """The base name a dated or prefixed model name reduces to (``gpt-4o-2024-08-06`` -> ``gpt-4o``)."""
    last = model
    for last in _name_steps(model):  # noqa: B007 - we want the final step
        pass
    return last


def _decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool):
        raise PricingError(f"{what} must be a number, got {value!r}")
    try:
        dec = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError) as exc:
        raise PricingError(f"{what} must be a number, got {value!r}") from exc
    if not dec.is_finite() or dec < 0:
        raise PricingError(f"{what} must be a finite, non-negative number, got {value!r}")
    return dec


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens for one model.

    ``cached_input`` is the prompt-cache *read* price and ``cache_write`` the price of tokens
    written to the cache (Anthropic's 5-minute cache); both default to ``input`` (providers that do
    not discount or surcharge). ``cache_write_1h`` prices writes to Anthropic's 1-hour cache and
    defaults to ``cache_write``; ``Usage`` does not say which cache a write went to, so pass the
    1-hour share to ``cost(usage, cache_write_1h_tokens=...)``. ``tiers`` are long-context prices:
    ``(start, price)`` pairs, where a call whose ``input_tokens`` exceed ``start`` is priced
    entirely at ``price`` (the providers' cliff rule). ``gpu_hour`` / ``tokens_per_s`` are kept
    when the price was derived from GPU time, and ``source`` names where the numbers came from.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    gpu_hour: Decimal | None = None
    tokens_per_s: float | None = None
    cache_write_1h: Decimal | None = None
    tiers: tuple[tuple[int, ModelPrice], ...] = ()
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", _decimal(self.input, "input price"))
        object.__setattr__(self, "output", _decimal(self.output, "output price"))
        cached = (
            self.input if self.cached_input is None else _decimal(self.cached_input, "cached_input price")
        )
        write = self.input if self.cache_write is None else _decimal(self.cache_write, "cache_write price")
        write_1h = (
            write if self.cache_write_1h is None else _decimal(self.cache_write_1h, "cache_write_1h price")
        )
        object.__setattr__(self, "cached_input", cached)
        object.__setattr__(self, "cache_write", write)
        object.__setattr__(self, "cache_write_1h", write_1h)
        if self.gpu_hour is not None:
            object.__setattr__(self, "gpu_hour", _decimal(self.gpu_hour, "gpu_hour"))
        if self.tiers:
            tiers = []
            for start, tier in self.tiers:
                if type(start) is not int or start < 0:
                    raise PricingError(f"a tier starts at a non-negative token count, got {start!r}")
                if not isinstance(tier, ModelPrice) or tier.tiers:
                    raise PricingError("a tier's price must be a ModelPrice without tiers of its own")
                tiers.append((start, tier))
            object.__setattr__(self, "tiers", tuple(sorted(tiers, key=lambda t: t[0])))

    @classmethod
    def self_hosted(
        cls,
        gpu_hour: Decimal | float | str,
        tokens_per_s: float,
        *,
        prefill_tokens_per_s: float | None = None,
    ) -> ModelPrice:
        """Per-token prices of a self-hosted model from what its GPU costs per hour.

        ``tokens_per_s`` is the measured aggregate *output* throughput of the endpoint at its
        serving load (with batching, far above one stream's speed). Prompt tokens are charged at
        ``prefill_tokens_per_s`` when given; without it prefill is treated as free, which is close
        for short prompts and an underestimate for long ones (measure it if prompts are long).
        """
        hourly = _decimal(gpu_hour, "gpu_hour")
        if not tokens_per_s or tokens_per_s <= 0:
            raise PricingError(f"tokens_per_s must be positive, got {tokens_per_s!r}")
        per_token_out = hourly / _SECONDS_PER_HOUR / Decimal(str(tokens_per_s))
        if prefill_tokens_per_s is not None and prefill_tokens_per_s <= 0:
            raise PricingError(f"prefill_tokens_per_s must be positive, got {prefill_tokens_per_s!r}")
        per_token_in = (
            hourly / _SECONDS_PER_HOUR / Decimal(str(prefill_tokens_per_s))
            if prefill_tokens_per_s
            else Decimal(0)
        )
        return cls(
            input=per_token_in * _MILLION,
            output=per_token_out * _MILLION,
            gpu_hour=hourly,
            tokens_per_s=float(tokens_per_s),
            source=f"self-hosted: {hourly} USD per GPU-hour at {float(tokens_per_s):g} output tokens/s",
        )

    def for_prompt(self, input_tokens: int) -> ModelPrice:
        """The prices that apply to a call with ``input_tokens`` prompt tokens (its long-context tier)."""
        chosen = self
        for start, tier in self.tiers:
            if input_tokens > start:
                chosen = tier
        return chosen

    def cost(self, usage: Usage, *, cache_write_1h_tokens: int = 0) -> Decimal:
        """Exact cost of ``usage``: uncached, cached and cache-write input priced separately.

        ``cache_write_1h_tokens`` is the part of ``usage.cache_write_tokens`` written to the
        1-hour cache (priced at ``cache_write_1h``); the rest is priced at ``cache_write``.
        """
        if self.tiers and usage.input_tokens > self.tiers[0][0]:
            return self.for_prompt(usage.input_tokens).cost(
                usage, cache_write_1h_tokens=cache_write_1h_tokens
            )
        assert self.cached_input is not None and self.cache_write is not None  # set in __post_init__
        writes = usage.cache_write_tokens
        total = (
            self.input * usage.uncached_input_tokens
            + self.cached_input * usage.cached_input_tokens
            + self.output * usage.output_tokens
        )
        if cache_write_1h_tokens:
            if type(cache_write_1h_tokens) is not int or not 0 < cache_write_1h_tokens <= writes:
                raise PricingError(
                    f"cache_write_1h_tokens must be an int between 0 and the call's {writes} "
                    f"cache-write tokens, got {cache_write_1h_tokens!r}"
                )
            assert self.cache_write_1h is not None
            writes -= cache_write_1h_tokens
            total += self.cache_write_1h * cache_write_1h_tokens
        return (total + self.cache_write * writes) / _MILLION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input": str(self.input),
            "cached_input": str(self.cached_input),
            "cache_write": str(self.cache_write),
            "cache_write_1h": str(self.cache_write_1h),
            "output": str(self.output),
        }
        if self.gpu_hour is not None:
            out["gpu_hour"] = str(self.gpu_hour)
        if self.tokens_per_s is not None:
            out["tokens_per_s"] = self.tokens_per_s
        if self.tiers:
            out["tiers"] = [
                {"above_input_tokens": start, **{k: v for k, v in t.to_dict().items() if k != "source"}}
                for start, t in self.tiers
            ]
        if self.source is not None:
            out["source"] = self.source
        return out


_PRICE_KEYS = ("input", "output", "cached_input", "cache_write", "cache_write_1h")
_ENTRY_KEYS = {*_PRICE_KEYS, "gpu_hour", "tokens_per_s", "prefill_tokens_per_s", "tiers", "source"}


def _parse_tiers(name: str, data: object) -> tuple[tuple[int, ModelPrice], ...]:
    if not isinstance(data, list):
        raise PricingError(f"tiers of {name!r} must be a list of tables")
    tiers = []
    for tier in data:
        if not isinstance(tier, Mapping):
            raise PricingError(f"tiers of {name!r} must be a list of tables")
        unknown = set(tier) - {*_PRICE_KEYS, "above_input_tokens"}
        missing = {"above_input_tokens", "input", "output"} - set(tier)
        if unknown or missing:
            raise PricingError(
                f"a tier of {name!r} has unknown keys {sorted(unknown)} / lacks {sorted(missing)}"
            )
        start = tier["above_input_tokens"]
        if type(start) is not int or start < 0:
            raise PricingError(f"a tier of {name!r} needs a non-negative integer above_input_tokens")
        tiers.append((start, ModelPrice(**{k: tier[k] for k in _PRICE_KEYS if k in tier})))
    return tuple(tiers)


def _parse_entry(name: str, data: object, source: str | None = None) -> ModelPrice:
    if not isinstance(data, Mapping):
        raise PricingError(f"price entry for {name!r} must be a table")
    unknown = set(data) - _ENTRY_KEYS
    if unknown:
        raise PricingError(f"price entry for {name!r} has unknown keys {sorted(unknown)}")
    if "source" in data:
        if not isinstance(data["source"], str):
            raise PricingError(f"source of {name!r} must be a string")
        source = data["source"]
    if "gpu_hour" in data and "input" not in data:
        if "tokens_per_s" not in data:
            raise PricingError(f"self-hosted entry {name!r} needs tokens_per_s next to gpu_hour")
        price = ModelPrice.self_hosted(
            data["gpu_hour"],
            float(data["tokens_per_s"]),
            prefill_tokens_per_s=(
                float(data["prefill_tokens_per_s"]) if "prefill_tokens_per_s" in data else None
            ),
        )
        return price if source is None else replace(price, source=f"{source}: {price.source}")
    missing = {"input", "output"} - set(data)
    if missing:
        raise PricingError(f"price entry for {name!r} lacks {sorted(missing)}")
    try:
        return ModelPrice(
            **{k: data[k] for k in _PRICE_KEYS if k in data},
            tiers=_parse_tiers(name, data["tiers"]) if "tiers" in data else (),
            source=source,
        )
    except PricingError as exc:
        raise PricingError(f"price entry for {name!r}: {exc}") from exc


def _parse_patch(name: str, data: object, source: str) -> dict[str, Any]:
    """A ``[patches]`` entry: some price fields of an entry of the table underneath, with their source."""
    if not isinstance(data, Mapping) or not data:
        raise PricingError(f"patch for {name!r} must be a non-empty table")
    unknown = set(data) - set(_PRICE_KEYS)
    if unknown:
        raise PricingError(f"patch for {name!r} has unknown keys {sorted(unknown)}")
    return {**{k: _decimal(v, f"{k} price of {name!r}") for k, v in data.items()}, "source": source}


@dataclass(frozen=True)
class PriceTable:
    """An immutable mapping from model name to ``ModelPrice``, with aliases.

    Build one with ``PriceTable.default()`` (genai-prices' list prices plus tokenlean's overrides),
    ``PriceTable.pinned()`` (a frozen table for comparable figures), ``from_toml(path)``,
    ``from_dict``, and combine with ``with_overrides`` / ``with_price`` (each returns a new table;
    a shared table is never mutated under a running meter). ``patches`` (a TOML ``[patches]``
    table) set single fields of the entries of the table an override is laid over, for example a
    price the source lacks.
    """

    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    patches: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _resolved: dict[str, str | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", {k.strip().lower(): v for k, v in self.prices.items()})
        object.__setattr__(
            self, "aliases", {k.strip().lower(): v.strip().lower() for k, v in self.aliases.items()}
        )
        object.__setattr__(self, "patches", {k.strip().lower(): v for k, v in self.patches.items()})

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> PriceTable:
        """From the TOML shape: ``{"models": {...}, "aliases": {...}, "patches": {...}, "meta": {...}}``.

        Each entry's ``source`` is its own ``source`` key, else ``meta.source``, else ``source``.
        """
        if not isinstance(data, Mapping):
            raise PricingError("a price table must be a mapping")
        models = data.get("models", {})
        aliases = data.get("aliases", {})
        patches = data.get("patches", {})
        meta = data.get("meta", {})
        if not all(isinstance(x, Mapping) for x in (models, aliases, patches, meta)):
            raise PricingError("'models', 'aliases', 'patches' and 'meta' must be tables")
        unknown = set(data) - {"models", "aliases", "patches", "meta"}
        if unknown:
            raise PricingError(f"unknown top-level keys in price table: {sorted(unknown)}")
        src = str(meta.get("source") or source or "custom prices")
        return cls(
            prices={str(k): _parse_entry(str(k), v, src) for k, v in models.items()},
            aliases={str(k): str(v) for k, v in aliases.items()},
            meta=dict(meta),
            patches={str(k): _parse_patch(str(k), v, src) for k, v in patches.items()},
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> PriceTable:
        """Read a TOML price file; ``PricingError`` names the file on any problem.

        Its entries' source is the file's ``meta.source`` when set, else the file's path.
        """
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise PricingError(f"cannot read price file {path}: {exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PricingError(f"price file {path} is not valid TOML: {exc}") from exc
        try:
            return cls.from_dict(data, source=str(path))
        except PricingError as exc:
            raise PricingError(f"{path}: {exc}") from exc

    @classmethod
    def default(cls) -> PriceTable:
        """genai-prices' bundled list prices with tokenlean's overrides (``prices.toml``) on top.

        Without genai-prices (or with data this version cannot read) it is ``pinned()`` with the
        same overrides, and a log line says so. Built once per process, offline.
        """
        return _shipped("default")

    @classmethod
    def pinned(cls) -> PriceTable:
        """The frozen table shipped as ``prices_pinned.toml`` (list prices of 2025-11, never updated).

        For figures that must stay comparable across tokenlean releases (benchmarks that report
        money); metering real traffic should use ``default()``.
        """
        return _shipped("pinned")

    def with_overrides(self, other: PriceTable | Mapping[str, Any] | str | Path) -> PriceTable:
        """A new table: ``other``'s entries (a table, a TOML-shaped dict or a TOML path) win.

        An override names a model: when its name is an alias here, the entry the alias points to
        (every spelling of that model) takes the override too. ``other``'s patches then set single
        fields of the entries they name (by the same lookup as ``price``); a patch for a model
        this table does not know is skipped.
        """
        if isinstance(other, (str, Path)):
            other = PriceTable.from_toml(other)
        elif not isinstance(other, PriceTable):
            other = PriceTable.from_dict(other, source="overrides")
        prices = dict(self.prices)
        for key, price in other.prices.items():
            prices[key] = price
            target = self.aliases.get(key)
            if target is not None and target in prices and target not in other.prices:
                prices[target] = price
        merged = PriceTable(
            prices=prices,
            aliases={**self.aliases, **other.aliases},
            meta={**self.meta, **other.meta},
            patches={**self.patches, **other.patches},
        )
        for name, patch in other.patches.items():
            found = merged._resolve_slow(name)
            if found is None:
                log.debug("price patch for %r skipped: no such model in the table underneath", name)
                continue
            base = prices[found]
            fields = {k: v for k, v in patch.items() if k != "source" and getattr(base, k) != v}
            if fields:  # a patch equal to what the table already says leaves the entry (and its source) alone
                changed = ", ".join(sorted(fields))
                source = f"{base.source or 'unknown'}; {patch['source']} ({changed})"
                prices[found] = replace(base, **fields, source=source)
        return merged if not other.patches else replace(merged, prices=prices)

    def with_price(self, model: str, price: ModelPrice) -> PriceTable:
        """A new table with one entry added or replaced (e.g. a self-hosted model)."""
        return PriceTable(
            prices={**self.prices, model: price}, aliases=self.aliases, meta=self.meta, patches=self.patches
        )

    # -- lookup --------------------------------------------------------------------------------
    def resolve(self, model: str) -> str | None:
        """The table key that prices ``model``, or ``None``."""
        if model in self.prices:  # the common case, checked before any string work
            return model
        if model in self._resolved:
            return self._resolved[model]
        key = self._resolve_slow(model)
        if len(self._resolved) < 4096:  # bounded: model names come from outside
            self._resolved[model] = key
        return key

    def _resolve_slow(self, model: str) -> str | None:
        for step in _name_steps(model):
            if step in self.prices:
                return step
            target = self.aliases.get(step)
            if target is not None and target in self.prices:
                return target
        return None

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.resolve(model) is not None

    def __len__(self) -> int:
        return len(self.prices)

    def models(self) -> list[str]:
        return sorted(self.prices)

    def price(self, model: str) -> ModelPrice:
        """The price of ``model``; ``UnknownModelError`` if neither it nor a normalised form is known."""
        key = self.resolve(model) if isinstance(model, str) else None
        if key is None:
            raise UnknownModelError(
                f"no price for model {model!r} (normalised: {normalize_model_name(str(model))!r}); "
                "add it with PriceTable.with_price() or a TOML override"
            )
        return self.prices[key]

    def source_of(self, model: str) -> str | None:
        """What priced ``model`` (e.g. ``"genai-prices 0.2.5 (openai)"``), or ``None`` if unpriced."""
        key = self.resolve(model) if isinstance(model, str) else None
        return None if key is None else (self.prices[key].source or "unknown")

    def cost(self, model: str, usage: Usage, *, cache_write_1h_tokens: int = 0) -> Decimal | None:
        """Cost of ``usage`` on ``model`` in USD, or ``None`` if the model has no price.

        Never raises for an unknown model: it is logged once per table and name, and the record
        is kept as *unpriced* rather than free (never priced as another model).
        ``cache_write_1h_tokens`` is as in ``ModelPrice.cost``.
        """
        key = self.resolve(model) if isinstance(model, str) else None
        if key is None:
            with self._lock:
                first = model not in self._warned
                self._warned.add(str(model))
            if first:
                log.warning("no price for model %r: its calls are recorded as unpriced (cost=None)", model)
            return None
        if cache_write_1h_tokens:
            return self.prices[key].cost(usage, cache_write_1h_tokens=cache_write_1h_tokens)
        return self.prices[key].cost(usage)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "meta": dict(self.meta),
            "models": {k: v.to_dict() for k, v in sorted(self.prices.items())},
            "aliases": dict(sorted(self.aliases.items())),
        }
        if self.patches:
            out["patches"] = {k: {f: str(v) for f, v in p.items()} for k, p in sorted(self.patches.items())}
        return out


_SHIPPED: dict[str, PriceTable] = {}
_SHIPPED_LOCK = threading.Lock()


def _read_shipped(name: str) -> PriceTable:
    text = importlib.resources.files("tokenlean.metering").joinpath(name).read_text("utf-8")
    try:
        return PriceTable.from_dict(tomllib.loads(text), source=f"tokenlean {name}")
    except PricingError as exc:  # pragma: no cover - the shipped files are tested
        raise PricingError(f"shipped {name}: {exc}") from exc


def _build_default() -> PriceTable:
    from tokenlean.metering.price_sources import genai_prices_table

    overrides = _read_shipped("prices.toml")
    try:
        data = genai_prices_table()
        base = None if data is None else PriceTable.from_dict(data)
    except Exception as exc:  # a genai-prices release whose data this reader does not understand
        log.warning(
            "genai-prices data could not be read (%s: %s); using tokenlean's pinned prices",
            type(exc).__name__,
            exc,
        )
        base = None
    else:
        if base is None:
            log.info("genai-prices is not installed; using tokenlean's pinned prices (prices_pinned.toml)")
    if base is None:
        base = _shipped("pinned")
    merged = base.with_overrides(overrides)
    return replace(merged, meta={**base.meta, "overrides": overrides.meta.get("source", "prices.toml")})


def _shipped(kind: str) -> PriceTable:
    with _SHIPPED_LOCK:
        table = _SHIPPED.get(kind)
    if table is None:
        # Built outside the lock: "default" reads "pinned" when genai-prices is missing.
        table = _build_default() if kind == "default" else _read_shipped("prices_pinned.toml")
        with _SHIPPED_LOCK:
            table = _SHIPPED.setdefault(kind, table)
    # A fresh table object shares the parsed entries but not the "warned" set.
    return replace(table)
