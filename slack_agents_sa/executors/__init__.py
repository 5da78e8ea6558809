"""How a provider call reaches the database: one executor per driver behind one protocol.

`native` executors run SQLAlchemy-compiled statements on the driver (asyncpg lanes, a
SQLite worker thread, asyncmy lanes); the generic one is SQLAlchemy's own execution path
and serves every other async dialect, and `executor: sqlalchemy` everywhere.
"""

from slack_agents_sa.executors.base import (
    DatabaseRules,
    Executor,
    Fault,
    LanePolicy,
    Step,
    Values,
)
from slack_agents_sa.executors.compiled import CompiledStatement
from slack_agents_sa.executors.engine import EngineExecutor
from slack_agents_sa.executors.statement_cache import StatementCache

__all__ = [
    "CompiledStatement",
    "DatabaseRules",
    "EngineExecutor",
    "Executor",
    "Fault",
    "LanePolicy",
    "StatementCache",
    "Step",
    "Values",
]
