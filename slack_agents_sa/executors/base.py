"""The one protocol every executor implements, and what an executor asks of its database.

A call is one statement (`fetch`, `write`, `insert_id`) or one transaction of dependent
statements (`steps`), so every executor can run it as one unit: one lane, one hop
to SQLite's worker thread, one pooled connection.

What differs per database (which errors end a session, what a timeout looks like, whether
a connection is closed) is not decided here: the executor is handed its backend object
(`DatabaseRules`) and asks it. Executors import no backend module.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ClauseElement
from sqlalchemy.exc import DBAPIError

type Values = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a `steps` call.

    `values` may be a function of the id the previous step inserted (a tool block's id for
    its tool-call row); with `returns_id` the step's inserted id goes to the next step.
    """

    stmt: ClauseElement
    values: Values | Callable[[int | None], Values]
    returns_id: bool = False

    def values_after(self, previous_id: int | None) -> Values:
        return self.values(previous_id) if callable(self.values) else self.values


class Fault(enum.Enum):
    """What a driver's error means for the call and for its connection.

    The backend of each database decides (`DatabaseRules.fault_of`); `executors.errors`
    turns the verdict into the exception every path raises (docs/reliability.md has the
    table).
    """

    #: A constraint refused the row (unique, foreign key, not null, check).
    INTEGRITY = "integrity"
    #: The server refused a value (out of range, bad encoding, invalid text).
    DATA = "data"
    #: The statement is wrong for this schema or server (syntax, missing table, privilege).
    PROGRAMMING = "programming"
    #: The server does not support what the statement asks.
    NOT_SUPPORTED = "not supported"
    #: The server could not run the statement for an operational reason (out of disk, ...).
    OPERATIONAL = "operational"
    #: Any other error the server reported about the statement.
    DATABASE = "database"
    #: The database rolled the call back: deadlock, serialization failure, or a prepared
    #: statement another session made stale. Safe to run again (`Database` retries).
    CONFLICT = "conflict"
    #: The server stopped the statement: `statement_timeout`, or an operator's cancel.
    STATEMENT_TIMEOUT = "statement timeout"
    #: The statement waited past the lock timeout for a lock another session holds.
    LOCK_TIMEOUT = "lock timeout"
    #: A value the driver could not encode for the database (text its encoding cannot
    #: hold): refused before the statement ran; the connection stays usable.
    INVALID_VALUE = "invalid value"
    #: The session is gone (connection error, server shut down, killed): the connection
    #: must never be used again.
    SESSION_ENDED = "session ended"


class DatabaseRules(Protocol):
    """What an executor asks its database's backend object (`backends.Backend`)."""

    def fault_of(self, error: BaseException) -> Fault | None:
        """The verdict on an error a driver call raised; None when the error is not the
        driver's (raised by our own code with the connection at rest)."""

    def driver_error(self, error: DBAPIError) -> BaseException:
        """The driver's own error inside SQLAlchemy's wrapper (SQLAlchemy's path)."""

    def driver_says_closed(self, driver_connection: Any) -> bool:
        """Whether the driver knows its connection is closed, asked without a round trip."""

    async def ping(self, driver_connection: Any) -> None:
        """One round trip that fails if the connection is unusable (`pool_pre_ping`)."""


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """How a native executor keeps its connections: the pool options, applied to lanes."""

    #: How many lanes at most (`pool_size`).
    size: int = 5
    #: Seconds a call waits for a free lane before `PoolTimeoutError` (`pool_timeout`).
    timeout: float = 30.0
    #: A lane older than this many seconds is replaced before use (`pool_recycle`; -1: never).
    recycle: float = -1
    #: Ping each lane before each call (`pool_pre_ping`).
    pre_ping: bool = False


class Executor(Protocol):
    """Runs compiled Core statements; raises the errors of `executors.errors.translated`.

    Errors: `sqlalchemy.exc.IntegrityError` for a constraint, `ConnectionLostError` when
    the session ended (the call took effect entirely or not at all), `InvalidValueError`
    when a value cannot be bound (nothing sent), and the rest of docs/reliability.md's table.
    """

    #: "native" or "sqlalchemy": which path the option `executor` chose.
    kind: str

    async def open(self) -> None:
        """Get ready for calls (connections may also open on first use)."""

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        """Every row of a query (or of a RETURNING), as rows with named fields."""

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        """Run one statement that commits by itself; the number of rows it touched."""

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        """Run one INSERT (or upsert) by itself; the id of the row inserted or upserted."""

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
        """Run `steps` as one transaction; the id each `returns_id` step inserted."""

    def refuse(self) -> None:
        """Refuse every call from now on (`ProviderClosedError`), those still waiting for a
        connection included; calls already running go on. `close` follows."""

    async def close(self) -> None:
        """Release every connection the executor holds."""
