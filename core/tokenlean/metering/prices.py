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
    if "/" in name:  # openai/gpt-4o, models/gemini-2.5-pro, openrouter/anthropic/claude-...
        name = name.rsplit("/", 1)[1]
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
    written to the cache; both default to ``input`` (providers that do not discount or surcharge).
    ``gpu_hour`` / ``tokens_per_s`` are kept when the price was derived from GPU time, so a
    report can say where the number came from.
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    gpu_hour: Decimal | None = None
    tokens_per_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", _decimal(self.input, "input price"))
        object.__setattr__(self, "output", _decimal(self.output, "output price"))
        cached = (
            self.input if self.cached_input is None else _decimal(self.cached_input, "cached_input price")
        )
        write = self.input if self.cache_write is None else _decimal(self.cache_write, "cache_write price")
        object.__setattr__(self, "cached_input", cached)
        object.__setattr__(self, "cache_write", write)
        if self.gpu_hour is not None:
            object.__setattr__(self, "gpu_hour", _decimal(self.gpu_hour, "gpu_hour"))

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
        )

    def cost(self, usage: Usage) -> Decimal:
        """Exact cost of ``usage``: uncached, cached and cache-write input priced separately."""
        assert self.cached_input is not None and self.cache_write is not None  # set in __post_init__
        total = (
            self.input * usage.uncached_input_tokens
            + self.cached_input * usage.cached_input_tokens
            + self.cache_write * usage.cache_write_tokens
            + self.output * usage.output_tokens
        )
        return total / _MILLION

    def to_dict(self) -> dict[str, str | float]:
        out: dict[str, str | float] = {
            "input": str(self.input),
            "cached_input": str(self.cached_input),
            "cache_write": str(self.cache_write),
            "output": str(self.output),
        }
        if self.gpu_hour is not None:
            out["gpu_hour"] = str(self.gpu_hour)
        if self.tokens_per_s is not None:
            out["tokens_per_s"] = self.tokens_per_s
        return out


def _parse_entry(name: str, data: object) -> ModelPrice:
    if not isinstance(data, Mapping):
        raise PricingError(f"price entry for {name!r} must be a table")
    unknown = set(data) - {
        "input",
        "output",
        "cached_input",
        "cache_write",
        "gpu_hour",
        "tokens_per_s",
        "prefill_tokens_per_s",
    }
    if unknown:
        raise PricingError(f"price entry for {name!r} has unknown keys {sorted(unknown)}")
    if "gpu_hour" in data and "input" not in data:
        if "tokens_per_s" not in data:
            raise PricingError(f"self-hosted entry {name!r} needs tokens_per_s next to gpu_hour")
        return ModelPrice.self_hosted(
            data["gpu_hour"],
            float(data["tokens_per_s"]),
            prefill_tokens_per_s=(
                float(data["prefill_tokens_per_s"]) if "prefill_tokens_per_s" in data else None
            ),
        )
    missing = {"input", "output"} - set(data)
    if missing:
        raise PricingError(f"price entry for {name!r} lacks {sorted(missing)}")
    try:
        return ModelPrice(
            input=data["input"],
            output=data["output"],
            cached_input=data.get("cached_input"),
            cache_write=data.get("cache_write"),
        )
    except PricingError as exc:
        raise PricingError(f"price entry for {name!r}: {exc}") from exc


@dataclass(frozen=True)
class PriceTable:
    """An immutable mapping from model name to ``ModelPrice``, with aliases.

    Build one with ``PriceTable.default()`` (the shipped list prices), ``from_toml(path)``,
    ``from_dict``, and combine with ``with_overrides`` / ``with_price`` (each returns a new table;
    a shared table is never mutated under a running meter).
    """

    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _resolved: dict[str, str | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", {k.strip().lower(): v for k, v in self.prices.items()})
        object.__setattr__(
            self, "aliases", {k.strip().lower(): v.strip().lower() for k, v in self.aliases.items()}
        )

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriceTable:
        """From the TOML shape: ``{"models": {name: {...}}, "aliases": {...}, "meta": {...}}``."""
        if not isinstance(data, Mapping):
            raise PricingError("a price table must be a mapping")
        models = data.get("models", {})
        aliases = data.get("aliases", {})
        if not isinstance(models, Mapping) or not isinstance(aliases, Mapping):
            raise PricingError("'models' and 'aliases' must be tables")
        unknown = set(data) - {"models", "aliases", "meta"}
        if unknown:
            raise PricingError(f"unknown top-level keys in price table: {sorted(unknown)}")
        return cls(
            prices={str(k): _parse_entry(str(k), v) for k, v in models.items()},
            aliases={str(k): str(v) for k, v in aliases.items()},
            meta=dict(data.get("meta", {})),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> PriceTable:
        """Read a TOML price file; ``PricingError`` names the file on any problem."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise PricingError(f"cannot read price file {path}: {exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PricingError(f"price file {path} is not valid TOML: {exc}") from exc
        try:
            return cls.from_dict(data)
        except PricingError as exc:
            raise PricingError(f"{path}: {exc}") from exc

    @classmethod
    def default(cls) -> PriceTable:
        """The list prices shipped with tokenlean (``prices.toml``; see its ``as_of`` date)."""
        return _default_table()

    def with_overrides(self, other: PriceTable | Mapping[str, Any] | str | Path) -> PriceTable:
        """A new table: ``other``'s entries (a table, a TOML-shaped dict or a TOML path) win."""
        if isinstance(other, (str, Path)):
            other = PriceTable.from_toml(other)
        elif not isinstance(other, PriceTable):
            other = PriceTable.from_dict(other)
        return PriceTable(
            prices={**self.prices, **other.prices},
            aliases={**self.aliases, **other.aliases},
            meta={**self.meta, **other.meta},
        )

    def with_price(self, model: str, price: ModelPrice) -> PriceTable:
        """A new table with one entry added or replaced (e.g. a self-hosted model)."""
        return PriceTable(prices={**self.prices, model: price}, aliases=self.aliases, meta=self.meta)

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

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """Cost of ``usage`` on ``model`` in USD, or ``None`` if the model has no price.

        Never raises for an unknown model: it is logged once per table and name, and the record
        is kept as *unpriced* rather than free.
        """
        key = self.resolve(model) if isinstance(model, str) else None
        if key is None:
            with self._lock:
                first = model not in self._warned
                self._warned.add(str(model))
            if first:
                log.warning("no price for model %r: its calls are recorded as unpriced (cost=None)", model)
            return None
        return self.prices[key].cost(usage)

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": dict(self.meta),
            "models": {k: v.to_dict() for k, v in sorted(self.prices.items())},
            "aliases": dict(sorted(self.aliases.items())),
        }


_DEFAULT: PriceTable | None = None
_DEFAULT_LOCK = threading.Lock()


def _default_table() -> PriceTable:
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            text = importlib.resources.files("tokenlean.metering").joinpath("prices.toml").read_text("utf-8")
            _DEFAULT = PriceTable.from_dict(tomllib.loads(text))
        # A fresh table object shares the parsed entries but not the "warned" set.
        return replace(_DEFAULT)
