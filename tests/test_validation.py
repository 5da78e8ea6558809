"""Ids the host hands back: an int, or the str that str(int) made of one; nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from slack_agents_sa.validation import to_id, to_optional_id

BIGGEST = 2**63 - 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("5", 5), ("0", 0), ("-5", -5), (str(BIGGEST), BIGGEST), (-(2**63), -(2**63))],
)
def test_ints_and_their_str_forms_are_ids(value: int | str, expected: int) -> None:
    assert to_id("message_id", value) == expected


@pytest.mark.parametrize(
    "value",
    ["--5", "-", "", " 5 ", "5\n", "\u0665", "+5", "05", "-0", "5.0", "1_000", "0x10", "9" * 5000],
    ids=repr,
)
def test_other_strings_are_refused_naming_the_argument(value: str) -> None:
    with pytest.raises(ValueError, match=r"^message_id must be an integer id as str\(int\)"):
        to_id("message_id", value)


@pytest.mark.parametrize("value", [BIGGEST + 1, str(BIGGEST + 1), -(2**63) - 1, 2**70])
def test_ids_beyond_64_bits_are_refused_naming_the_argument(value: int | str) -> None:
    with pytest.raises(ValueError, match=r"^message_id is outside the range of a 64-bit id"):
        to_id("message_id", value)


@pytest.mark.parametrize("value", [True, 1.0, b"5", None])
def test_other_types_are_type_errors(value: Any) -> None:
    with pytest.raises(TypeError, match=r"^message_id must be an int or a str of digits"):
        to_id("message_id", value)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), (0, None), ("7", 7)])
def test_optional_ids_treat_the_hosts_falsy_values_as_none(
    value: int | str | None, expected: int | None
) -> None:
    assert to_optional_id("tool_block_id", value) == expected
