"""`slack-agents-sa` as a script sees it: commands, URL sources, exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slack_agents_sa import cli
from slack_agents_sa.migrate import head_revisions

HEAD = max(head_revisions())


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).with_name("slack-agents-sa")
    environment = {k: v for k, v in os.environ.items() if k != "SLACK_AGENTS_SA_URL"}
    return subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=120,
        check=False,
    )


def agent_config(folder: Path, storage: str) -> Path:
    """An agent's config.yaml in `folder` whose `storage:` holds our type and `storage`'s
    lines (indented by this function)."""
    config = folder / "config.yaml"
    lines = "".join(f"  {line}\n" for line in storage.splitlines())
    config.write_text(f"storage:\n  type: slack_agents_sa\n{lines}", encoding="utf-8")
    return config


def test_upgrade_current_check_downgrade_round_trip(empty_url: str) -> None:
    checked = run_cli("--url", empty_url, "check")
    assert checked.returncode == cli.EXIT_NOT_AT_HEAD, checked.stderr
    assert "base (no schema)" in checked.stdout

    upgraded = run_cli("--url", empty_url, "upgrade")
    assert upgraded.returncode == cli.EXIT_OK, upgraded.stderr
    assert upgraded.stdout.strip() == f"at {HEAD}"

    current = run_cli("--url", empty_url, "current")
    assert (current.returncode, current.stdout.strip()) == (cli.EXIT_OK, f"{HEAD} (head)")

    checked = run_cli("--url", empty_url, "check")
    assert checked.returncode == cli.EXIT_OK, checked.stderr
    assert checked.stdout.startswith("ok: connected, schema at head")

    one_down = run_cli("--url", empty_url, "downgrade", "-1")
    assert one_down.returncode == cli.EXIT_OK, one_down.stderr
    assert run_cli("--url", empty_url, "check").returncode == cli.EXIT_NOT_AT_HEAD

    down = run_cli("--url", empty_url, "downgrade", "base")
    assert (down.returncode, down.stdout.strip()) == (cli.EXIT_OK, "at base")
    assert run_cli("--url", empty_url, "current").stdout.strip() == "base"


def test_the_url_comes_from_the_environment_or_an_agent_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    from_env = run_cli("upgrade", env={"SLACK_AGENTS_SA_URL": url})
    assert from_env.returncode == cli.EXIT_OK, from_env.stderr
    assert f"database: sqlite+aiosqlite:///{tmp_path / 'agents.db'}" in from_env.stderr

    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "config.yaml").write_text(
        'storage:\n  type: slack_agents_sa\n  url: "{AGENT_DB_URL}"\n', encoding="utf-8"
    )
    from_config = run_cli("--config", str(agent), "check", env={"AGENT_DB_URL": url})
    assert from_config.returncode == cli.EXIT_OK, from_config.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--url", "nosuch://x", "check"], {}, cli.EXIT_USAGE, "unknown database or driver"),
        (
            ["--url", "postgresql://u:hunter2@127.0.0.1:9/db", "check"],
            {},
            cli.EXIT_UNREACHABLE,
            "cannot connect to postgresql+asyncpg://u:***@127.0.0.1:9/db",
        ),
        (["--config", "/nonexistent/config.yaml", "check"], {}, cli.EXIT_USAGE, "cannot read"),
    ],
    ids=["bad-url", "unreachable", "missing-config"],
)
def test_errors_have_stable_exit_codes_and_hide_passwords(
    args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_config_without_our_storage_type_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("storage:\n  type: slack_agents.storage.sqlite\n", encoding="utf-8")
    result = run_cli("--config", str(config), "check")
    assert result.returncode == cli.EXIT_USAGE
    assert "type: slack_agents_sa" in result.stderr


def test_placeholders_in_comment_lines_need_no_variable(tmp_path: Path) -> None:
    # As the host reads config.yaml: whole-line comments go before `{VAR}`s are filled.
    config = tmp_path / "config.yaml"
    config.write_text(
        "storage:\n"
        "  type: slack_agents_sa\n"
        '# url: "{OLD_AGENT_DB_URL}"\n'
        '    # url: "{OLDER_AGENT_DB_URL}"\n'
        '  url: "{AGENT_DB_URL}"\n',
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    result = run_cli("--config", str(config), "upgrade", env={"AGENT_DB_URL": url})
    assert result.returncode == cli.EXIT_OK, result.stderr
    assert f"database: sqlite+aiosqlite:///{tmp_path / 'agents.db'}" in result.stderr

    config.write_text(
        'storage:\n  type: slack_agents_sa\n  url: "{AGENT_DB_URL}"  # was {OLD_AGENT_DB_URL}\n',
        encoding="utf-8",
    )  # a comment after a value is not blanked, by the host either
    result = run_cli("--config", str(config), "check", env={"AGENT_DB_URL": url})
    assert result.returncode == cli.EXIT_USAGE
    assert "uses {OLD_AGENT_DB_URL}, but OLD_AGENT_DB_URL is not set" in result.stderr


def test_invalid_yaml_is_reported_without_quoting_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "storage:\n  type: slack_agents_sa\n  url: postgresql://u:hunter2@h/d: x\n",
        encoding="utf-8",
    )
    result = run_cli("--config", str(config), "check")
    assert result.returncode == cli.EXIT_USAGE
    assert "is not valid YAML (line 3: mapping values are not allowed here)" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("url", "schema", "message"),
    [
        ("postgresql://u@127.0.0.1:9/db", "tenant\n", "--schema must be a lower-case"),
        ("postgresql://u@127.0.0.1:9/db", "bad name", "--schema must be a lower-case"),
        ("sqlite://", "tenant", "--schema is supported on PostgreSQL only (this URL is sqlite)"),
    ],
)
def test_bad_schema_arguments_are_usage_errors(
    url: str, schema: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--url", url, "--schema", schema, "check"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"error: {message}")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("bad name", "-x schema must be a lower-case PostgreSQL schema name"),
        ("tenant\n", "-x schema must be a lower-case PostgreSQL schema name"),
        ("tenant", "-x schema is supported on PostgreSQL only (this URL is sqlite)"),
    ],
)
def test_alembic_refuses_a_bad_schema_argument(tmp_path: Path, schema: str, message: str) -> None:
    database = tmp_path / "agents.db"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("alembic")),
            *("-x", f"url=sqlite:///{database}", "-x", f"schema={schema}"),
            *("upgrade", "head"),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,  # alembic.ini
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not database.exists()  # refused before connecting


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.mark.parametrize(
    "verb",
    [
        ["check"],
        ["current"],
        ["stats"],
        ["downgrade", "base"],
        ["prune", "--older-than", "1d"],
        ["rotate-keys"],
    ],
    ids=lambda verb: verb[0],
)
def test_a_command_that_does_not_create_a_database_makes_no_sqlite_file(
    tmp_path: Path, verb: list[str]
) -> None:
    database = tmp_path / "typo.db"
    env = {"SLACK_AGENTS_SA_ENCRYPTION_KEYS": _fernet_key()}
    result = run_cli("--url", f"sqlite:///{database}", *verb, env=env)
    assert result.returncode == cli.EXIT_UNREACHABLE, result.stderr
    assert f"no SQLite database file at {database} (only `upgrade` creates one)" in result.stderr
    assert not database.exists()


def test_import_from_a_missing_sqlite_file_creates_neither_database(tmp_path: Path) -> None:
    source, target = tmp_path / "typo.db", tmp_path / "target.db"
    result = run_cli(
        "--url", f"sqlite:///{target}", "import", "--from", f"sqlite:///{source}", "--no-progress"
    )
    assert result.returncode == cli.EXIT_FAILED, result.stderr
    assert f"no SQLite database file at {source}: nothing to import" in result.stderr
    assert not source.exists() and not target.exists()


def test_a_config_and_an_environment_url_naming_different_databases_are_refused(
    tmp_path: Path,
) -> None:
    agent_db, demo_db = tmp_path / "agent.db", tmp_path / "demo.db"
    config = agent_config(tmp_path, f'url: "sqlite:///{agent_db}"')
    refused = run_cli(
        "--config", str(config), "upgrade", env={"SLACK_AGENTS_SA_URL": f"sqlite:///{demo_db}"}
    )
    assert refused.returncode == cli.EXIT_USAGE, refused.stderr
    assert f"--config {config} and $SLACK_AGENTS_SA_URL name different databases" in (
        refused.stderr
    )
    assert not agent_db.exists() and not demo_db.exists()

    same = run_cli(
        "--config", str(config), "upgrade", env={"SLACK_AGENTS_SA_URL": f"sqlite:///{agent_db}"}
    )
    assert same.returncode == cli.EXIT_OK, same.stderr
    assert f"database: sqlite+aiosqlite:///{agent_db} (from --config {config})" in same.stderr


@pytest.mark.parametrize(
    "verb", [["prune", "--older-than", "1d"], ["rotate-keys"]], ids=lambda verb: verb[0]
)
def test_a_maintenance_command_on_an_unmigrated_database_says_to_run_upgrade(
    tmp_path: Path, verb: list[str]
) -> None:
    database = tmp_path / "empty.db"
    database.touch()  # a database, with no tables of ours
    env = {"SLACK_AGENTS_SA_ENCRYPTION_KEYS": _fernet_key()}
    result = run_cli("--url", f"sqlite:///{database}", *verb, env=env)
    assert result.returncode == cli.EXIT_FAILED, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: schema at base; head is {HEAD}: run `slack-agents-sa upgrade` first "
        "(this command never migrates)"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("pool_szie: 5", "unknown option 'pool_szie'"),
        ("path: agents.db", "unknown option 'path'"),  # the built-in sqlite provider's
        ("executor: turbo", "option 'executor'"),
    ],
)
def test_a_config_the_agent_would_refuse_is_refused_by_the_command_line(
    tmp_path: Path, option: str, message: str
) -> None:
    config = agent_config(tmp_path, f'url: "sqlite:///{tmp_path / "a.db"}"\n{option}')
    result = run_cli("--config", str(config), "upgrade")
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert message in result.stderr and f"(from --config {config})" in result.stderr
    assert not (tmp_path / "a.db").exists()


def test_only_the_placeholders_under_storage_need_to_be_set(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "slack:\n"
        '  bot_token: "{SLACK_BOT_TOKEN}"\n'
        "llm:\n"
        "  type: slack_agents.llm.anthropic\n"
        "  api_key: {ANTHROPIC_API_KEY}\n"
        "storage:\n"
        "  type: slack_agents_sa\n"
        '  url: "{AGENT_DB_URL}"\n'
        "tools: {}\n",
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    done = run_cli("--config", str(config), "upgrade", env={"AGENT_DB_URL": url})
    assert done.returncode == cli.EXIT_OK, done.stderr

    missing = run_cli("--config", str(config), "check")
    assert missing.returncode == cli.EXIT_USAGE
    assert "uses {AGENT_DB_URL}, but AGENT_DB_URL is not set" in missing.stderr


@pytest.mark.parametrize(
    "layout",
    [
        'x-common: &common {type: slack_agents_sa, url: "sqlite:///DIR/{AGENT_NAME}.db"}\n'
        "storage: *common\n",
        'x-base: &base\n  url: "sqlite:///DIR/{AGENT_NAME}.db"\n'
        "storage:\n  <<: *base\n  type: slack_agents_sa\n",
    ],
    ids=["alias", "merge-key"],
)
def test_a_storage_placeholder_reached_through_an_alias_must_be_set(
    tmp_path: Path, layout: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(layout.replace("DIR", str(tmp_path)), encoding="utf-8")
    result = run_cli("--config", str(config), "upgrade")
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert "uses {AGENT_NAME}, but AGENT_NAME is not set" in result.stderr
    assert list(tmp_path.glob("*.db")) == []

    done = run_cli("--config", str(config), "upgrade", env={"AGENT_NAME": "helper"})
    assert done.returncode == cli.EXIT_OK, done.stderr
    assert (tmp_path / "helper.db").exists()
