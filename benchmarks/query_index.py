"""PostgreSQL `query` through its GIN index (migration 0008), against the read it replaced.

    .venv/bin/python -m benchmarks.query_index [--entries 100000] [--calls 40] [--writes 2000]

One scratch database; its namespace `tasks` gets `--entries` entries set and a tenth as many
appended items, and a second namespace as many entries again (they share the table and the
index), filled in bulk with plain SQL: task records as A2A keeps them (`task_id`,
`context_id`, `state`, a short nested history, 300-odd bytes of JSON), 1 in 100 `working`,
1 in 1,000 holding a control character (`\\u001b`, which jsonb reads) and 1 in 10,000 a NUL
(`\\u0000`: the index holds that document as null, and every query of its namespace reads
it). Through a provider on each executor:

- **before**: the index dropped (`downgrade 0007`), the statement `query` ran until
  0008 (every row of the namespace, a text search then `json_extract_path_text`), and the
  same decoding and comparing in Python as `query`;
- **after**: the index built (`upgrade`, timed), then `query` itself.

Filters: one entry (`{"context_id": "ctx-4242"}`) and 1 % (`{"state": "working"}`), in
`--calls` interleaved rounds (each: every filter on every executor) after a warm-up round;
then 99 % (`{"state": "completed"}`, where the index helps least) in a quarter as many (run
between the others, it cost the next native call 100 ms more). A garbage collection follows
each call, untimed: the 99 % call leaves 100,000 dicts behind. Then `set` and `append`,
`--writes` of each in a namespace of their own, twice (the second run's `set`s update the
first's entries, and count), without the index and with it. Prints Markdown tables and
ratios, never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    String,
    Text,
    bindparam,
    case,
    cast,
    false,
    func,
    null,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.bulk_sql import bulk_sql
from benchmarks.databases import chosen, empty_database
from slack_agents_sa import Provider
from slack_agents_sa.migrate import downgrade, upgrade
from slack_agents_sa.models import KeyValueEntry, ListItem, table_of
from slack_agents_sa.settings import normalize_url
from tests.reference import matches

NAMESPACE = "tasks"
EXECUTORS = ("native", "sqlalchemy")
#: Filter label -> filters: the selective ones, then the one matching nearly everything.
SELECTIVE: dict[str, dict[str, Any]] = {
    "one entry": {"context_id": "ctx-4242"},
    "1 %": {"state": "working"},
}
BROAD: dict[str, dict[str, Any]] = {"99 %": {"state": "completed"}}

_ENTRIES = table_of(KeyValueEntry)
_ITEMS = table_of(ListItem)
_TASK = (
    """'{{"task_id":"task-' || x || '","context_id":"ctx-' || x || '","state":"' || """
    """CASE WHEN x % 100 = 0 THEN 'working' ELSE 'completed' END || '","kind":"task",'"""
    """ || '"user_id":"U0' || (x % 50) || '","channel_id":"C042","history":[{{"role":"user",'"""
    """ || '"parts":[{{"kind":"text","text":"please look into ticket ' || x || ' for me"}}]}},'"""
    """ || '{{"role":"agent","parts":[{{"kind":"text","text":"on it"}}]}}],"attempts":' """
    """|| (x % 7) || CASE WHEN x % 1000 = 7 THEN ',"note":"\\u001b[1mbold"' """
    """WHEN x % 10000 = 3 THEN ',"note":"a\\u0000b"' ELSE '' END """
    """|| '}}'"""
)


def _before_statement(item_filters: int, entry_filters: int) -> CompoundSelect[Any]:
    """`query`'s statement on PostgreSQL before 0008: the namespace's rows, each document
    searched as text for the quoted value, then `json_extract_path_text` (skipped for one
    with a `\\u` escape, which that function cannot read)."""

    def narrowed(table: Any, side: str, count: int) -> list[Any]:
        document = table.c.value
        document_text = cast(document, Text)
        conditions = [table.c.namespace == bindparam("namespace", type_=String())]
        for index in range(count):
            field = bindparam(f"{side}_field_{index}", type_=String())
            value = bindparam(f"{side}_value_{index}", type_=String())
            quoted = func.concat('"', value, '"')
            conditions.append(
                case(
                    (
                        (func.strpos(document_text, quoted) == 0)
                        & (func.strpos(document_text, "\\") == 0),
                        false(),
                    ),
                    (func.strpos(document_text, "\\u") > 0, true()),
                    else_=func.json_extract_path_text(document, field) == value,
                )
            )
        return conditions

    items = select(_ITEMS.c.id, _ITEMS.c.key, _ITEMS.c.value).where(
        *narrowed(_ITEMS, "item", item_filters)
    )
    entries = select(null().label("id"), _ENTRIES.c.key, _ENTRIES.c.value).where(
        *narrowed(_ENTRIES, "entry", entry_filters)
    )
    return union_all(items, entries)


async def query_before(
    storage: Provider, namespace: str, filters: dict[str, Any]
) -> list[dict[str, Any]]:
    """`query` as it was before 0008: its statement, then the same work in Python."""
    item_filters = [(n, v) for n, v in filters.items() if n != "id" and isinstance(v, str)]
    entry_filters = [(n, v) for n, v in filters.items() if isinstance(v, str)]
    values: dict[str, Any] = {"namespace": namespace}
    for side, pairs in (("item", item_filters), ("entry", entry_filters)):
        for index, (name, wanted) in enumerate(pairs):
            values[f"{side}_field_{index}"] = name
            values[f"{side}_value_{index}"] = wanted
    stmt = _before_statement(len(item_filters), len(entry_filters))
    rows = await storage.db.fetch(stmt, values)
    appended = sorted((row for row in rows if row.id is not None), key=lambda row: row.id)
    stored = sorted((row for row in rows if row.id is None), key=lambda row: row.key)
    results = [{**row.value, "id": str(row.id)} for row in appended]
    results += [row.value for row in stored]
    return [value for value in results if matches(value, filters)]


async def fill(storage: Provider, entries: int) -> None:
    for namespace in (NAMESPACE, "other"):
        await bulk_sql(
            storage,
            "INSERT INTO agents_kv_entries (namespace, key, value, created_at, updated_at) "
            f"SELECT '{namespace}', 'task-' || x, ({_TASK}){{json}}, {{now}}, {{now}} "
            "FROM {series}",
            first=1,
            last=entries,
        )
    await bulk_sql(
        storage,
        "INSERT INTO agents_list_items (namespace, key, value, created_at) "
        f"SELECT '{NAMESPACE}', 'events-' || (x % 10), ({_TASK}){{json}}, {{now}} "
        "FROM {series}",
        first=1,
        last=entries // 10,
    )


async def vacuum(url: str) -> None:
    """VACUUM ANALYZE both tables, as autovacuum would have (on an engine of its own: a
    provider would migrate a database at 0007)."""
    engine = create_async_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("VACUUM ANALYZE agents_kv_entries"))
            await conn.execute(text("VACUUM ANALYZE agents_list_items"))
    finally:
        await engine.dispose()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered) + 0.5) - 1)]


Query = Callable[[Provider, str, dict[str, Any]], Awaitable[list[dict[str, Any]]]]
Samples = dict[tuple[str, str], list[float]]


async def measure_queries(providers: dict[str, Provider], call: Query, calls: int) -> Samples:
    """ms per call, by (filter, executor); round 0 of each phase warms up."""
    samples: Samples = {}
    found: dict[str, int] = {}
    for filters, rounds in ((SELECTIVE, calls), (BROAD, max(1, calls // 4))):
        for round_number in range(rounds + 1):
            for label, wanted in filters.items():
                for name, storage in providers.items():
                    started = time.perf_counter()
                    result = await call(storage, NAMESPACE, wanted)
                    elapsed = (time.perf_counter() - started) * 1000
                    found[label] = len(result)
                    if round_number > 0:
                        samples.setdefault((label, name), []).append(elapsed)
                    del result
                    gc.collect()
    print(f"  found: {found}", file=sys.stderr)
    return samples


async def measure_writes(storage: Provider, writes: int) -> dict[str, float]:
    """p50 and p95 µs of `set` and `append` in a namespace of their own (run it twice: the
    second run's `set`s update the first's entries)."""
    set_times, append_times = [], []
    for index in range(writes):
        value = {"task_id": f"w-{index}", "context_id": f"ctx-w-{index}", "state": "completed"}
        started = time.perf_counter()
        await storage.set("writes", f"w-{index}", value)
        set_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        await storage.append("writes", "events", value)
        append_times.append(time.perf_counter() - started)
    return {
        "set p50": _percentile(set_times, 0.5) * 1e6,
        "set p95": _percentile(set_times, 0.95) * 1e6,
        "append p50": _percentile(append_times, 0.5) * 1e6,
        "append p95": _percentile(append_times, 0.95) * 1e6,
    }


async def index_sizes(storage: Provider) -> str:
    async with storage.db.statement() as conn:
        rows = await conn.execute(
            text(
                "SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relname IN "
                "('agents_kv_entries', 'agents_list_items', "
                "'ix_agents_kv_entries_query', 'ix_agents_list_items_query')"
            )
        )
        return ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in sorted(rows))


def query_table(before: Samples, after: Samples) -> list[str]:
    lines = [
        "| filter | executor | before p50 | before p95 | after p50 | after p95 | "
        "p50 before / after |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, name in before:
        old, new = before[(label, name)], after[(label, name)]
        ratio = _percentile(old, 0.5) / _percentile(new, 0.5)
        lines.append(
            f"| {label} | {name} | {_percentile(old, 0.5):.1f} | {_percentile(old, 0.95):.1f} | "
            f"{_percentile(new, 0.5):.2f} | {_percentile(new, 0.95):.2f} | {ratio:.1f}x |"
        )
    return lines


async def run(url: str, args: argparse.Namespace) -> list[str]:
    providers: dict[str, Provider] = {}
    for name in EXECUTORS:
        providers[name] = Provider(url=url, executor=name)
        await providers[name].initialize()
    native = providers["native"]
    try:
        await downgrade(native.db.engine, "0007")
        started = time.perf_counter()
        await fill(native, args.entries)
        print(f"filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        await vacuum(url)
        print("before ...", file=sys.stderr)
        before = await measure_queries(providers, query_before, args.calls)
        writes_before = [await measure_writes(native, args.writes) for _ in range(2)]
        started = time.perf_counter()
        await upgrade(native.db.engine)
        built = time.perf_counter() - started
        await vacuum(url)
        sizes = await index_sizes(native)
        print("after ...", file=sys.stderr)

        async def query_after(
            storage: Provider, namespace: str, filters: dict[str, Any]
        ) -> list[dict[str, Any]]:
            return await storage.query(namespace, filters)

        after = await measure_queries(providers, query_after, args.calls)
        writes_after = [await measure_writes(native, args.writes) for _ in range(2)]
    finally:
        for storage in providers.values():
            await storage.close()
    lines = [
        f"### `query` over {args.entries:,} entries and {args.entries // 10:,} items "
        f"(ms; {args.calls} calls, 99 %: {max(1, args.calls // 4)})",
        "",
        *query_table(before, after),
        "",
        f"Index build (`upgrade` from 0007): {built:.1f} s. Sizes: {sizes}.",
        "",
        f"### Writes, native executor (µs; {args.writes:,} of each, the second of two runs)",
        "",
        "| | set p50 | set p95 | append p50 | append p95 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, runs in (("without the index", writes_before), ("with the index", writes_after)):
        figures = runs[-1]
        lines.append(
            f"| {label} | {figures['set p50']:.0f} | {figures['set p95']:.0f} | "
            f"{figures['append p50']:.0f} | {figures['append p95']:.0f} |"
        )
    return lines


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="entries (100,000)")
    parser.add_argument("--calls", type=int, default=40, help="calls of each query (40)")
    parser.add_argument("--writes", type=int, default=2_000, help="sets and appends (2,000)")
    args = parser.parse_args()
    if chosen("postgresql") is None:
        return 2
    async with empty_database("postgresql") as url:
        lines = await run(url, args)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
