"""Resident memory of an agent process with its storage provider started, ours against built-in.

    .venv/bin/python -m benchmarks.agent_rss [--backend sqlite|postgresql|all] [--rounds N]
        [--json]

Each measurement is a fresh child process (a new interpreter, exec'd, so it shares no pages
with this one; VmRSS and VmHWM are per address space and restart at exec) that imports what
`slack_agents.main` and the Slack agent import before storage (config, observability, the
Slack layer, the Anthropic LLM provider), reads VmRSS, then builds the provider the way the
host does (`slack_agents.config.load_plugin` on the `storage: {type: ...}` config), awaits
`initialize()` on a database already at head, runs a few host-contract calls so the driver
and its statements are warm, and reads VmRSS and VmHWM again. What an operator sees is the
RSS after: ours should stay within 1.25x of the host's own provider of the same database.

The parent prepares each database first (one `initialize()` in a separate process, so
migrations or the built-in schema script are not measured), alternates the contenders round
by round, and prints medians. PostgreSQL uses the server SLACK_AGENTS_SA_BENCH_POSTGRES_URL
names (default postgresql://postgres@127.0.0.1:5432/rss_bench): databases `<name>_builtin`
and `<name>_ours` there are dropped and recreated at start, and dropped at the end. Our
package is byte-compiled first, as a wheel install is (the host's modules are).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "SLACK_AGENTS_SA_BENCH_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/rss_bench"
BUILTIN_TYPES = {
    "sqlite": "slack_agents.storage.sqlite",
    "postgresql": "slack_agents.storage.postgres",
}
CONTENDERS = ("builtin", "ours")
TARGET = 1.25


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def storage_config(contender: str, backend: str, database: str) -> dict[str, Any]:
    """The `storage:` section of an agent's config.yaml for `contender` on `database`."""
    if contender == "ours":
        url = f"sqlite+aiosqlite:///{database}" if backend == "sqlite" else database
        return {"type": "slack_agents_sa", "url": url}
    key = "path" if backend == "sqlite" else "url"  # the built-ins' constructor arguments
    return {"type": BUILTIN_TYPES[backend], key: database}


async def _child(config: dict[str, Any], modules: bool) -> dict[str, Any]:
    import gc

    import slack_agents.llm.anthropic
    import slack_agents.main
    import slack_agents.slack.agent  # noqa: F401
    from slack_agents.config import load_plugin

    gc.collect()
    before = _status_kib("VmRSS")
    options = dict(config)
    storage = load_plugin(options.pop("type"), **options)  # as SlackAgent._init_storage
    await storage.initialize()
    try:
        for index in range(5):
            await storage.set("bench", f"key-{index}", {"index": index, "text": "x" * 200})
            await storage.get("bench", f"key-{index}")
        conversation = await storage.get_or_create_conversation("agent", "C1", "1.0", "general")
        message = await storage.create_message(conversation, "U1", "User", "user")
        await storage.append_text_block(message, "hello", is_user=True)
        await storage.get_message_blocks(conversation)
        await storage.upsert_heartbeat("agent", 1.0)
        await storage.get_heartbeat("agent")
        gc.collect()
        figures: dict[str, Any] = {
            "before_kib": before,
            "after_kib": _status_kib("VmRSS"),
            "hwm_kib": _status_kib("VmHWM"),
        }
        if modules:
            figures["modules"] = sorted(sys.modules)
    finally:
        await storage.close()
    return figures


def run_child(config: dict[str, Any], modules: bool = False) -> dict[str, Any]:
    """One measurement in a fresh interpreter."""
    command = [sys.executable, "-m", "benchmarks.agent_rss", "--child", json.dumps(config)]
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    done = subprocess.run(  # noqa: S603
        [*command, *(["--modules"] if modules else [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"child {config['type']} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _recreate_postgres(url: str) -> dict[str, str]:
    """Per-contender databases next to `url`'s, dropped and recreated; their URLs."""
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    names = {contender: f"{base.database or 'rss_bench'}_{contender}" for contender in CONTENDERS}
    if "test" in names.values():
        raise RuntimeError("refusing to touch the database named 'test'")
    admin = base.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        for name in names.values():
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return {
        contender: base.set(drivername="postgresql", database=name).render_as_string(
            hide_password=False
        )
        for contender, name in names.items()
    }


async def _drop_postgres(urls: dict[str, str]) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    admin = make_url(next(iter(urls.values()))).set(database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        for url in urls.values():
            await connection.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}"')
    finally:
        await connection.close()


def measure(backend: str, rounds: int, folder: Path) -> dict[str, dict[str, float]]:
    """Median figures (KiB) of each contender on `backend`."""
    if backend == "sqlite":
        databases = {contender: str(folder / f"{contender}.db") for contender in CONTENDERS}
    else:
        databases = asyncio.run(_recreate_postgres(os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)))
    try:
        configs = {c: storage_config(c, backend, databases[c]) for c in CONTENDERS}
        for config in configs.values():
            run_child(config)  # brings the database to head; not counted
        samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
        for round_number in range(rounds):
            order = CONTENDERS if round_number % 2 == 0 else CONTENDERS[::-1]
            for contender in order:
                samples[contender].append(run_child(configs[contender]))
            print(f"  agent_rss: {backend} round {round_number + 1} done", file=sys.stderr)
    finally:
        if backend == "postgresql":
            asyncio.run(_drop_postgres(databases))
    return {
        contender: {
            key: statistics.median(sample[key] for sample in runs)
            for key in ("before_kib", "after_kib", "hwm_kib")
        }
        for contender, runs in samples.items()
    }


def report(backend: str, results: dict[str, dict[str, float]]) -> str:
    builtin, ours = results["builtin"], results["ours"]
    lines = [
        f"#### {backend} (medians, MiB)",
        "",
        "| contender | before storage | after | growth | peak (VmHWM) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, figures in results.items():
        before, after = figures["before_kib"] / 1024, figures["after_kib"] / 1024
        lines.append(
            f"| {name} | {before:.1f} | {after:.1f} | {after - before:.1f} "
            f"| {figures['hwm_kib'] / 1024:.1f} |"
        )
    ratio = ours["after_kib"] / builtin["after_kib"]
    growth = builtin["after_kib"] - builtin["before_kib"]
    growth_ratio = (ours["after_kib"] - ours["before_kib"]) / growth if growth > 0 else float("nan")
    verdict = "ok" if ratio <= TARGET else "over"
    lines += [
        "",
        f"ours_after / builtin_after = {ratio:.2f} (target <= {TARGET}: {verdict}); "
        f"storage growth ratio = {growth_ratio:.2f}",
    ]
    return "\n".join(lines)


def module_diff(folder: Path) -> str:
    """Modules loaded by our SQLite child and not by the built-in's, by top-level package."""
    loaded = {}
    for contender in CONTENDERS:
        config = storage_config(contender, "sqlite", str(folder / f"modules-{contender}.db"))
        run_child(config)
        loaded[contender] = set(run_child(config, modules=True)["modules"])
    extra = loaded["ours"] - loaded["builtin"]
    groups = Counter(
        ".".join(name.split(".")[: 3 if name.startswith("sqlalchemy.dialects.") else 1])
        for name in extra
    )
    lines = [f"{len(extra)} modules in ours' child only:"]
    lines += [f"  {group}: {count}" for group, count in sorted(groups.items())]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3, help="children per contender (3)")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--modules", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(_child(json.loads(args.child), args.modules))))
        return 0
    # A wheel install has our modules' bytecode, as pip gave the host's; an editable
    # checkout under PYTHONDONTWRITEBYTECODE has none, and compiling in each child leaves
    # about 0.4 MiB of heap behind that an installed provider never costs.
    compileall.compile_dir(ROOT / "slack_agents_sa", quiet=1)
    with tempfile.TemporaryDirectory(prefix="sa-agent-rss-") as name:
        folder = Path(name)
        if args.modules:
            print(module_diff(folder))
            return 0
        backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
        results = {backend: measure(backend, args.rounds, folder) for backend in backends}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n\n".join(report(backend, figures) for backend, figures in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
