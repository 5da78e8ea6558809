"""Core statements compiled once per dialect into what a driver takes: SQL text, positional
values, and the type conversions SQLAlchemy would have applied.

Only documented SQLAlchemy API is used (`ClauseElement.compile`, `SQLCompiler.string`,
`positiontup`, `binds`, `insert_prefetch`, `update_prefetch`, `effective_returning`,
`construct_expanded_state`, `TypeEngine.dialect_impl` / `bind_processor` /
`result_processor`, `exported_columns`): projects that read `_result_columns` and the
cached processors broke on point releases (encode/databases#512).
"""

from __future__ import annotations

import logging
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ClauseElement
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter

type Processor = Callable[[Any], Any] | None

_echo_logger = logging.getLogger("sqlalchemy.engine.Engine")

#: Marks a value the caller must supply (no literal, no default).
_REQUIRED = object()


def _column_default(column: Any) -> Callable[[], Any]:
    """A zero-argument callable giving `column`'s Python-side default.

    Skipping SQLAlchemy's execution context skips these (encode/databases#72 inserted
    NULL), so they are applied here: callables are wrapped by SQLAlchemy to take a
    context, which a plain `default=utcnow` ignores.
    """
    default = column.default
    if default is None:
        return lambda: None
    if default.is_callable:
        arg = default.arg
        return lambda: arg(None)
    if default.is_scalar:
        value = default.arg
        return lambda: value
    raise NotImplementedError(f"column {column.key}: only scalar and callable defaults run here")


class CompiledStatement:
    """One statement compiled for one dialect and one set of supplied value names."""

    __slots__ = (
        "_columns",
        "_compiled",
        "_dialect",
        "_expanding",
        "_results",
        "_row",
        "_slots",
        "sql",
    )

    def __init__(
        self,
        stmt: ClauseElement,
        dialect: Dialect,
        names: frozenset[str],
        schema_translate_map: dict[str | None, str | None] | None = None,
    ) -> None:
        # A schema_translate_map is rendered into the text, as SQLAlchemy's path does per call.
        compiled = stmt.compile(
            dialect=dialect,
            column_keys=sorted(names),
            schema_translate_map=schema_translate_map,
            render_schema_translate=bool(schema_translate_map),
        )
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - DDL is not run here
            raise TypeError(f"not a SQL statement: {type(stmt).__name__}")
        self._compiled = compiled
        self.sql: str = compiled.string
        defaults = {
            column.key: _column_default(column)
            for column in (*compiled.insert_prefetch, *compiled.update_prefetch)
        }
        # Expanding IN lists and literal_execute values render per call (they are in the text).
        self._expanding = any(
            bind.expanding or bind.literal_execute for bind in compiled.binds.values()
        )
        # One slot per placeholder, in placeholder order (not `bind_names` order:
        # encode/databases#435); a name used twice shares one `$n` on asyncpg.
        self._slots: list[tuple[str, Any, Callable[[], Any] | None, Processor]] = []
        # Values given by bindparam(value=) and by .params() (which the binds do not hold).
        present = compiled.params
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            default = defaults.get(name) or bind.callable
            literal = present.get(name, bind.value)
            if literal is None and bind.required:
                literal = _REQUIRED
            self._slots.append((name, literal, default, _bind_processor(bind, dialect)))
        columns = _result_columns(stmt, compiled)
        self._row: Any = namedtuple("Row", [key for key, _ in columns], rename=True)  # type: ignore[misc]
        self._columns = columns
        self._dialect = dialect
        # Result conversions: known once the driver has said what it returns (`learn_types`).
        self._results: list[tuple[int, Processor]] | None = None

    @property
    def knows_result_types(self) -> bool:
        return self._results is not None

    def learn_types(self, coltypes: Sequence[Any] | None) -> None:
        """Pick each column's result processor, given the driver's type codes if it has them
        (asyncpg's OIDs: `Float` on asyncpg needs them; SQLite reports none)."""
        dialect = self._dialect
        processors = []
        for index, (_, type_) in enumerate(self._columns):
            coltype = coltypes[index] if coltypes is not None else None
            processor = type_.dialect_impl(dialect).result_processor(dialect, coltype)
            if processor is not None:
                processors.append((index, processor))
        self._results = processors

    def arguments(self, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and its positional values, converted for the driver."""
        if self._expanding:
            return self._expanded(values)
        arguments = []
        for name, literal, default, processor in self._slots:
            if name in values:
                value = values[name]
            elif default is not None:
                value = default()
            elif literal is _REQUIRED:
                raise KeyError(f"statement needs a value for {name!r}")
            else:
                value = literal
            arguments.append(value if processor is None else _processed(processor, value))
        return self.sql, arguments

    def _expanded(self, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        state = self._compiled.construct_expanded_state(dict(values), escape_names=False)
        arguments = []
        for name in state.positiontup or ():
            value = state.parameters[name]
            processor = state.processors.get(name)
            arguments.append(value if processor is None else _processed(processor, value))
        return state.statement, arguments

    def rows(self, raw_rows: Sequence[Sequence[Any]]) -> list[Any]:
        """Driver rows as named tuples (`row.id`, `row[0]`), values converted by their types."""
        make = self._row._make
        if self._results is None:
            self.learn_types(None)
        results = self._results
        if not results:
            return [make(row) for row in raw_rows]
        converted = []
        for raw in raw_rows:
            row = list(raw)
            for index, processor in results:
                row[index] = processor(row[index])  # type: ignore[misc]
            converted.append(make(row))
        return converted


def _processed(processor: Callable[[Any], Any], value: Any) -> Any:
    """`value` converted for the driver; a value its type refuses (not JSON, a naive
    datetime) raises as SQLAlchemy's path does, before anything is sent."""
    try:
        return processor(value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"cannot store value: {error}") from None


def _bind_processor(bind: BindParameter[Any], dialect: Dialect) -> Processor:
    # dialect_impl, so TypeDecorators and the dialect's own variants apply (gino#402).
    return bind.type.dialect_impl(dialect).bind_processor(dialect)


def _result_columns(stmt: ClauseElement, compiled: SQLCompiler) -> list[tuple[str, Any]]:
    if compiled.isinsert or compiled.isupdate or compiled.isdelete:
        returning = compiled.effective_returning or ()
        return [(str(column.key), column.type) for column in returning]
    exported = getattr(stmt, "exported_columns", None)
    if exported is None:  # pragma: no cover - every statement we run has them
        return []
    return [(str(column.key), column.type) for column in exported]


class StatementCache:
    """Compiled statements of one dialect, kept for as long as the statement object lives.

    The provider's statements are built once (module constants, or one per shape for
    `query`, export and upserts), so each is compiled once; a statement built per call
    would be compiled per call and forgotten with it. Literal values
    are only read from the statement they were compiled with, never from an older
    compilation (the stale-parameter bug of encode/databases).
    """

    def __init__(
        self,
        dialect: Dialect,
        echo: bool = False,
        schema_translate_map: dict[str | None, str | None] | None = None,
    ) -> None:
        self.dialect = dialect
        self._echo = echo
        self._translate = schema_translate_map
        self._by_statement: weakref.WeakKeyDictionary[
            ClauseElement, dict[frozenset[str], CompiledStatement]
        ] = weakref.WeakKeyDictionary()

    def get(self, stmt: ClauseElement, values: Mapping[str, Any]) -> CompiledStatement:
        names = frozenset(values)
        shapes = self._by_statement.get(stmt)
        if shapes is None:
            shapes = self._by_statement[stmt] = {}
        found = shapes.get(names)
        if found is None:
            found = shapes[names] = CompiledStatement(stmt, self.dialect, names, self._translate)
        if self._echo:
            # `echo: true` shows each statement on SQLAlchemy's own logger, values hidden.
            _echo_logger.info("%s\n[native executor] [parameters hidden]", found.sql)
        return found
