"""Core statements compiled once per dialect into what a driver takes: SQL text, positional
values, and the type conversions SQLAlchemy would have applied.

Documented SQLAlchemy API only (`ClauseElement.compile` and `SQLCompiler`'s `cache_key`,
`string`, `positiontup`, `binds`, `params`, `escaped_bind_names`, `construct_params`,
`construct_expanded_state`, `insert_prefetch`, `update_prefetch`, `effective_returning`;
`CacheKey`; `TypeEngine.dialect_impl` / `bind_processor` / `result_processor`), plus
`_generate_cache_key()`, the way to a statement's `CacheKey` that SQLAlchemy's docs show
("Enabling Caching Support for Custom Constructs"): projects that read `_result_columns`
and the cached processors broke on point releases (encode/databases#512).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import BindParameter, ClauseElement, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import CacheKey

from slack_agents_sa.executors.errors import invalid_value
from slack_agents_sa.executors.rows import NativeRow, row_class, rows_of

__all__ = ["CompiledStatement", "NativeRow", "StatementForm", "rows_of"]

type Processor = Callable[[Any], Any] | None
type Values = Mapping[str, Any]
type Translate = dict[str | None, str | None] | None
#: A placeholder's name, literal value, Python-side default, and bind processor.
type Slot = tuple[str, Any, Callable[[], Any] | None, Processor]


#: From this many rows, results are converted column by column (transposing costs more
#: than it saves on a few rows).
_MANY_ROWS = 16

#: Marks a value the caller must supply (no literal, no default).
_REQUIRED = object()


def _python_default(default: Any, column: Any) -> Callable[[], Any] | None:
    """A zero-argument callable giving a column's Python-side `default=` (INSERT) or
    `onupdate=` (UPDATE).

    Skipping SQLAlchemy's execution context skips these (encode/databases#72 inserted
    NULL), so they are applied here: callables are wrapped by SQLAlchemy to take a
    context, which a plain `default=utcnow` ignores.
    """
    if default is None:
        return None
    if default.is_callable:
        arg = default.arg
        return lambda: arg(None)
    if default.is_scalar:
        value = default.arg
        return lambda: value
    raise NotImplementedError(f"column {column.key}: only scalar and callable defaults run here")


class _Position:
    """Stands in for a statement's n-th extracted bind value (see `_positions`)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def _positions(compiled: SQLCompiler, cache_key: CacheKey | None) -> dict[str, int]:
    """Each placeholder's position among the cache key's bind parameters.

    Statements with one cache key compile to one SQL text; their literal values differ
    and line up by position in `CacheKey.bindparams` (note 4 of native-executor-notes).
    SQLAlchemy relates its compiled binds to those positions in `construct_params(
    extracted_parameters=...)`: asked with stand-in values carrying their position, it
    tells each placeholder's. A required bind (no value of its own) is matched by its
    name, which the cache key holds.
    """
    if cache_key is None or not cache_key.bindparams:
        return {}
    extracted = cache_key.bindparams
    stand_ins: list[BindParameter[Any]] = [
        BindParameter(None, _Position(n)) for n in range(len(extracted))
    ]
    required = {bind.key: _REQUIRED for bind in compiled.binds.values() if bind.required}
    found = compiled.construct_params(
        required or None, extracted_parameters=stand_ins, escape_names=False
    )
    positions: dict[str, int] = {}
    for name, value in found.items():
        if isinstance(value, _Position):
            positions[name] = value.n
        elif value is _REQUIRED:
            key = compiled.binds[name].key
            for n, bind in enumerate(extracted):
                if bind.key == key:
                    positions[name] = n
                    break
    return positions


class StatementForm:
    """One compilation, shared by every statement of one cache key and set of value names."""

    def __init__(
        self,
        stmt: ClauseElement,
        dialect: Dialect,
        names: frozenset[str],
        translate: Translate,
        cache_key: CacheKey | None,
    ) -> None:
        # A schema_translate_map is rendered into the text, as SQLAlchemy's path does per call.
        compiled = stmt.compile(
            dialect=dialect,
            cache_key=cache_key,
            column_keys=sorted(names),
            schema_translate_map=translate,
            render_schema_translate=bool(translate),
        )
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - DDL is not run here
            raise TypeError(f"not a SQL statement: {type(stmt).__name__}")
        self.compiled = compiled
        self.sql: str = compiled.string
        self.key: tuple[Any, ...] | None = None  # set by the cache: its lookup key
        self.users: set[int] = set()  # ids of the statements the cache binds to this form
        self._dialect = dialect
        # INSERT applies `default=`, UPDATE `onupdate=` (as SQLAlchemy's execution context).
        defaults = {c.key: _python_default(c.default, c) for c in compiled.insert_prefetch}
        defaults |= {c.key: _python_default(c.onupdate, c) for c in compiled.update_prefetch}
        # Expanding IN lists and literal_execute values render per call (they are in the text).
        self.expanding = any(
            bind.expanding or bind.literal_execute for bind in compiled.binds.values()
        )
        # One slot per placeholder, in placeholder order (not `bind_names` order:
        # encode/databases#435); a name used twice shares one `$n` on asyncpg.
        names_in_order = compiled.positiontup or []
        if self.expanding:
            names_in_order = list(dict.fromkeys(names_in_order))
        positions = _positions(compiled, cache_key)
        self.slots = [
            (
                name,
                positions.get(name, -1),
                compiled.binds[name],
                defaults.get(name),
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in names_in_order
        ]
        columns = _result_columns(stmt, compiled)
        self.types = [type_ for _, type_ in columns]
        self.row = row_class(tuple(key for key, _ in columns))
        # Result conversions: known once the driver has said what it returns (`learn_types`).
        self.results: list[tuple[int, Processor]] | None = None

    def learn_types(self, coltypes: Sequence[Any] | None) -> None:
        dialect = self._dialect
        processors = []
        for index, type_ in enumerate(self.types):
            coltype = coltypes[index] if coltypes is not None else None
            processor = type_.dialect_impl(dialect).result_processor(dialect, coltype)
            if processor is not None:
                processors.append((index, processor))
        self.results = processors

    def bound(self, cache_key: CacheKey | None) -> list[Slot]:
        """The slots with the literal values of the statement whose key is `cache_key`
        (None: the statement compiled, which has no cache key)."""
        if cache_key is None:
            # `.params()` values on SQLAlchemy 2.1 (sqlalchemy#7066) are only in `params`.
            present, escaped = self.compiled.params, self.compiled.escaped_bind_names
            given = {}
            for name, _, own, _, _ in self.slots:
                value = present.get(escaped.get(name, name), own.value)
                if value is not own.value and own.callable is None:
                    given[name] = value
            extracted: Sequence[BindParameter[Any]] = ()
        else:
            # SQLAlchemy 2.1 carries `.params()` values in the key (`CacheKey.params`).
            given = dict(getattr(cache_key, "params", None) or {})
            extracted = cache_key.bindparams
        slots: list[Slot] = []
        for name, position, own, default, processor in self.slots:
            bind = extracted[position] if position >= 0 else own
            if name in given or bind.key in given:
                literal = given[name] if name in given else given[bind.key]
            elif bind.callable is not None:
                literal, default = None, default or bind.callable
            elif bind.required:
                literal = _REQUIRED
            else:
                literal = bind.value
            slots.append((name, literal, default, processor))
        return slots


class CompiledStatement:
    """One statement compiled for one dialect and one set of supplied value names, with the
    literal values of that statement object (equal statements share the compilation)."""

    __slots__ = ("_form", "_slots", "sql")

    def __init__(
        self,
        stmt: ClauseElement,
        dialect: Dialect,
        names: frozenset[str],
        schema_translate_map: Translate = None,
    ) -> None:
        cache_key = stmt._generate_cache_key()
        self._bind(StatementForm(stmt, dialect, names, schema_translate_map, cache_key), cache_key)

    def _bind(self, form: StatementForm, cache_key: CacheKey | None) -> None:
        self._form = form
        self._slots = form.bound(cache_key)
        self.sql: str = form.sql

    @classmethod
    def _of(cls, form: StatementForm, cache_key: CacheKey | None) -> CompiledStatement:
        found = cls.__new__(cls)
        found._bind(form, cache_key)
        return found

    @property
    def knows_result_types(self) -> bool:
        return self._form.results is not None

    def learn_types(self, coltypes: Sequence[Any] | None) -> None:
        """Pick each column's result processor, given the driver's type codes if it has them
        (asyncpg's OIDs: `Float` on asyncpg needs them; SQLite reports none)."""
        self._form.learn_types(coltypes)

    def arguments(self, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and its positional values, converted for the driver."""
        if self._form.expanding:
            return self._expanded(values)
        arguments = []
        for name, literal, default, processor in self._slots:
            if name in values:
                value = values[name]
            elif default is not None:
                value = default()
            elif literal is _REQUIRED:
                raise _missing(name, self.sql)
            else:
                value = literal
            arguments.append(value if processor is None else _processed(processor, value))
        return self.sql, arguments

    def _expanded(self, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        # Every value given (never the compiled statement's own literals: they are stale).
        params = {name: _value(name, lit, default, values) for name, lit, default, _ in self._slots}
        state = self._form.compiled.construct_expanded_state(params, escape_names=False)
        arguments = []
        for name in state.positiontup or ():
            value = state.parameters[name]
            processor = state.processors.get(name)
            arguments.append(value if processor is None else _processed(processor, value))
        return state.statement, arguments

    def rows(self, raw_rows: Sequence[Sequence[Any]]) -> list[NativeRow]:
        """Driver rows as `NativeRow`s (`row.id`, `row[0]`), values converted by their types."""
        form = self._form
        make = form.row
        if form.results is None:
            form.learn_types(None)
        results = form.results or ()
        if not results:
            return list(map(make, raw_rows))
        if len(raw_rows) >= _MANY_ROWS:
            # Column by column: each conversion is one `map` over its column, in C.
            columns: list[Iterable[Any]] = list(zip(*raw_rows, strict=True))
            for index, processor in results:
                columns[index] = map(processor, columns[index])  # type: ignore[arg-type]
            return list(map(make, zip(*columns, strict=True)))
        converted = []
        for raw in raw_rows:
            row = list(raw)
            for index, processor in results:
                row[index] = processor(row[index])  # type: ignore[misc]
            converted.append(make(row))
        return converted


def _value(name: str, literal: Any, default: Callable[[], Any] | None, values: Values) -> Any:
    """A placeholder's value: the call's, else its default's, else the statement's own."""
    if name in values:
        return values[name]
    if default is not None:
        return default()
    if literal is _REQUIRED:
        raise _missing(name, None)
    return literal


def _missing(name: str, sql: str | None) -> exc.StatementError:
    """The error SQLAlchemy's own path raises for a placeholder given no value."""
    cause = exc.InvalidRequestError(f"A value is required for bind parameter {name!r}")
    return exc.StatementError(str(cause), sql, None, cause)


def _processed(processor: Callable[[Any], Any], value: Any) -> Any:
    """`value` converted for the driver; a value its type refuses (not JSON, a naive
    datetime) raises as SQLAlchemy's path does, before anything is sent."""
    try:
        return processor(value)
    except (TypeError, ValueError) as error:
        raise invalid_value(error) from None


def _result_columns(stmt: ClauseElement, compiled: SQLCompiler) -> list[tuple[str | None, Any]]:
    if compiled.isinsert or compiled.isupdate or compiled.isdelete:
        returning = compiled.effective_returning or ()
        return [(column.key, column.type) for column in returning]
    exported = getattr(stmt, "exported_columns", None)
    if exported is None:  # pragma: no cover - every statement we run has them
        return []
    return [(column.key, column.type) for column in exported]
