"""Ours against the host's built-in providers: per workload group, per call, and memory.

    .venv/bin/python -m benchmarks.compare [--backend sqlite|postgresql|mysql|all]
        [--rounds N] [--calls N] [--only groups|calls|memory] [--primitives]

Contenders (benchmarks.contenders): ours on the native executor, ours on SQLAlchemy's
generic executor, and the host's built-in provider of the same database (SQLite file,
PostgreSQL); on MariaDB, which has no built-in provider, native against generic.

- **groups**: each round runs every operation group of `benchmarks.workload` on each
  contender in turn, the order alternating round by round; the first round warms up and
  is not counted. Median time of each group, ratios to the reference, and the targets.
  `--primitives` adds ours with every domain method left to the host base class's defaults.
- **calls**: wall time per call of the hot calls at 1 and 8 concurrent tasks
  (benchmarks.per_call), medians of interleaved rounds after a warm-up round.
- **memory**: peak RSS of a fresh process running the workload on each contender
  (benchmarks.memory).

Tables go to stdout as Markdown; progress to stderr. Server databases are scratch databases
on the servers SLACK_AGENTS_SA_TEST_POSTGRES_URL and SLACK_AGENTS_SA_TEST_MYSQL_URL name.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from slack_agents.storage.base import BaseStorageProvider

from benchmarks import memory, per_call
from benchmarks.contenders import (
    BACKENDS,
    BUILTIN,
    GENERIC,
    MYSQL,
    NATIVE,
    POSTGRESQL,
    SQLITE,
    Backend,
    started_contenders,
)
from benchmarks.workload import GROUPS, describe, fill_query_namespace

#: Group targets of the native executor against the built-in provider: (total, any group).
GROUP_TARGETS = {"postgresql": (0.7, 1.0), "sqlite": (0.5, 1.0)}
#: Per-call target of the native executor against the generic one on MariaDB.
MYSQL_CALL_TARGET = 0.4
MEMORY_ROUNDS = 3

Times = dict[str, dict[str, list[float]]]


async def measure_groups(backend: Backend, rounds: int, primitives: bool) -> Times:
    """Seconds per group per contender per counted round."""
    names = backend.contenders(primitives)
    times: Times = {name: {group: [] for group in [*GROUPS, "total"]} for name in names}
    async with started_contenders(backend, names, fill_query_namespace) as contenders:
        for round_number in range(rounds + 1):
            for name in names if round_number % 2 else names[::-1]:
                storage: BaseStorageProvider = contenders[name]
                total = 0.0
                for group, run in GROUPS.items():
                    started = time.perf_counter()
                    await run(storage, round_number)
                    elapsed = time.perf_counter() - started
                    total += elapsed
                    if round_number:  # round 0 warms up
                        times[name][group].append(elapsed)
                if round_number:
                    times[name]["total"].append(total)
            print(
                f"  {backend.title} groups: round {round_number}/{rounds} done",
                file=sys.stderr,
                flush=True,
            )
    return times


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report_groups(backend: Backend, times: Times) -> str:
    names = list(times)
    reference = backend.reference
    others = [name for name in names if name != reference]

    def median_ms(name: str, group: str) -> float:
        return statistics.median(times[name][group]) * 1000

    lines = [
        f"#### {backend.title}",
        "",
        "| group | "
        + " | ".join(f"{name} (ms)" for name in names)
        + " | "
        + " | ".join(f"{name} / {reference}" for name in others)
        + " |",
        "|---|" + "---:|" * (len(names) + len(others)),
    ]
    native_ratios: dict[str, float] = {}
    for group in [*GROUPS, "total"]:
        medians = {name: median_ms(name, group) for name in names}
        ratios = {name: medians[name] / medians[reference] for name in others}
        native_ratios[group] = ratios[NATIVE]
        label = f"**{group}**" if group == "total" else group
        cells = [f"{medians[name]:.1f}" for name in names] + [
            f"{ratios[name]:.2f}" for name in others
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    targets = GROUP_TARGETS.get(backend.key)
    if targets is not None:
        total_limit, group_limit = targets
        total = native_ratios.pop("total")
        worst_group = max(native_ratios, key=lambda group: native_ratios[group])
        worst = native_ratios[worst_group]
        lines += [
            "",
            f"| target ({NATIVE}) | figure | result |",
            "|---|---:|---|",
            f"| total ≤ {total_limit}x {reference} | {total:.2f}x | {_met(total <= total_limit)} |",
            f"| no group above {group_limit}x {reference} | {worst:.2f}x ({worst_group}) "
            f"| {_met(worst <= group_limit)} |",
        ]
    return "\n".join(lines)


def _backends(choice: str) -> list[Backend]:
    if choice == "all":
        return [SQLITE, POSTGRESQL, MYSQL]
    return [BACKENDS[choice]]


def _available(backend: Backend) -> bool:
    if backend.env_var is None or backend.server_url:
        return True
    print(f"skipping {backend.title}: set {backend.env_var}", file=sys.stderr)
    return False


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql", "mysql", "all"], default="all"
    )
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (default 5)")
    parser.add_argument(
        "--calls", type=int, default=320, help="calls per per-call measurement (default 320)"
    )
    parser.add_argument("--only", choices=["groups", "calls", "memory"])
    parser.add_argument(
        "--primitives",
        action="store_true",
        help="add ours with the domain methods left to the host base class (groups)",
    )
    args = parser.parse_args()
    backends = [backend for backend in _backends(args.backend) if _available(backend)]
    if not backends:
        return 2
    started = time.perf_counter()
    if args.only in (None, "groups"):
        print(f"### Per workload group\n\nworkload per round: {describe()}; ", end="")
        print(f"medians of {args.rounds} rounds; {NATIVE} and {GENERIC} against ", end="")
        print(f"{BUILTIN} (on MariaDB, {NATIVE} against {GENERIC})\n")
        for backend in backends:
            print(f"{backend.title}: groups ...", file=sys.stderr, flush=True)
            times = await measure_groups(backend, args.rounds, args.primitives)
            print(report_groups(backend, times) + "\n", flush=True)
    if args.only in (None, "calls"):
        print("### Per call\n")
        print(
            f"wall time per call (µs), {args.calls} calls per measurement split over the "
            f"tasks (half for get_message_blocks); medians of {args.rounds} rounds\n"
        )
        for backend in backends:
            print(f"{backend.title}: calls ...", file=sys.stderr, flush=True)
            call_times = await per_call.measure(backend, args.rounds, args.calls)
            target = MYSQL_CALL_TARGET if backend is MYSQL else None
            print(per_call.report(backend, call_times, target) + "\n", flush=True)
    if args.only in (None, "memory"):
        print("### Memory\n")
        print(
            "ru_maxrss of a fresh process per contender: after imports and building the "
            "provider, and at the end of the workload (query namespace filled, "
            f"{MEMORY_ROUNDS} rounds of every group)\n"
        )
        for backend in backends:
            print(f"{backend.title}: memory ...", file=sys.stderr, flush=True)
            results = await memory.measure(backend.key, MEMORY_ROUNDS)
            print(memory.report(backend.key, results) + "\n", flush=True)
    print(f"done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
