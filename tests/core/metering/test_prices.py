"""PriceTable: shipped list prices, exact Decimal cost, name normalisation, overrides, GPU hours."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest

from tokenlean.errors import PricingError, UnknownModelError
from tokenlean.metering import ModelPrice, PriceTable, normalize_model_name
from tokenlean.types import Usage


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


def test_default_table_covers_the_common_families(table: PriceTable) -> None:
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "o3",
        "o4-mini",
        "claude-opus-4-5",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-5-sonnet",
        "claude-3-5-haiku",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.0-flash",
    ):
        price = table.price(model)
        assert price.output >= price.input > 0, model
        assert price.cached_input is not None and price.cached_input <= price.input, model


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("GPT-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("claude-3.5-haiku", "claude-3-5-haiku"),
        ("models/gemini-2.0-flash-001", "gemini-2.0-flash"),
        # genai-prices (the default source) prices these as models of their own: the 05-20
        # preview at its preview price, chatgpt-4o-latest at $5/$15 (the pinned table aliased
        # them to gemini-2.5-flash and gpt-4o).
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash-preview"),
        ("chatgpt-4o-latest", "chatgpt-4o-latest"),
    ],
)
def test_snapshot_and_provider_spellings_resolve(table: PriceTable, name: str, key: str) -> None:
    assert table.resolve(name) == key
    assert table.price(name) is table.price(key)


def test_no_prefix_guessing_for_a_different_model(table: PriceTable) -> None:
    # gpt-4o-audio is priced differently: it must not silently inherit gpt-4o's price. The default
    # source lists it as a model of its own; a table that does not (the pinned one) leaves it
    # unpriced, and so does the default table for a name no source lists.
    assert table.resolve("gpt-4o-audio-preview") == "gpt-4o-audio-preview"
    assert table.price("gpt-4o-audio-preview") != table.price("gpt-4o")
    assert PriceTable.pinned().resolve("gpt-4o-audio-preview") is None
    assert table.resolve("gpt-4o-telepathy-preview") is None
    assert normalize_model_name("gpt-4o-2024-08-06") == "gpt-4o"


def test_cost_prices_each_kind_of_token_separately(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=10_000, output_tokens=2_000, cached_input_tokens=4_000, cache_write_tokens=1_000
    )
    cost = table.cost("claude-sonnet-4-5", usage)
    # 5000 uncached * 3 + 4000 cached * 0.30 + 1000 writes * 3.75 + 2000 out * 15, per million
    assert cost == Decimal("0.0499500")
    assert isinstance(cost, Decimal)


def test_unknown_model_is_unpriced_and_logged_once(
    table: PriceTable, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = PriceTable.default()
    with caplog.at_level(logging.WARNING, logger="tokenlean.metering.prices"):
        assert fresh.cost("my-finetune-7b", Usage(10, 5)) is None
        assert fresh.cost("my-finetune-7b", Usage(10, 5)) is None
    assert [r.getMessage().count("my-finetune-7b") for r in caplog.records] == [1]
    with pytest.raises(UnknownModelError, match="my-finetune-7b"):
        fresh.price("my-finetune-7b")
    with pytest.raises(KeyError):  # UnknownModelError is also a KeyError
        fresh.price("my-finetune-7b")


def test_toml_override_wins_and_adds_models(table: PriceTable, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gpt-4o"]\ninput = "1.00"\noutput = "4.00"\n'
        '[models."local-llama"]\ngpu_hour = "2.00"\ntokens_per_s = 1000\n'
        '[aliases]\n"my-llama" = "local-llama"\n',
        encoding="utf-8",
    )
    merged = table.with_overrides(path)
    assert merged.price("gpt-4o").input == Decimal("1.00")
    assert merged.price("gpt-4o").cached_input == Decimal("1.00")  # defaults to input
    assert merged.price("gpt-4o-mini") == table.price("gpt-4o-mini")
    # 2 USD/h at 1000 output tokens/s: 2 / 3600 / 1000 * 1e6 USD per million output tokens
    assert (
        merged.cost("my-llama", Usage(0, 1_000_000)) == Decimal(2) / Decimal(3600) / Decimal(1000) * 1_000_000
    )
    assert table.price("gpt-4o").input == Decimal("2.50")  # the original table is unchanged


def test_self_hosted_price_from_measured_throughput() -> None:
    price = ModelPrice.self_hosted("3.60", tokens_per_s=100, prefill_tokens_per_s=1000)
    # 3.60 USD/h = 0.001 USD/s; 100 output tok/s -> 1e-5 USD/token; 1000 prefill tok/s -> 1e-6
    assert price.cost(Usage(1000, 100)) == Decimal("0.002")
    with pytest.raises(PricingError):
        ModelPrice.self_hosted("1", tokens_per_s=0)


@pytest.mark.parametrize(
    "text",
    [
        '[models."x"]\ninput = "-1"\noutput = "1"\n',  # negative
        '[models."x"]\ninput = "abc"\noutput = "1"\n',  # not a number
        '[models."x"]\noutput = "1"\n',  # missing input
        '[models."x"]\ninput = 1\noutput = 1\nsurprise = 2\n',  # unknown key
        "[models\n",  # broken TOML
    ],
)
def test_bad_price_files_raise_pricing_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PricingError, match=r"bad\.toml"):
        PriceTable.from_toml(path)


def test_non_utf8_price_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[models."caf\xe9"]\ninput = 1\noutput = 1\n'.encode("latin-1"))
    with pytest.raises(PricingError, match=r"latin1\.toml"):
        PriceTable.from_toml(path)
