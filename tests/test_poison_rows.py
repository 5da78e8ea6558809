"""Legal data never poisons a query: values holding NUL or lone surrogates, anywhere in a
document, in the namespace being queried, leave `query` exactly as the contract says.

On PostgreSQL a JSON function meeting `\\u0000` or a lone surrogate escape in any field of
a document fails the whole statement, so the SQL pre-filter must never give such a row
to one; the reference model (tests/reference.py) says what the answer is.
"""

from __future__ import annotations

from typing import Any

import pytest

from slack_agents_sa import Provider
from tests.reference import ReferenceStore

POISON = ["\x00", "a\x00b", "\ud800", "x\udfffy", "\\u0000", "\\ud800", "é\x00\ud83d"]

#: Documents stored with `set` and `append`: the poison in values, in keys, nested, and
#: next to a plain field the filters look at.
DOCUMENTS: list[dict[str, Any]] = [
    {"kind": "plain", "name": "Ann"},
    {"kind": "poison", "name": "Ann", "note": POISON[0]},
    {"kind": "poison", "name": "Bob", "note": POISON[2]},
    {"kind": "poison", "name": POISON[1]},
    {"kind": "poison", "name": POISON[3], "deep": {"x": [POISON[4], {"y": POISON[6]}]}},
    {"kind": "poison", POISON[0]: "key holds NUL", "name": "Ann"},
    {"kind": "poison", POISON[2]: "key holds a surrogate", "name": "Cy"},
    {"kind": "poison", "name": POISON[5], "é": "é"},
    {"kind": "plain", "name": "é", "n": 1},
]

FILTERS: list[dict[str, Any]] = [
    {},
    {"name": "Ann"},
    {"name": "Bob"},
    {"kind": "poison"},
    {"kind": "plain", "name": "é"},
    {"name": POISON[1]},
    {"name": POISON[3]},
    {"name": POISON[5]},
    {"note": POISON[0]},
    {POISON[0]: "key holds NUL"},
    {POISON[2]: "key holds a surrogate"},
    {"é": "é"},
    {"deep": {"x": [POISON[4], {"y": POISON[6]}]}},
    {"missing": None, "kind": "plain"},
    {"n": 1.0},
]


@pytest.mark.parametrize("filters", FILTERS, ids=[repr(f)[:40] for f in FILTERS])
async def test_query_over_poisoned_rows_matches_the_reference(
    provider: Provider, filters: dict[str, Any]
) -> None:
    reference = ReferenceStore()
    for index, document in enumerate(DOCUMENTS):
        for store in (provider, reference):
            await store.set("poisoned", f"key-{index}", document)
            await store.append("poisoned", "list", document)
    expected = await reference.query("poisoned", filters)
    got = await provider.query("poisoned", filters)
    # Appended ids differ between stores; everything else must be equal, in order.
    assert [_without_id(value) for value in got] == [_without_id(value) for value in expected]
    assert [("id" in value) for value in got] == [("id" in value) for value in expected]


def _without_id(value: dict[str, Any]) -> dict[str, Any]:
    return {name: field for name, field in value.items() if name != "id"}
