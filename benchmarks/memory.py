"""Peak RSS of a process running the benchmark workload on one contender.

    .venv/bin/python -m benchmarks.memory --contender native|sqlalchemy|builtin \\
        --backend sqlite|postgresql|mysql [--database PATH_OR_URL] [--rounds N]

Run in a fresh process per contender (`measure` does that for `benchmarks.compare`): it
imports the contender's module and builds the provider, notes `ru_maxrss` (the baseline),
then starts it, fills the query namespace, runs `rounds` rounds of every workload group,
closes it, and prints a JSON line with the baseline and the final `ru_maxrss` (the peak),
in KiB. Drivers, executors and migrations the provider loads when it starts count as
growth. `--database` is a SQLite file path or a server database URL (an empty database);
without it, SQLite runs in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _check_not_inherited(maxrss_kib: int) -> None:
    """Warn when ru_maxrss exceeds this process's own high-water mark (VmHWM)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1])
            if maxrss_kib > own * 1.05 + 1024:
                print(
                    f"warning: ru_maxrss {maxrss_kib} KiB > VmHWM {own} KiB: inherited from "
                    "the launching process (start this from a shell)",
                    file=sys.stderr,
                )


async def _child(contender: str, backend_key: str, database: str, rounds: int) -> dict[str, int]:
    from benchmarks.contenders import BACKENDS, CONTENDER_KEYS, executor_kind, make_storage
    from benchmarks.workload import GROUPS, fill_query_namespace

    backend = BACKENDS[backend_key]
    storage = make_storage(backend, CONTENDER_KEYS[contender], database)
    baseline = _maxrss_kib()
    await storage.initialize()
    kind = executor_kind(storage)
    try:
        await fill_query_namespace(storage)
        for round_number in range(rounds):
            for run in GROUPS.values():
                await run(storage, round_number)
    finally:
        await storage.close()
    print(f"  memory: {backend.title}, {contender} ({kind}) done", file=sys.stderr, flush=True)
    peak = _maxrss_kib()
    _check_not_inherited(peak)
    return {"baseline_kib": baseline, "peak_kib": peak}


async def measure(backend_key: str, rounds: int) -> dict[str, dict[str, int]]:
    """Baseline and peak RSS (KiB) of each contender, each in a fresh subprocess."""
    from benchmarks.contenders import BACKENDS, CONTENDER_KEYS, database_urls

    backend = BACKENDS[backend_key]
    keys = [key for key, name in CONTENDER_KEYS.items() if name in backend.contenders()]
    results: dict[str, dict[str, int]] = {}
    async with database_urls(backend, len(keys)) as databases:
        for key, database in zip(keys, databases, strict=True):
            # Through a shell that forks: a process exec'd straight from this one would
            # inherit this process's ru_maxrss (Linux keeps it across execve).
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                '"$@"; exit $?',
                "sh",
                sys.executable,
                "-m",
                "benchmarks.memory",
                "--contender",
                key,
                "--backend",
                backend_key,
                "--database",
                database,
                "--rounds",
                str(rounds),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
            )
            stdout, _ = await process.communicate()
            if process.returncode:
                print(f"  memory: {key} on {backend_key} failed", file=sys.stderr, flush=True)
                continue
            results[CONTENDER_KEYS[key]] = json.loads(stdout.decode().strip().splitlines()[-1])
    return results


def report(backend_key: str, results: dict[str, dict[str, int]]) -> str:
    from benchmarks.contenders import BACKENDS

    backend = BACKENDS[backend_key]
    reference = results.get(backend.reference, {}).get("peak_kib")
    lines = [
        f"#### {backend.title}",
        "",
        f"| contender | RSS after imports (MiB) | peak RSS (MiB) | growth (MiB) "
        f"| peak / {backend.reference} |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in backend.contenders():
        figures = results.get(name)
        if figures is None:
            lines.append(f"| {name} | failed | | | |")
            continue
        baseline, peak = figures["baseline_kib"] / 1024, figures["peak_kib"] / 1024
        ratio = f"{figures['peak_kib'] / reference:.2f}" if reference else "n/a"
        lines.append(f"| {name} | {baseline:.1f} | {peak:.1f} | {peak - baseline:.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", choices=["native", "sqlalchemy", "builtin"], required=True)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "mysql"], required=True)
    parser.add_argument("--database", help="SQLite file path or server database URL")
    parser.add_argument("--rounds", type=int, default=3, help="workload rounds (default 3)")
    args = parser.parse_args()
    if args.database is None and args.backend != "sqlite":
        parser.error("--database is required for a server backend")
    with tempfile.TemporaryDirectory(prefix="sa-memory-") as folder:
        database = args.database or str(Path(folder) / "bench.db")
        figures = asyncio.run(_child(args.contender, args.backend, database, args.rounds))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
