"""What an agent process pays for: starting the provider on a database at head loads no
migration machinery, no command line and no optional extra it does not use.

Alembic is imported only when there is something to migrate; tqdm, argparse and YAML only
by the command line; OpenTelemetry's API only when something else in the process loaded it;
cryptography only with `encryption_keys`; each driver and dialect only for its own database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from slack_agents_sa import Provider

#: Modules an agent on SQLite at head must not load (a package holds its submodules).
NOT_LOADED = (
    "alembic",
    "tqdm",
    "argparse",
    "yaml",
    "cryptography",
    "opentelemetry.trace",
    "asyncpg",
    "asyncmy",
    "sqlalchemy.dialects.postgresql",
    "slack_agents_sa.cli",
    "slack_agents_sa.migrate",
    "slack_agents_sa.stats",
    "slack_agents_sa.importer",
    "slack_agents_sa.keys",
)

_AGENT = """
    import asyncio, json, sys
    from slack_agents_sa import Provider

    async def main(url):
        provider = Provider(url=url)
        await provider.initialize()
        await provider.set("n", "k", {"v": 1})
        assert await provider.get("n", "k") == {"v": 1}
        conversation = await provider.get_or_create_conversation("agent", "C1", "T1")
        await provider.create_message(conversation, "U1", "user", "@user")
        await provider.close()

    asyncio.run(main(sys.argv[1]))
    print(json.dumps(sorted(sys.modules)))
"""


def _loaded_by_an_agent(url: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_AGENT), url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def _within(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(
        module
        for module in loaded
        for name in names
        if module == name or module.startswith(name + ".")
    )


async def test_an_agent_on_a_database_at_head_loads_nothing_it_does_not_use(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    migrating = Provider(url=url)
    await migrating.initialize()  # to head, in this process
    await migrating.close()
    loaded = _loaded_by_an_agent(url)
    assert "slack_agents_sa.keyvalue" in loaded and "aiosqlite" in loaded
    assert _within(loaded, NOT_LOADED) == []


def test_an_agent_migrating_an_empty_database_loads_alembic(tmp_path: Path) -> None:
    loaded = _loaded_by_an_agent(f"sqlite:///{tmp_path / 'new.db'}")
    assert "alembic" in loaded and "slack_agents_sa.migrate" in loaded
    assert _within(loaded, ("slack_agents_sa.cli", "tqdm")) == []  # Alembic's own argparse
