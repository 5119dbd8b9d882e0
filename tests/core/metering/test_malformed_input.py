"""``Meter.record`` turns malformed tags and extras into ``MeteringError`` (found by ``reliability_fuzz``)."""

from __future__ import annotations

import pytest

from tokenlean.errors import MeteringError
from tokenlean.metering import Meter
from tokenlean.types import Usage


def test_tags_that_are_neither_a_mapping_nor_labels_are_a_metering_error() -> None:
    meter = Meter()
    with pytest.raises(MeteringError):
        meter.record(model="gpt-4o", usage=Usage(10, 5), tags=object())  # type: ignore[arg-type]
    with pytest.raises(MeteringError):
        meter.record(model="gpt-4o", usage=Usage(10, 5), extra=[("a", 1)])  # type: ignore[arg-type]


def test_a_list_of_labels_is_still_accepted_as_tags() -> None:
    rec = Meter().record(model="gpt-4o", usage=Usage(10, 5), tags=["nightly", "eval"])  # type: ignore[arg-type]
    assert dict(rec.tags) == {"nightly": "", "eval": ""}
