"""Build the wheel, install it in a fresh virtual environment, and migrate an empty database.

Proves the migrations ship inside the wheel: the provider run from the new environment
(not this checkout) must create the schema on `initialize()`, and the installed
`slack-agents-sa check` must find it at head. Also on PostgreSQL and
MySQL/MariaDB when SLACK_AGENTS_SA_TEST_POSTGRES_URL / SLACK_AGENTS_SA_TEST_MYSQL_URL are set
(the wheel is installed with its `mysql` extra).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa.settings import normalize_url

REPO_ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import asyncio, sys
from pathlib import Path
import slack_agents_sa
from slack_agents_sa import Provider
from slack_agents_sa.migrate import script_location
from sqlalchemy import inspect

package = Path(slack_agents_sa.__file__).resolve().parent
assert package.is_relative_to(Path(sys.prefix).resolve()), f"imported from {package}"
assert script_location() == package / "migrations", script_location()

async def main(url):
    storage = Provider(url=url)
    await storage.initialize()
    await storage.set("ns", "k", {"ok": True})
    assert await storage.get("ns", "k") == {"ok": True}
    async with storage.db.statement() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await storage.close()
    print(f"migrated {len(tables)} tables at {url.split('@')[-1]} from {package}")

for url in sys.argv[1:]:
    asyncio.run(main(url))
"""


def run(*command: str | Path, cwd: Path | None = None) -> None:
    shown = (str(part) if len(str(part)) < 100 else "<script>" for part in command)
    print("+", " ".join(shown), flush=True)
    subprocess.run([str(part) for part in command], cwd=cwd, check=True)


async def _admin(server: str, statement: str) -> None:
    engine = create_async_engine(normalize_url(server), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def scratch_database(server: str) -> Iterator[str]:
    """A throwaway database on a server, so the check never touches real data."""
    name = f"sa_wheel_check_{os.getpid()}"
    if normalize_url(server).get_backend_name() in ("mysql", "mariadb"):
        create, drop = f"CREATE DATABASE `{name}`", f"DROP DATABASE IF EXISTS `{name}`"
    else:
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(_admin(server, create))
    try:
        yield normalize_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server, drop))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sa-wheel-") as tmp:
        work = Path(tmp)
        run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            work / "dist",
            REPO_ROOT,
        )
        [wheel] = (work / "dist").glob("slack_agents_sa-*.whl")
        run(sys.executable, "-m", "venv", work / "venv")
        python = work / "venv" / "bin" / "python"
        requirement = f"slack_agents_sa[mysql] @ {wheel.as_uri()}"
        run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement)
        urls = [f"sqlite:///{work / 'fresh.db'}"]
        with ExitStack() as stack:
            for variable in ("SLACK_AGENTS_SA_TEST_POSTGRES_URL", "SLACK_AGENTS_SA_TEST_MYSQL_URL"):
                server = os.environ.get(variable)
                if server:
                    urls.append(stack.enter_context(scratch_database(server)))
            run(python, "-c", PROBE, *urls, cwd=work)
            # The console script ships too, and finds the migrations inside the wheel.
            console = work / "venv" / "bin" / "slack-agents-sa"
            for url in urls:
                run(console, "--url", url, "check", cwd=work)
    print("wheel check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
