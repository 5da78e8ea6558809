"""The one protocol every executor implements: how a provider call reaches the database.

A call is one statement (`fetch`, `write`, `insert_id`) or one transaction of dependent
statements (`transaction`), so every executor can run it as one unit: one lane, one hop
to SQLite's worker thread, one pooled connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ClauseElement

type Values = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a `transaction`.

    `values` may be a function of the id the previous step inserted (a tool block's id for
    its tool-call row); with `returns_id` the step's inserted id goes to the next step.
    """

    stmt: ClauseElement
    values: Values | Callable[[int | None], Values]
    returns_id: bool = False

    def values_after(self, previous_id: int | None) -> Values:
        return self.values(previous_id) if callable(self.values) else self.values


class Executor(Protocol):
    """Runs compiled Core statements; translates driver errors into SQLAlchemy's.

    Errors: `sqlalchemy.exc.IntegrityError` for a constraint, `ConnectionLostError` when
    the connection broke (the call took effect entirely or not at all), the value's own
    `TypeError`/`ValueError` when a value cannot be bound (nothing sent).
    """

    #: "native" or "sqlalchemy": which path the option `executor` chose.
    kind: str

    async def open(self) -> None:
        """Get ready for calls (connections may also open on first use)."""

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        """Every row of a query (or of a RETURNING), as tuples with named fields."""

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        """Run one statement that commits by itself; the number of rows it touched."""

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        """Run one INSERT (or upsert) by itself; the id of the row inserted or upserted."""

    async def transaction(self, steps: Sequence[Step]) -> list[int | None]:
        """Run `steps` in one transaction; the id each `returns_id` step inserted."""

    async def close(self) -> None:
        """Release every connection the executor holds."""


def lost_connection_message(error: BaseException) -> str:
    """The `ConnectionLostError` message of every executor (no values, no SQL)."""
    return (
        "lost the connection to the database during this call "
        f"({type(error).__name__}); the call took effect entirely or not at all, "
        "and the next call reconnects"
    )
