"""Phone numbers match however a person writes them."""

from __future__ import annotations

import pytest

from ledger.phone_numbers import normalise_number


@pytest.mark.parametrize(
    "typed",
    ["+14155550100", "14155550100", "+1 415 555 0100", "+1 (415) 555-0100", " 1.415.555.0100 "],
)
def test_every_way_of_writing_a_number_gives_the_form_plivo_sends(typed: str) -> None:
    assert normalise_number(typed) == "14155550100"


@pytest.mark.parametrize("sender", ["MyBrand", "PLIVO-1", "+"])
def test_anything_that_is_not_a_dialled_number_is_kept_as_written(sender: str) -> None:
    assert normalise_number(f" {sender} ") == sender
