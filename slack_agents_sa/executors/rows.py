"""The one row type every executor returns: tuples with the named access of SQLAlchemy's `Row`.

`rows_of(keys, raw_rows)` turns driver rows (native executors) or SQLAlchemy `Row`s (the
generic executor) into it, so the provider sees one type whichever executor runs: a tuple
(index, unpack, `len`, `==` with a plain tuple), `row.key`, `row._mapping["key"]`,
`row._fields`, `row._asdict()`, `row._t`. Keys are never renamed (`namedtuple(rename=True)`
turned `count(*)` into `_0`); a key that is not an identifier is reached through
`_mapping` or `getattr`. Of duplicate keys the first wins. A key that names one of the
row's own attributes (`count`, `index`, `_fields`, ...) stays the attribute, as on
SQLAlchemy's `Row`: reach that column through `_mapping`. A key of None (an unlabelled
expression) names nothing.

One class per tuple of keys, made once (cached): building a row is `tuple.__new__`, as
fast as a namedtuple's `_make`, on the hottest path (`get_message_blocks`).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

__all__ = ["NativeRow", "RowMapping", "row_class", "rows_of"]

#: namedtuple's C field accessor where CPython has one (a third faster to read than a
#: property); else a property.
_tuplegetter = getattr(collections, "_tuplegetter", None)


def _accessor(position: int) -> Any:
    if _tuplegetter is not None:
        return _tuplegetter(position, None)
    return property(itemgetter(position))  # pragma: no cover - CPython has _tuplegetter


class NativeRow(tuple[Any, ...]):
    """A row: a tuple whose columns are also attributes (`row.id`) and a mapping."""

    __slots__ = ()

    #: Every column's key, in order (duplicates kept; None keys left out, as on `Row`).
    _fields: tuple[str, ...] = ()
    #: Each key's column position: the first column of that key.
    _positions: Mapping[str, int] = {}
    #: The keys this class was made for (None included), to rebuild it when unpickled.
    _keys: tuple[str | None, ...] = ()

    @property
    def _mapping(self) -> RowMapping:
        """The row as a read-only mapping of key to value (`row._mapping["my col"]`)."""
        return RowMapping(self)

    def _asdict(self) -> dict[str, Any]:
        """A new dict of key to value (a duplicate key: its first column)."""
        return {key: self[position] for key, position in self._positions.items()}

    @property
    def _t(self) -> tuple[Any, ...]:
        """The values as a plain tuple (as `Row._t`)."""
        return tuple(self)

    def _tuple(self) -> tuple[Any, ...]:
        return tuple(self)

    if TYPE_CHECKING:  # each row class adds its keys as attributes

        def __getattr__(self, key: str) -> Any: ...

    def __reduce__(self) -> tuple[Any, ...]:
        # The class is made at run time: pickle its keys and values instead.
        return (_rebuilt, (self._keys, tuple(self)))


class RowMapping(Mapping[str, Any]):
    """A row's values by key (`row._mapping`), as SQLAlchemy's `RowMapping` for string keys."""

    __slots__ = ("_row",)

    def __init__(self, row: NativeRow) -> None:
        self._row = row

    def __getitem__(self, key: str) -> Any:
        return self._row[self._row._positions[key]]

    def __contains__(self, key: object) -> bool:
        return key in self._row._positions

    def __iter__(self) -> Iterator[str]:
        return iter(self._row._fields)

    def __len__(self) -> int:
        return len(self._row._fields)

    def __repr__(self) -> str:
        return repr(dict(self))


@functools.lru_cache(maxsize=4096)
def row_class(keys: tuple[str | None, ...]) -> type[NativeRow]:
    """The row class for columns named `keys` (made once per tuple of keys)."""
    positions: dict[str, int] = {}
    for position, key in enumerate(keys):
        if key is not None:
            positions.setdefault(key, position)
    namespace: dict[str, Any] = {
        "__slots__": (),
        "_fields": tuple(key for key in keys if key is not None),
        "_positions": positions,
        "_keys": keys,
    }
    for key, position in positions.items():
        if not hasattr(NativeRow, key):  # the row's own attributes win, as on `Row`
            namespace[key] = _accessor(position)
    return type("Row", (NativeRow,), namespace)


def rows_of(keys: Sequence[str | None], raw_rows: Iterable[Iterable[Any]]) -> list[NativeRow]:
    """`raw_rows` (driver rows, or SQLAlchemy `Row`s) as rows of columns named `keys`.

    On SQLAlchemy's path: `rows_of(result.keys(), result.all())`.
    """
    return list(map(row_class(tuple(keys)), raw_rows))


def _rebuilt(keys: tuple[str | None, ...], values: tuple[Any, ...]) -> NativeRow:
    return row_class(keys)(values)
