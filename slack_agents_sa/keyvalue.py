"""The host's six key-value primitives over two tables: `set` values and `append`ed lists."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from sqlalchemy import (
    BindParameter,
    CompoundSelect,
    String,
    bindparam,
    delete,
    insert,
    null,
    select,
    union_all,
)

from slack_agents_sa.backends import Backend
from slack_agents_sa.database import UsesDatabase
from slack_agents_sa.models import KEY_LENGTH, NAME_LENGTH, KeyValueEntry, ListItem, table_of
from slack_agents_sa.types import utcnow
from slack_agents_sa.validation import check_dict, check_text, storable_text


def _check_address(namespace: Any, key: Any) -> None:
    check_text("namespace", namespace, NAME_LENGTH)
    check_text("key", key, KEY_LENGTH)


def _with_id(item_id: int, value: dict[str, Any]) -> dict[str, Any]:
    value["id"] = str(item_id)
    return value


def _matches(value: dict[str, Any], filters: dict[str, Any]) -> bool:
    """The contract's equality: Python `==`, a missing field equal to None."""
    return all(value.get(name) == wanted for name, wanted in filters.items())


#: `query`'s sort keys: a row's id (appended items), its key (`set` values).
_ID = itemgetter(0)
_KEY = itemgetter(1)

_entries = table_of(KeyValueEntry)
_items = table_of(ListItem)
_ENTRY = (_entries.c.namespace == bindparam("namespace")) & (_entries.c.key == bindparam("key"))
_LIST = (_items.c.namespace == bindparam("namespace")) & (_items.c.key == bindparam("key"))
# Built once: on hot paths, building a statement costs more than running it.
_GET = select(_entries.c.value).where(_ENTRY)
_DELETE = delete(_entries).where(_ENTRY)
_APPEND = insert(_items)
_GET_LIST = select(_items.c.id, _items.c.value).where(_LIST).order_by(_items.c.id)
# An upsert keeps `created_at` and moves `updated_at`, which `prune_namespace` goes by.
_SET_SHAPE = (
    ("namespace", "key", "value", "created_at", "updated_at"),
    ("namespace", "key"),
    ("value", "updated_at"),
)


class KeyValueMethods(UsesDatabase):
    """get / set / delete / append / get_list / query."""

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        _check_address(namespace, key)
        rows = await self.db.fetch(_GET, {"namespace": namespace, "key": key})
        value: dict[str, Any] | None = rows[0].value if rows else None
        return value

    async def set(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        _check_address(namespace, key)
        check_dict("value", value)
        stmt = self.db.backend.upsert(KeyValueEntry, *_SET_SHAPE)
        now = utcnow()
        values = {"namespace": namespace, "key": key, "value": value}
        await self.db.write(stmt, {**values, "created_at": now, "updated_at": now})

    async def delete(self, namespace: str, key: str) -> None:
        _check_address(namespace, key)
        await self.db.write(_DELETE, {"namespace": namespace, "key": key})

    async def append(self, namespace: str, key: str, item: dict[str, Any]) -> str:
        _check_address(namespace, key)
        check_dict("item", item)
        values = {"namespace": namespace, "key": key, "value": item}
        return str(await self.db.insert_id(_APPEND, values))

    async def get_list(self, namespace: str, key: str) -> list[dict[str, Any]]:
        _check_address(namespace, key)
        rows = await self.db.fetch(_GET_LIST, {"namespace": namespace, "key": key})
        return [_with_id(row.id, row.value) for row in rows]

    async def query(self, namespace: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """Appended items in insertion order, then `set` values by key, that equal `filters`.

        Rows are narrowed in SQL by namespace and, where the dialect allows, by string-valued
        filters (field names bound as data); the equality that decides is Python's, on the
        decoded values, which is what makes the result identical on every dialect.
        """
        check_text("namespace", namespace, NAME_LENGTH)
        check_dict("filters", filters)
        # An appended item's "id" is its row id, not a stored field: never pre-filter on it.
        item_filters = _prefilterable({n: v for n, v in filters.items() if n != "id"})
        entry_filters = _prefilterable(filters)
        stmt = _query_statement(self.db.backend, len(item_filters), len(entry_filters))
        values: dict[str, Any] = {"namespace": namespace}
        for side, pairs in (("item", item_filters), ("entry", entry_filters)):
            for index, (name, wanted) in enumerate(pairs):
                values[f"{side}_field_{index}"] = name
                values[f"{side}_value_{index}"] = wanted
        rows = await self.db.fetch(stmt, values)
        # The hot path of a large namespace: no call per row that a C-level loop can do.
        appended = [row for row in rows if row[0] is not None]
        stored = [row for row in rows if row[0] is None] if len(appended) < len(rows) else []
        appended.sort(key=_ID)
        stored.sort(key=_KEY)
        results = [_with_id(item_id, value) for item_id, _, value in appended]
        results += [row[2] for row in stored]
        if not filters:
            return results
        return [value for value in results if _matches(value, filters)]


def _prefilterable(filters: dict[str, Any]) -> list[tuple[str, str]]:
    """The filters SQL can pre-filter on: string names and values a text parameter carries."""
    return [
        (name, wanted)
        for name, wanted in filters.items()
        if isinstance(name, str)
        and isinstance(wanted, str)
        and storable_text(name)
        and storable_text(wanted)
    ]


#: `query` statements by backend and number of pre-filters: built once, like the others.
_QUERIES: dict[tuple[Backend, int, int], CompoundSelect[Any]] = {}


def _query_statement(
    backend: Backend, item_filters: int, entry_filters: int
) -> CompoundSelect[Any]:
    """Items then entries of a namespace, each narrowed by that many pre-filters as the
    backend can (`Backend.key_value_rows`): every name and value a bound parameter."""
    key = (backend, item_filters, entry_filters)
    found = _QUERIES.get(key)
    if found is None:
        namespace = bindparam("namespace", type_=String())
        items = select(_items.c.id, _items.c.key, _items.c.value).where(
            backend.key_value_rows(_items, namespace, _pairs("item", item_filters))
        )
        entries = select(null().label("id"), _entries.c.key, _entries.c.value).where(
            backend.key_value_rows(_entries, namespace, _pairs("entry", entry_filters))
        )
        found = _QUERIES[key] = union_all(items, entries)
    return found


def _pairs(side: str, count: int) -> list[tuple[BindParameter[str], BindParameter[str]]]:
    return [
        (
            bindparam(f"{side}_field_{index}", type_=String()),
            bindparam(f"{side}_value_{index}", type_=String()),
        )
        for index in range(count)
    ]


__all__ = ["KeyValueMethods"]
