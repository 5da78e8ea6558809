"""The host's own CLI on an agent configured with `storage.type: slack_agents_sa`.

`slack-agents healthcheck`, `export-conversations` and `export-usage` run as subprocesses,
exactly as an operator runs them, on a database our provider populated.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

from slack_agents.conversations import ConversationManager

from slack_agents_sa import Provider
from tests.agent_turns import drive_conversation

CONFIG = """\
schema: "slack-agents/v1"
version: "1.0"
slack:
  bot_token: "xoxb-not-used"
  app_token: "xapp-not-used"
llm:
  type: slack_agents.llm.anthropic
storage:
  type: slack_agents_sa
  url: "{AGENT_DB_URL}"
access:
  type: slack_agents.access.allow_all
"""


def _agent_dir(tmp_path: Path) -> Path:
    # The host names the agent after its directory: "helper", as in drive_conversation.
    agent = tmp_path / "agents" / "helper"
    agent.mkdir(parents=True)
    (agent / "config.yaml").write_text(CONFIG, encoding="utf-8")
    (agent / "system_prompt.txt").write_text("You help.", encoding="utf-8")
    return agent


def _host(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("slack-agents")
    return subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "AGENT_DB_URL": url, "LOG_LEVEL": "WARNING"},
        timeout=120,
        check=False,
    )


async def _populate(url: str, heartbeat_age: float) -> None:
    storage = Provider(url=url)
    await storage.initialize()
    try:
        await drive_conversation(ConversationManager(storage))
        await storage.upsert_heartbeat("helper", time.time() - heartbeat_age)
    finally:
        await storage.close()


async def test_healthcheck_reads_our_heartbeat(empty_url: str, tmp_path: Path) -> None:
    agent = _agent_dir(tmp_path)
    await _populate(empty_url, heartbeat_age=0)
    healthy = _host("healthcheck", str(agent), url=empty_url, cwd=tmp_path)
    assert healthy.returncode == 0, healthy.stderr

    storage = Provider(url=empty_url)
    await storage.initialize()
    await storage.upsert_heartbeat("helper", time.time() - 300)
    await storage.close()
    stale = _host("healthcheck", str(agent), url=empty_url, cwd=tmp_path)
    assert stale.returncode == 1
    assert "UNHEALTHY: heartbeat is" in stale.stderr


async def test_export_conversations_and_usage_read_our_database(
    empty_url: str, tmp_path: Path
) -> None:
    agent = _agent_dir(tmp_path)
    await _populate(empty_url, heartbeat_age=0)

    out = tmp_path / "export"
    exported = _host(
        "export-conversations", str(agent), "--format", "html", "--output", str(out),
        url=empty_url, cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "Exported 1 conversation(s)" in exported.stdout
    [page] = (out / "conversations").glob("*.html")
    html = page.read_text(encoding="utf-8")
    for shown in ("weather in Paris", "A cat on a keyboard", "get_weather", "send_mail"):
        assert shown in html

    by_handle = _host(
        "export-conversations", str(agent), "--format", "html", "--output", str(out / "bo"),
        "--handle", "bo", url=empty_url, cwd=tmp_path,
    )  # fmt: skip
    assert "Exported 1 conversation(s)" in by_handle.stdout
    nobody = _host(
        "export-conversations", str(agent), "--format", "html", "--output", str(out / "x"),
        "--handle", "nobody", url=empty_url, cwd=tmp_path,
    )  # fmt: skip
    assert "No conversations found" in nobody.stdout

    usage_file = tmp_path / "usage.csv"
    usage = _host(
        "export-usage", str(agent), "--format", "csv", "--output", str(usage_file),
        url=empty_url, cwd=tmp_path,
    )  # fmt: skip
    assert usage.returncode == 0, usage.stderr
    [row] = list(csv.DictReader(usage_file.open(encoding="utf-8")))
    assert row["agent_name"] == "helper"
    assert row["channel_name"] == "ops"
    assert row["message_count"] == "3"
    assert int(row["total_input_tokens"]) == 1200 + 3400 + 5600
    assert int(row["tool_call_count"]) == 3
