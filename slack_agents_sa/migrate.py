"""Alembic driven from code: where the migrations are, upgrade at start-up, the schema check.

Start-up at head never comes here (`schema_version.is_at_head`: one read without Alembic).
Otherwise it reads where the schema stands (one read, no lock) and takes the migration locks
only when there is something to migrate: first this process's (Alembic's `alembic.context`
and `alembic.op` are process-wide, so one migration runs at a time in a process), then the
database's. A schema newer than this release (a rolling deploy) is used as it is when its
compatibility marker allows it; see docs/schema.md.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from slack_agents_sa.alembic_logging import alembic_set_up_at_debug

alembic_set_up_at_debug()  # before Alembic's first import, which logs its plugins

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, insert, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa.backends import MIGRATION_LOCK_TIMEOUT_S, backend_for
from slack_agents_sa.errors import MigrationError, SchemaOutOfDateError, SchemaTooNewError
from slack_agents_sa.migration_filters import all_but_ours as all_but_ours  # host env.py's
from slack_agents_sa.migration_filters import is_ours as is_ours
from slack_agents_sa.migration_filters import only_ours as only_ours  # alembic/env.py's
from slack_agents_sa.migration_lock import in_process_migration_lock, in_process_migration_lock_sync
from slack_agents_sa.models import SchemaCompatibility, table_of
from slack_agents_sa.schema_version import VERSION_TABLE as VERSION_TABLE  # env.py imports it here

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent


def script_location() -> Path:
    """The migrations folder: `slack_agents_sa/migrations` in a wheel, `alembic/` in a checkout."""
    for candidate in (_PACKAGE_DIR / "migrations", _PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"slack_agents_sa migrations not found next to {_PACKAGE_DIR}")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic `Config` for our migrations; with `connection`, env.py migrates on it."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    return config


@cache
def _our_script() -> ScriptDirectory:
    """Our migrations, loaded once (each revision file is imported)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> set[str]:
    return set(_our_script().get_heads())


def current_revisions(connection: Connection) -> set[str]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return set(context.get_current_heads())


# --- Rolling deploys: which heads can run on which schema -----------------------------------

#: The revision that created `SchemaCompatibility`'s table: the marker exists from here on.
_COMPAT_SINCE = "0004"
_COMPAT = table_of(SchemaCompatibility)


def _lineage(script: ScriptDirectory, revision: str) -> list[str]:
    """`revision` and its ancestors, newest first."""
    return [step.revision for step in script.iterate_revisions(revision, "base")]


def _declared_compatible_with(script: ScriptDirectory, revision: str) -> str:
    """What a revision file says (`compatible_with = "<older revision>"`), itself if nothing."""
    found = script.get_revision(revision)
    assert found is not None, revision
    return str(getattr(found.module, "compatible_with", revision))


def oldest_compatible_head(script: ScriptDirectory, revision: str) -> str:
    """The oldest head whose code can run on `revision`'s schema.

    A revision's `compatible_with` only speaks for its own change, so the answer is the
    newest of the declarations between it and the answer: code at the answer must be able to
    run on every change after it.
    """
    chain = _lineage(script, revision)
    position = {step: index for index, step in enumerate(chain)}
    oldest = 0
    for index, step in enumerate(chain):
        declared = _declared_compatible_with(script, step)
        if declared not in position or position[declared] < index:
            raise MigrationError(
                f"revision {step} declares compatible_with = {declared!r}, which is not "
                f"{step} or one of its ancestors"
            )
        oldest = position[declared] if index == 0 else min(oldest, position[declared])
        if index + 1 >= oldest:
            break
    return chain[oldest]


def _record_compatibility(connection: Connection, script: ScriptDirectory) -> None:
    """Write the marker for the revision the database is now at (after every migration run)."""
    current = current_revisions(connection)
    known = {step.revision for step in script.walk_revisions()}
    if len(current) != 1 or not current <= known:
        return  # nothing migrated yet, or a newer release's revision: it wrote the marker
    (revision,) = current
    if _COMPAT_SINCE not in _lineage(script, revision):
        return  # before the marker's table existed
    connection.execute(delete(_COMPAT))
    connection.execute(
        insert(_COMPAT).values(oldest_compatible_head=oldest_compatible_head(script, revision))
    )


def _read_compatibility(connection: Connection) -> str | None:
    if not inspect(connection).has_table(_COMPAT.name):
        return None
    return connection.execute(select(_COMPAT.c.oldest_compatible_head)).scalar()


class SchemaStatus(enum.Enum):
    AT_HEAD = "at head"
    #: No schema of ours yet, or an older revision: an upgrade brings it to head.
    BEHIND = "behind head"
    #: A newer release's revision that declares this release's code still usable on it.
    NEWER_COMPATIBLE = "newer, compatible"
    #: A newer release's revision that this release's code must not run on.
    NEWER_INCOMPATIBLE = "newer, incompatible"


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands relative to this release's migrations."""

    status: SchemaStatus
    #: The database's revisions (empty: no schema of ours).
    current: frozenset[str]
    #: This release's head.
    head: str
    #: For a newer schema, the oldest head it declares usable (None: it records none).
    oldest_compatible_head: str | None = None

    @property
    def is_newer(self) -> bool:
        """At a revision this release does not know (a newer release migrated it)."""
        return self.status in (SchemaStatus.NEWER_COMPATIBLE, SchemaStatus.NEWER_INCOMPATIBLE)

    @property
    def revision(self) -> str:
        return ", ".join(sorted(self.current)) or "base"

    def too_new(self, doing: str = "") -> SchemaTooNewError:
        """The error for running (or `doing` something) on this newer schema."""
        if doing:
            needs = f"this release cannot {doing} from a revision it does not know"
        elif self.oldest_compatible_head is None:
            needs = "the database records no compatibility marker"
        else:
            needs = (
                f"that schema needs slack_agents_sa code at revision "
                f"{self.oldest_compatible_head} or later"
            )
        return SchemaTooNewError(
            f"database schema is at revision {self.revision}, which this slack_agents_sa "
            f"(head {self.head}) does not know: a newer release migrated it, and {needs}. "
            f"Upgrade slack_agents_sa to a release whose migration head is {self.revision} "
            f"or later (CHANGELOG.md lists each release's head), or "
            f"downgrade the database to {self.head} with the newer release "
            f"(`slack-agents-sa downgrade {self.head}`)",
            database_revision=self.revision,
            head=self.head,
        )


def schema_state(connection: Connection, script: ScriptDirectory | None = None) -> SchemaState:
    """Where the database on `connection` stands (reads only; two small queries at head)."""
    script = script or _our_script()
    head = script.get_current_head()
    assert head is not None, "our migrations have one head"
    current = frozenset(current_revisions(connection))
    if current == {head}:
        return SchemaState(SchemaStatus.AT_HEAD, current, head)
    known = {step.revision for step in script.walk_revisions()}
    if current <= known:
        return SchemaState(SchemaStatus.BEHIND, current, head)
    marker = _read_compatibility(connection)
    usable = marker is not None and marker in _lineage(script, head)
    status = SchemaStatus.NEWER_COMPATIBLE if usable else SchemaStatus.NEWER_INCOMPATIBLE
    return SchemaState(status, current, head, marker)


async def read_schema_state(engine: AsyncEngine) -> SchemaState:
    """`schema_state` on a connection of `engine`: no lock (on SQLite, no write lock)."""
    async with engine.connect() as conn:
        return await conn.run_sync(schema_state)


def _usable_as_is(state: SchemaState) -> bool:
    """True when this release runs on the schema without migrating; raises when it never may."""
    if state.status is SchemaStatus.NEWER_INCOMPATIBLE:
        raise state.too_new()
    if state.status is SchemaStatus.NEWER_COMPATIBLE:
        logger.info(
            "slack_agents_sa: database schema is at revision %s, newer than this release's "
            "head %s; it declares code at %s or later compatible, so this release runs on it "
            "without migrating",
            state.revision,
            state.head,
            state.oldest_compatible_head,
        )
    return state.status is not SchemaStatus.BEHIND


# --- Running migrations -------------------------------------------------------------------


async def run_locked(
    engine: AsyncEngine,
    step: Callable[[Connection], None],
    schema: str | None,
    script: ScriptDirectory | None = None,
    lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S,
) -> None:
    """Run an Alembic step in one transaction, holding the migration locks, then record the
    compatibility marker of the revision it leaves (computed from `script`, default ours).

    The in-process lock (`in_process_migration_lock`) comes first, then the database's
    (`Backend.migration_transaction`): two migrators of one database in this process queue
    on the first and never hold the second while waiting. Each wait is bounded by
    `lock_timeout` (`MigrationLockError`).

    With a `schema` (the engine's search_path, see `PostgreSQL.engine_options`), the schema
    is created first; our tables and version table then land in it. On SQLite the step runs
    with foreign keys off and must pass `PRAGMA foreign_key_check`
    (see `Backend.migration_transaction`).
    """
    backend = backend_for(engine.dialect.name)
    async with (
        in_process_migration_lock(lock_timeout),
        backend.migration_transaction(engine, schema, lock_timeout) as conn,
    ):
        await conn.run_sync(step)
        await conn.run_sync(_record_compatibility, script or _our_script())


async def upgrade(
    engine: AsyncEngine,
    revision: str = "head",
    schema: str | None = None,
    *,
    lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S,
) -> None:
    """Migrate up to `revision`; concurrent callers queue on the locks and find nothing to do."""

    def step(connection: Connection) -> None:
        state = schema_state(connection)  # again, under the lock: another may have migrated
        if revision == "head" and _usable_as_is(state):
            return
        if state.is_newer:
            raise state.too_new(f"upgrade to {revision}")
        command.upgrade(alembic_config(connection), revision)

    await run_locked(engine, step, schema, lock_timeout=lock_timeout)


async def downgrade(
    engine: AsyncEngine, revision: str, *, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
) -> None:
    """Migrate down to `revision` ("base" removes every table of ours)."""

    def step(connection: Connection) -> None:
        state = schema_state(connection)
        if state.is_newer:
            raise state.too_new(f"downgrade to {revision}")
        command.downgrade(alembic_config(connection), revision)

    await run_locked(engine, step, None, lock_timeout=lock_timeout)


async def upgrade_to_head(engine: AsyncEngine, schema: str | None = None) -> None:
    """Bring the database to head (what `Provider.initialize()` does with `migrate: true`).

    At head, or on a newer compatible schema, this is one read: no lock is taken, so a
    healthcheck calling `initialize()` costs little and never queues behind a migrator.
    """
    if not _usable_as_is(await read_schema_state(engine)):
        await upgrade(engine, "head", schema)


async def require_head(engine: AsyncEngine) -> None:
    """Fail unless this release can run on the schema as it is (`migrate: false`)."""
    state = await read_schema_state(engine)
    if not _usable_as_is(state):
        found = ", ".join(sorted(state.current)) or "no slack_agents_sa schema"
        raise SchemaOutOfDateError(
            f"database schema is at {found}, but this slack_agents_sa needs "
            f"{state.head}: run `alembic upgrade head` "
            "(or `slack-agents-sa upgrade`), or set `migrate: true` in the storage options",
            database_revision=state.revision,
            head=state.head,
        )


def run_our_migrations(
    connection: Connection,
    revision: str = "head",
    *,
    lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S,
) -> None:
    """Upgrade our tables to `revision` on `connection`, from inside a host app's Alembic env.py.

    Our revisions and our version table only: the host's `alembic_version` and tables are
    never touched. Built on MigrationContext rather than Alembic's command API, because a
    command would replace the host environment's `alembic.context` while it is running.

    The transaction and any lock are the host's. On SQLite, foreign keys must be off on
    `connection` (SQLite's default; a pragma that does nothing inside a transaction, so we
    cannot switch it here): with them on, migrating an existing schema is refused rather
    than risk a table rebuild deleting rows through ON DELETE. The run ends with
    `PRAGMA foreign_key_check` (a `MigrationError` if it finds anything; the host's
    transaction then rolls back) and records the compatibility marker.

    When there is something to migrate it holds this process's migration lock (see
    `in_process_migration_lock`; `MigrationLockError` after `lock_timeout`), as `alembic.op`
    is process-wide. Under `run_sync` it waits without blocking the event loop.
    """
    script = _our_script()
    state = schema_state(connection, script)
    if revision == "head" and _usable_as_is(state):
        return
    if state.is_newer:
        raise state.too_new(f"upgrade to {revision}")
    backend = backend_for(connection.dialect.name)
    if state.current and backend.foreign_keys_enforced(connection):
        raise MigrationError(
            "slack_agents_sa migrations on SQLite need foreign keys off, and this connection "
            "enforces them: a migration that rebuilds a table would delete or null the rows "
            "referring to it. Run them on a connection without `PRAGMA foreign_keys = ON` "
            "(a plain create_async_engine one), or set it OFF before the transaction begins"
        )

    def steps(current: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs(revision, current)

    migration = MigrationContext.configure(
        connection,
        opts={
            "version_table": VERSION_TABLE,
            "fn": steps,
            "script": script,
            "render_as_batch": backend.migrates_in_batches,
        },
    )
    with in_process_migration_lock_sync(lock_timeout), Operations.context(migration):
        migration.run_migrations()
    backend.check_foreign_keys(connection)
    _record_compatibility(connection, script)
