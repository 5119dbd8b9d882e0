"""Value recognisers: what is per-request is found, what only looks like it is not."""

from __future__ import annotations

import pytest

from tokenlean.layout import BreakerKind, find_volatile


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Current time: 2026-11-23T10:42:07Z.", BreakerKind.TIMESTAMP, "2026-11-23T10:42:07Z"),
        ("It is Nov 23, 2026 10:42 AM UTC now", BreakerKind.TIMESTAMP, "Nov 23, 2026 10:42 AM UTC"),
        ("ts=1763892000 sent", BreakerKind.TIMESTAMP, "1763892000"),
        ("at 10:42:07 UTC", BreakerKind.TIMESTAMP, "10:42:07 UTC"),
        ("Today is 2026-11-23.", BreakerKind.DATE, "2026-11-23"),
        ("Current date: Monday, November 23, 2026", BreakerKind.DATE, "Monday, November 23, 2026"),
        (
            "session 9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f open",
            BreakerKind.UUID,
            "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
        ),
        ("id req_8f3a2b1c9d0e ok", BreakerKind.REQUEST_ID, "req_8f3a2b1c9d0e"),
        ("trace id: 4bf92f3577b34da6", BreakerKind.REQUEST_ID, "4bf92f3577b34da6"),
        ("nonce 0af7651916cd43dd8448eb21", BreakerKind.REQUEST_ID, "0af7651916cd43dd8448eb21"),
        ("run 01ARZ3NDEKTSV4RRFFQ69G5FAV done", BreakerKind.REQUEST_ID, "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ],
)
def test_finds_per_request_values(text: str, kind: BreakerKind, value: str) -> None:
    spans = find_volatile(text)
    assert [(s.kind, s.text) for s in spans] == [(kind, value)]
    assert text[spans[0].start : spans[0].end] == value


@pytest.mark.parametrize(
    "text",
    [
        "Knowledge cutoff: 2024-06-01. API version 2.3.1 of the order service is in use.",
        "Prices include VAT; the standard shipping fee is 4.90 EUR (free above 50 EUR).",
        "Our support hours are 08:00 to 20:00 on weekdays.",
        "Call +44 20 7946 0958 or write to help@acme.example about order 4017.",
        "Released on March 3, 2021 under the MIT licence.",
    ],
)
def test_stable_values_are_not_flagged(text: str) -> None:
    assert find_volatile(text) == []


def test_dates_all_reports_every_date() -> None:
    text = "Released on March 3, 2021; cutoff 2024-06-01"
    assert [s.kind for s in find_volatile(text, dates="all")] == [BreakerKind.DATE, BreakerKind.DATE]
    assert find_volatile("Today is 2026-11-23", dates="none") == []


def test_iso_datetime_is_one_timestamp_not_a_date_and_a_time() -> None:
    spans = find_volatile("Today: 2026-11-23 10:42:07")
    assert [s.kind for s in spans] == [BreakerKind.TIMESTAMP]
