"""One error contract on every execution path.

A driver's error is judged by the database's backend (`DatabaseRules.fault_of` gives a
`Fault`); the functions here turn that verdict into the one exception the call raises,
whichever executor ran it. docs/reliability.md ("Errors") is the table this implements.
Messages name what happened, never a value.
"""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import exc

from slack_agents_sa.errors import (
    ConnectionLostError,
    InvalidValueError,
    LockTimeoutError,
    PoolTimeoutError,
    SlackAgentsSAError,
    StatementTimeoutError,
    TransactionConflictError,
)
from slack_agents_sa.executors.base import DatabaseRules, Fault

#: The SQLAlchemy class each plain SQL error becomes, as SQLAlchemy names DB-API errors.
_SQLALCHEMY_CLASS: dict[Fault, type[exc.DBAPIError]] = {
    Fault.INTEGRITY: exc.IntegrityError,
    Fault.DATA: exc.DataError,
    Fault.PROGRAMMING: exc.ProgrammingError,
    Fault.NOT_SUPPORTED: exc.NotSupportedError,
    Fault.OPERATIONAL: exc.OperationalError,
    Fault.DATABASE: exc.DatabaseError,
}


def lost_connection_message(error: BaseException) -> str:
    """The `ConnectionLostError` message of every path (no values, no SQL)."""
    return (
        "lost the connection to the database during this call "
        f"({type(error).__name__}); the call took effect entirely or not at all, "
        "and the next call reconnects"
    )


def fault_of(error: BaseException, rules: DatabaseRules) -> Fault | None:
    """The backend's verdict on `error`; none on an error of ours (raised on purpose, with
    the connection at rest: `TimeoutError`s of ours are `OSError`s too)."""
    if isinstance(error, SlackAgentsSAError):
        return None
    return rules.fault_of(error)


def translated(
    error: BaseException, fault: Fault | None, sql: str, wrapped: exc.DBAPIError | None = None
) -> BaseException:
    """The exception a call raises for the driver's `error`, judged `fault`.

    `wrapped` is SQLAlchemy's own wrapper of it on SQLAlchemy's path: kept when it is
    already the class the contract names, so its statement and chain stay as SQLAlchemy made
    them. With no verdict (`fault` None: not a driver error) the error is raised as it is.
    """
    name = type(error).__name__
    if fault is None:
        return wrapped if wrapped is not None else error
    if fault is Fault.SESSION_ENDED:
        return ConnectionLostError(lost_connection_message(error))
    if fault is Fault.INVALID_VALUE:
        return invalid_value(error)
    if fault is Fault.STATEMENT_TIMEOUT:
        return StatementTimeoutError(
            f"the database stopped the statement ({name}): it ran past the statement timeout "
            "or was cancelled; nothing of the call was written, and the next call works"
        )
    if fault is Fault.LOCK_TIMEOUT:
        return LockTimeoutError(
            f"the statement waited too long for a lock another session holds ({name}); "
            "nothing of the call was written, and retrying later is safe"
        )
    if fault is Fault.CONFLICT:
        return TransactionConflictError(
            f"the database rolled the call back ({name}: a deadlock, a serialization "
            "conflict or a statement made stale by a schema change); nothing was written"
        )
    kind = _SQLALCHEMY_CLASS[fault]
    if wrapped is not None and type(wrapped) is kind:
        return wrapped
    made: BaseException = kind(sql, None, error, hide_parameters=True)
    return made


def raise_translated(
    error: BaseException, fault: Fault | None, sql: str, wrapped: exc.DBAPIError | None = None
) -> NoReturn:
    """Raise `translated(...)`, chained from the error it replaces (never from itself)."""
    cause = wrapped if wrapped is not None else error
    found = translated(error, fault, sql, wrapped)
    if found is cause:
        raise found
    raise found from cause


def engine_error(error: Exception, rules: DatabaseRules) -> BaseException:
    """What SQLAlchemy's path raises for `error`, by the same contract as the native paths."""
    if isinstance(error, SlackAgentsSAError):
        return error
    if isinstance(error, exc.TimeoutError):  # the pool's QueuePool limit reached
        return PoolTimeoutError(
            "no pooled connection came free within option `pool_timeout`: every connection "
            "is busy with other calls; raise `pool_size` or `pool_timeout`"
        )
    if isinstance(error, exc.DBAPIError):
        driver = rules.driver_error(error)
        fault = Fault.SESSION_ENDED if error.connection_invalidated else fault_of(driver, rules)
        return translated(driver, fault, str(error.statement or ""), wrapped=error)
    if isinstance(error, exc.StatementError) and isinstance(error.orig, TypeError | ValueError):
        # A value SQLAlchemy could not bind (not JSON, NaN, naive datetime): nothing was sent.
        return invalid_value(error.orig)
    if isinstance(error, OSError):  # a connect refused, or timed out (option connect_timeout)
        return ConnectionLostError(f"cannot reach the database: {error}")
    fault = fault_of(error, rules)
    if fault is not None:
        # The driver's own error, unwrapped: text it (or our packet-size check) could not
        # encode, nothing sent; or one the pool's reset met on a connection that died after
        # its last statement (a killed Galera node), which must read as a lost session.
        return translated(error, fault, "")
    return error


def invalid_value(error: BaseException) -> InvalidValueError:
    """`InvalidValueError` for a value a type or the driver refused before sending."""
    return InvalidValueError(f"cannot store value: {error}")


def is_lost_on_connect(error: BaseException, rules: DatabaseRules) -> bool:
    """Whether an error opening a connection means the database cannot be reached now."""
    if isinstance(error, OSError):
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return fault_of(rules.driver_error(error), rules) is Fault.SESSION_ENDED
    return fault_of(error, rules) is Fault.SESSION_ENDED
