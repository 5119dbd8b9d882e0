"""Where prices come from: genai-prices' bundled data, tokenlean's overrides, the pinned table.

The expected numbers are computed from genai-prices' own data (and cross-checked with its own
``calc_price``), so these tests follow the installed release instead of copying its prices.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

import tokenlean.metering.price_sources as price_sources
import tokenlean.metering.prices as prices_module
from tokenlean.errors import PricingError, UnknownModelError
from tokenlean.metering import ModelPrice, PriceTable
from tokenlean.types import Usage

genai_prices = pytest.importorskip("genai_prices")
from genai_prices import data_snapshot  # noqa: E402 - after the importorskip

VERSION = genai_prices.__version__
MILLION = Decimal(1_000_000)

#: The pinned table is frozen: its bytes never change (benchmarks' money figures depend on it).
PINNED_SHA256 = "9d43659f2661b957bd59a933af7bb09ff73ee3be258c3f383e024c6f82ce5375"


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


def _source_model(model: str, provider: str) -> Any:
    """genai-prices' own ModelPrice for ``model`` at ``provider``, in force now."""
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    return info.get_prices(datetime.now(UTC))


def _base(value: Any) -> Decimal | None:
    """A source price (flat or tiered) at its base tier."""
    return None if value is None else Decimal(getattr(value, "base", value))


def _expected(model_price: Any, usage: Usage, write_1h: int) -> Decimal:
    """The list price computation from the source's own numbers, one usage field at a time."""
    inp = _base(model_price.input_mtok)
    assert inp is not None
    read = _base(model_price.cache_read_mtok) or inp
    write = _base(model_price.cache_write_mtok) or inp
    write_1h_price = _base(model_price.cache_write_1h_mtok) or write
    out = _base(model_price.output_mtok) or Decimal(0)
    return (
        inp * usage.uncached_input_tokens
        + read * usage.cached_input_tokens
        + write * (usage.cache_write_tokens - write_1h)
        + write_1h_price * write_1h
        + out * usage.output_tokens
    ) / MILLION


def _calc_price(model: str, provider: str, usage: Usage, write_1h: int) -> Decimal:
    """genai-prices' own calc_price for the same call (its Usage counts cache tokens in input)."""
    gp_usage = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=write_1h,
        output_tokens=usage.output_tokens,
    )
    return Decimal(genai_prices.calc_price(gp_usage, model, provider_id=provider).total_price)


MODELS = [
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("claude-opus-4-1", "anthropic"),
    ("gpt-4o", "openai"),
    ("gpt-4.1-mini", "openai"),
    ("gemini-2.5-flash", "google"),
]
USAGES = {  # one usage field at a time, then all together: (Usage, of which 1-hour cache writes)
    "uncached input": (Usage(input_tokens=12_345), 0),
    "cache read": (Usage(input_tokens=10_000, cached_input_tokens=9_000), 0),
    "5-minute cache write": (Usage(input_tokens=10_000, cache_write_tokens=8_000), 0),
    "1-hour cache write": (Usage(input_tokens=10_000, cache_write_tokens=8_000), 8_000),
    "output": (Usage(output_tokens=4_321), 0),
    "everything": (Usage(50_000, 2_000, cached_input_tokens=30_000, cache_write_tokens=15_000), 5_000),
}


@pytest.mark.parametrize(("model", "provider"), MODELS)
@pytest.mark.parametrize("case", list(USAGES))
def test_known_models_cost_what_the_source_says(
    table: PriceTable, model: str, provider: str, case: str
) -> None:
    usage, write_1h = USAGES[case]
    cost = table.cost(model, usage, cache_write_1h_tokens=write_1h)
    assert cost == _expected(_source_model(model, provider), usage, write_1h)
    assert cost == _calc_price(model, provider, usage, write_1h)  # and genai-prices agrees


def test_anthropic_models_have_the_one_hour_cache_write_tier(table: PriceTable) -> None:
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5", "claude-3-5-haiku"):
        price = table.price(model)
        assert price.cache_write_1h == 2 * price.input, model  # Anthropic: 1-hour write = 2x input
        assert price.cache_write == Decimal("1.25") * price.input, model  # 5-minute write = 1.25x


def test_long_context_tier_prices_the_whole_call(table: PriceTable) -> None:
    usage = Usage(input_tokens=250_000, output_tokens=1_000)
    source = _source_model("gemini-2.5-pro", "google")
    tier = source.input_mtok.tiers[-1]
    assert usage.input_tokens > tier.start
    assert table.cost("gemini-2.5-pro", usage) == _calc_price("gemini-2.5-pro", "google", usage, 0)
    assert table.price("gemini-2.5-pro").for_prompt(usage.input_tokens).input == tier.price
    assert table.price("gemini-2.5-pro").for_prompt(1_000).input == source.input_mtok.base


def test_each_model_names_its_source_and_version(table: PriceTable) -> None:
    assert table.source_of("claude-sonnet-4-5-20250929") == f"genai-prices {VERSION} (anthropic)"
    assert table.source_of("openai/gpt-4o") == f"genai-prices {VERSION} (openai)"
    assert table.price("gpt-4o").source == f"genai-prices {VERSION} (openai)"
    assert table.source_of("no-such-model") is None
    assert table.meta["genai_prices_version"] == VERSION
    assert table.meta["overrides"] == "tokenlean overrides"
    assert PriceTable.pinned().source_of("gpt-4o") == "tokenlean pinned prices (2025-11)"


@pytest.mark.parametrize(
    "name",
    [
        "claude-sonnet-4-5-mystery",  # genai-prices' own matcher prices this as Sonnet 4.5 (prefix)
        "gpt-4o-telepathy",
        "my-finetune-7b",
        "llama3.1:8b",
    ],
)
def test_unknown_model_is_unpriced_not_priced_as_another(
    table: PriceTable, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = PriceTable.default()
    with caplog.at_level(logging.WARNING, logger="tokenlean.metering.prices"):
        assert fresh.cost(name, Usage(1_000, 100)) is None
    assert name in caplog.text
    assert fresh.resolve(name) is None
    with pytest.raises(UnknownModelError):
        fresh.price(name)


def test_every_source_name_is_the_model_the_source_itself_names(table: PriceTable) -> None:
    """Each bare name (and alias) is priced as the model genai-prices resolves that exact name to."""
    snapshot = data_snapshot.get_snapshot()
    when = datetime.now(UTC)
    checked = 0
    for name in [*table.prices, *table.aliases]:
        price = table.price(name)
        prefix = f"genai-prices {VERSION} ("
        if not (price.source or "").startswith(prefix) or "; " in (price.source or ""):
            continue
        provider = price.source[len(prefix) : -1]
        try:  # a bare name (some are spelled "host/model"), else a provider-qualified one
            _, model = snapshot.find_provider_model(name, None, provider, None)
        except LookupError:
            _, model = snapshot.find_provider_model(name.removeprefix(provider + "/"), None, provider, None)
        source = model.get_prices(when)
        assert price.input == _base(source.input_mtok), name
        assert price.output == (_base(source.output_mtok) or 0), name
        checked += 1
    assert checked > 1000


def test_a_name_hosts_price_differently_needs_its_provider(table: PriceTable) -> None:
    providers = {p.id for p in data_snapshot.get_snapshot().providers}
    by_name: dict[str, dict[str, ModelPrice]] = {}
    for key in [*table.prices, *table.aliases]:
        head, _, tail = key.partition("/")
        if head in providers and tail and "/" not in tail:
            by_name.setdefault(tail, {})[head] = table.price(key)
    ambiguous = [
        (name, hosts)
        for name, hosts in sorted(by_name.items())
        if len(hosts) > 1 and len({(p.input, p.output) for p in hosts.values()}) > 1
    ]
    if not ambiguous:
        pytest.skip("no name listed by several hosts at different prices in this genai-prices release")
    for name, hosts in ambiguous:
        for provider, price in hosts.items():
            assert table.price(f"{provider}/{name}") == price
    # Unless genai-prices picks a provider from the name itself ("claude" -> Anthropic), the bare
    # name is priced by nobody: which host's price would be a guess.
    assert [name for name, _ in ambiguous if table.resolve(name) is None]


def test_overrides_win_for_every_spelling_of_the_model(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[models."claude-3.5-haiku"]\ninput = "0.50"\noutput = "2.00"\n', encoding="utf-8")
    mine = table.with_overrides(path)
    for spelling in (
        "claude-3.5-haiku",
        "claude-3-5-haiku",
        "claude-3-5-haiku-20241022",
        "claude-3-5-haiku-latest",
    ):
        assert mine.price(spelling).input == Decimal("0.50"), spelling
        assert mine.source_of(spelling) == str(path)
    assert mine.price("claude-haiku-4-5") == table.price("claude-haiku-4-5")
    assert table.price("claude-3-5-haiku").input != Decimal("0.50")  # the original is unchanged
    # a dict override names itself "overrides" unless its meta says otherwise
    named = table.with_overrides(
        {"meta": {"source": "our contract"}, "models": {"gpt-4o": {"input": "1", "output": "4"}}}
    )
    assert named.source_of("gpt-4o-2024-08-06") == "our contract"


def test_patches_set_single_fields_and_say_so(table: PriceTable) -> None:
    patched = table.with_overrides(
        {
            "meta": {"source": "ops"},
            "patches": {"gpt-4o": {"cache_write_1h": "9"}, "claude-haiku-4-5": {"cache_write_1h": "2.00"}},
        }
    )
    gpt = patched.price("gpt-4o")
    assert gpt.cache_write_1h == Decimal(9) and gpt.input == table.price("gpt-4o").input
    assert gpt.source == f"genai-prices {VERSION} (openai); ops (cache_write_1h)"
    # a patch equal to what the source says changes nothing, not even the source
    assert patched.price("claude-haiku-4-5") is table.price("claude-haiku-4-5")
    # a patch for a model the table does not know is skipped
    assert len(table.with_overrides({"patches": {"no-such-model": {"input": "1"}}})) == len(table)
    with pytest.raises(PricingError, match="unknown keys"):
        PriceTable.from_dict({"patches": {"gpt-4o": {"price": "1"}}})


def test_the_shipped_overrides_are_only_gaps_and_corrections(table: PriceTable) -> None:
    text = files("tokenlean.metering").joinpath("prices.toml").read_text("utf-8")
    overrides = PriceTable.from_dict(tomllib.loads(text))
    assert overrides.meta["source"] == "tokenlean overrides"
    base = PriceTable.from_dict(price_sources.genai_prices_table() or {})
    pinned = PriceTable.pinned()
    for name, patch in overrides.patches.items():
        fields = {k: v for k, v in patch.items() if k != "source"}
        changes = [
            t.price(name)
            for t in (base, pinned)
            if name in t and any(getattr(t.price(name), k) != v for k, v in fields.items())
        ]
        assert changes, f"patch for {name!r} changes nothing: delete it"
    for name in overrides.prices:
        assert name not in base or base.price(name) != overrides.prices[name], name


def test_pinned_table_is_frozen() -> None:
    data = files("tokenlean.metering").joinpath("prices_pinned.toml").read_bytes()
    assert hashlib.sha256(data).hexdigest() == PINNED_SHA256, (
        "prices_pinned.toml is frozen: benchmarks compare money figures across releases"
    )
    pinned = PriceTable.pinned()
    assert pinned.meta["as_of"] == "2025-11"
    assert len(pinned) == 27
    assert pinned.price("gpt-4o") == ModelPrice(input="2.50", output="10.00", cached_input="1.25")
    sonnet = pinned.price("claude-sonnet-4-5")
    assert (sonnet.input, sonnet.cached_input, sonnet.cache_write, sonnet.output) == (
        Decimal("3.00"),
        Decimal("0.30"),
        Decimal("3.75"),
        Decimal("15.00"),
    )
    assert sonnet.cache_write_1h == sonnet.cache_write  # the pinned table has no 1-hour tier
    assert pinned.resolve("chatgpt-4o-latest") == "gpt-4o"  # its aliases, as they were


def test_without_genai_prices_the_pinned_table_and_overrides_price(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(prices_module, "_SHIPPED", {})
    monkeypatch.setattr(price_sources, "genai_prices_table", lambda as_of=None: None)
    with caplog.at_level(logging.INFO, logger="tokenlean.metering.prices"):
        fallback = PriceTable.default()
    assert "genai-prices is not installed" in caplog.text
    assert fallback.price("gpt-4o") == PriceTable.pinned().price("gpt-4o")
    haiku = fallback.price("claude-3.5-haiku")
    assert haiku.cache_write_1h == Decimal("1.60")  # the override table fills the pinned gap
    assert haiku.source == "tokenlean pinned prices (2025-11); tokenlean overrides (cache_write_1h)"


def test_unreadable_genai_data_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(as_of: datetime | None = None) -> dict[str, Any]:
        raise AttributeError("'Provider' object has no attribute 'models'")

    monkeypatch.setattr(prices_module, "_SHIPPED", {})
    monkeypatch.setattr(price_sources, "genai_prices_table", broken)
    with caplog.at_level(logging.WARNING, logger="tokenlean.metering.prices"):
        fallback = PriceTable.default()
    assert "could not be read" in caplog.text
    assert fallback.source_of("gpt-4o") == "tokenlean pinned prices (2025-11)"


def test_lookups_never_touch_the_network() -> None:
    """A fresh interpreter with sockets disabled builds the default table and prices with it."""
    code = """
import socket, threading
def refuse(*args, **kwargs):
    raise AssertionError("network access")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from tokenlean.metering import PriceTable
from tokenlean.types import Usage
table = PriceTable.default()
assert table.source_of("gpt-4o").startswith("genai-prices"), table.source_of("gpt-4o")
assert table.cost("claude-sonnet-4-5", Usage(1000, 10), cache_write_1h_tokens=0) > 0
assert table.cost("no-such-model", Usage(1000, 10)) is None
assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]
print("offline ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "offline ok"


def test_one_hour_share_must_fit_in_the_cache_writes() -> None:
    price = ModelPrice(input="3", output="15", cache_write="3.75", cache_write_1h="6")
    usage = Usage(input_tokens=1_000, cache_write_tokens=400)
    assert price.cost(usage, cache_write_1h_tokens=400) == (600 * Decimal(3) + 400 * Decimal(6)) / MILLION
    assert price.cost(usage) == (600 * Decimal(3) + 400 * Decimal("3.75")) / MILLION
    for bad in (401, -1, 2.5):
        with pytest.raises(PricingError, match="cache_write_1h_tokens"):
            price.cost(usage, cache_write_1h_tokens=bad)  # type: ignore[arg-type]
    assert ModelPrice(input="1", output="2").cache_write_1h == Decimal(1)  # defaults to cache_write


def test_tiers_and_sources_round_trip_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "tiers.toml"
    path.write_text(
        '[models."long"]\ninput = "1"\noutput = "2"\ncache_write_1h = "3"\nsource = "vendor sheet"\n'
        '[[models."long".tiers]]\nabove_input_tokens = 100\ninput = "10"\noutput = "20"\n',
        encoding="utf-8",
    )
    table = PriceTable.from_toml(path)
    price = table.price("long")
    assert price.source == "vendor sheet"
    assert price.cost(Usage(100, 1)) == (100 * Decimal(1) + 2) / MILLION  # at the threshold: base
    assert price.cost(Usage(101, 1)) == (101 * Decimal(10) + 20) / MILLION  # above: all at the tier
    again = PriceTable.from_dict({"models": {"long": price.to_dict()}})
    assert again.price("long") == price
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[models."x"]\ninput = 1\noutput = 1\ntiers = [{input = 2, output = 2}]\n', encoding="utf-8"
    )
    with pytest.raises(PricingError, match=r"bad\.toml"):
        PriceTable.from_toml(bad)
