"""The tool `search_conversation_history` (slack_agents_sa.tools.history): listed in the
framework's tool format, it shows a caller only this agent's threads they wrote in (with
`scope: channel` also the current channel's threads), never the current thread, and answers
every refusal in the framework's tool-error schema (`make_tool_error`).

The searches run on each backend (`provider`); the refusals and the arguments handed to the
storage are checked on a stand-in whose `search_history` records its call. The last test
starts the tool as an agent does (config.yaml, `load_plugin`) and drives it through the
framework's agent loop with a scripted LLM turn, as the framework's own tests do
(python-slack-agents tests/test_agent_loop.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from slack_agents import FrameworkContext, UserConversationContext
from slack_agents.agent_loop import run_agent_loop_streaming
from slack_agents.config import load_agent_config, load_plugin
from slack_agents.llm.base import BaseLLMProvider, LLMResponse, Message, StreamEvent, ToolCall
from slack_agents.storage.sqlite import Provider as BuiltinSqliteStorage
from slack_agents.tools.base import BaseToolProvider, ToolResult

from slack_agents_sa import ConfigError, ConnectionLostError, Provider
from slack_agents_sa.tools import history

if TYPE_CHECKING:
    from datetime import datetime

    from slack_agents_sa import HistoryHit

AGENT = "helper"
TOOL = "search_conversation_history"
#: The thread the caller is writing in when the tool runs.
NOW = "1700000999.000100"


def history_tool(
    scope: str = "own_threads", *, agent: str = AGENT, allowed: str = ".*"
) -> history.Provider:
    """The tool as the framework builds it: `load_plugin` injects the `FrameworkContext`."""
    context = FrameworkContext(bot_token="xoxb-test", agent_name=agent)
    tool = load_plugin(
        "slack_agents_sa.tools.history",
        framework_ctx=context,
        allowed_functions=[allowed],
        scope=scope,
    )
    assert isinstance(tool, history.Provider)
    return tool


def caller(user_id: str, channel_id: str = "C1", thread_id: str = NOW) -> UserConversationContext:
    return UserConversationContext(
        user_id=user_id,
        user_name=f"name {user_id}",
        user_handle=user_id.lower(),
        channel_id=channel_id,
        channel_name=f"chan-{channel_id}",
        thread_id=thread_id,
    )


async def thread(
    storage: Provider, channel: str, thread_id: str, writer: str, text: str, *, agent: str = AGENT
) -> None:
    """A thread of `agent` in which `writer` wrote `text` and the agent answered."""
    conversation = await storage.get_or_create_conversation(
        agent, channel, thread_id, f"chan-{channel}"
    )
    message = await storage.create_message(conversation, writer, f"name {writer}", writer.lower())
    await storage.append_text_block(message, text, is_user=True)
    await storage.append_text_block(message, "Noted, I will keep that in mind.")


def results(result: ToolResult) -> list[dict[str, Any]]:
    assert result["is_error"] is False, result["content"]
    found: list[dict[str, Any]] = json.loads(result["content"])["results"]
    return found


def threads(result: ToolResult) -> set[tuple[str, str]]:
    """The (channel id, thread id) of every hit."""
    return {(hit["channel_id"], hit["thread_id"]) for hit in results(result)}


def tool_error(result: ToolResult) -> dict[str, Any]:
    """The framework's error payload of a failed call."""
    assert result["is_error"] is True
    assert result["files"] == []
    payload: dict[str, Any] = json.loads(result["content"])
    assert payload["tool"] == TOOL
    return payload


class RecordingStorage(Provider):
    """Our storage, never opened, whose `search_history` records its call (or fails)."""

    def __init__(self, fails_with: Exception | None = None) -> None:
        super().__init__(url="sqlite+aiosqlite:///:memory:")
        self.calls: list[dict[str, Any]] = []
        self.fails_with = fails_with

    async def search_history(
        self,
        agent_name: str,
        text: str,
        *,
        user_id: str | None = None,
        channel_id: str | None = None,
        since: datetime | None = None,
        limit: int = 20,
        also_in_channel: str | None = None,
        exclude_thread: tuple[str, str] | None = None,
    ) -> list[HistoryHit]:
        self.calls.append(
            {
                "agent_name": agent_name,
                "text": text,
                "user_id": user_id,
                "channel_id": channel_id,
                "since": since,
                "limit": limit,
                "also_in_channel": also_in_channel,
                "exclude_thread": exclude_thread,
            }
        )
        if self.fails_with is not None:
            raise self.fails_with
        return []


# --- the tool as the framework lists it -------------------------------------------------


def test_the_tool_is_listed_in_the_framework_format() -> None:
    [tool] = history_tool().tools
    assert set(tool) == {"name", "description", "input_schema"}
    assert tool["name"] == TOOL
    schema = tool["input_schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["query"]
    assert schema["properties"]["query"]["type"] == "string"
    limit = schema["properties"]["limit"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == (
        "integer",
        1,
        50,
        10,
    )
    assert json.loads(json.dumps(tool)) == tool  # the host sizes its tools with json.dumps


def test_allowed_functions_filter_the_tool_as_for_any_framework_tool() -> None:
    assert [tool["name"] for tool in history_tool(allowed="search_.*").tools] == [TOOL]
    assert history_tool(allowed="export_pdf").tools == []


def test_the_description_says_what_scope_channel_adds() -> None:
    [own] = history_tool("own_threads").tools
    [channel] = history_tool("channel").tools
    assert "current channel" not in own["description"]
    assert "current channel" in channel["description"]


@pytest.mark.parametrize("scope", ["everything", "", "Channel", "own-threads"])
def test_an_unknown_scope_is_refused_when_the_tool_is_built(scope: str) -> None:
    with pytest.raises(ConfigError, match="`scope` must be one of own_threads, channel"):
        history_tool(scope)


# --- who finds what (real databases) ----------------------------------------------------


async def test_a_caller_finds_only_threads_of_this_agent_they_wrote_in(
    provider: Provider,
) -> None:
    await thread(provider, "C1", "1700000001.000100", "UANN", "the invoice for March")
    await thread(provider, "C1", "1700000002.000100", "UBO", "my invoice is wrong")
    await thread(provider, "C2", "1700000003.000100", "UBO", "another invoice question")
    await thread(provider, "C1", "1700000004.000100", "UANN", "invoice again", agent="other")
    tool = history_tool()

    ann = await tool.call_tool(TOOL, {"query": "invoice"}, caller("UANN"), provider)
    bo = await tool.call_tool(TOOL, {"query": "invoice"}, caller("UBO"), provider)
    nobody = await tool.call_tool(TOOL, {"query": "invoice"}, caller("UCAT"), provider)

    assert threads(ann) == {("C1", "1700000001.000100")}
    assert threads(bo) == {("C1", "1700000002.000100"), ("C2", "1700000003.000100")}
    assert threads(nobody) == set()


async def test_a_hit_names_channel_thread_date_author_and_snippet(provider: Provider) -> None:
    await thread(provider, "C1", "1700000001.000100", "UANN", "the invoice for March")

    result = await history_tool().call_tool(TOOL, {"query": "invoice"}, caller("UANN"), provider)

    [hit, *_] = results(result)
    assert hit["channel"] == "chan-C1"
    assert hit["channel_id"] == "C1"
    assert hit["thread_id"] == "1700000001.000100"
    assert hit["author"] == "name UANN"
    assert hit["from_agent"] is False
    assert hit["date"].endswith("+00:00")
    assert "invoice" in hit["snippet"].lower()


async def test_scope_channel_adds_the_current_channels_threads_and_no_other_channels(
    provider: Provider,
) -> None:
    await thread(provider, "C1", "1700000001.000100", "UANN", "invoice, mine, here")
    await thread(provider, "C2", "1700000002.000100", "UANN", "invoice, mine, elsewhere")
    await thread(provider, "C1", "1700000003.000100", "UBO", "invoice, Bo's, here")
    await thread(provider, "C2", "1700000004.000100", "UBO", "invoice, Bo's, elsewhere")
    await thread(provider, "C1", "1700000005.000100", "UBO", "invoice", agent="other")
    mine = {("C1", "1700000001.000100"), ("C2", "1700000002.000100")}

    in_channel = await history_tool("channel").call_tool(
        TOOL, {"query": "invoice"}, caller("UANN", "C1"), provider
    )
    own = await history_tool("own_threads").call_tool(
        TOOL, {"query": "invoice"}, caller("UANN", "C1"), provider
    )

    assert threads(in_channel) == mine | {("C1", "1700000003.000100")}
    assert threads(own) == mine


@pytest.mark.parametrize("scope", ["own_threads", "channel"])
async def test_the_current_thread_is_left_out(provider: Provider, scope: str) -> None:
    await thread(provider, "C1", "1700000001.000100", "UANN", "the invoice for March")
    await thread(provider, "C1", NOW, "UANN", "about that invoice from before")

    result = await history_tool(scope).call_tool(
        TOOL, {"query": "invoice"}, caller("UANN", "C1", NOW), provider
    )

    assert threads(result) == {("C1", "1700000001.000100")}


async def test_limit_caps_the_hits(provider: Provider) -> None:
    for number in range(3):
        await thread(provider, "C1", f"170000000{number}.000100", "UANN", f"invoice {number}")
    tool = history_tool()

    two = await tool.call_tool(TOOL, {"query": "invoice", "limit": 2}, caller("UANN"), provider)
    default = await tool.call_tool(TOOL, {"query": "invoice"}, caller("UANN"), provider)

    assert len(results(two)) == 2
    assert len(threads(default)) == 3


async def test_no_hit_is_said_in_words(provider: Provider) -> None:
    await thread(provider, "C1", "1700000001.000100", "UANN", "the invoice for March")

    result = await history_tool().call_tool(TOOL, {"query": "holiday"}, caller("UANN"), provider)

    assert results(result) == []
    assert "No earlier conversation matched" in json.loads(result["content"])["message"]


# --- what the storage is asked (a recording stand-in) ------------------------------------


@pytest.mark.parametrize(("scope", "also_in_channel"), [("own_threads", None), ("channel", "C7")])
async def test_the_access_rule_goes_to_the_storage_with_every_search(
    scope: str, also_in_channel: str | None
) -> None:
    storage = RecordingStorage()

    result = await history_tool(scope, agent="billing").call_tool(
        TOOL, {"query": "  invoice March ", "limit": 5}, caller("UANN", "C7", NOW), storage
    )

    assert results(result) == []
    assert storage.calls == [
        {
            "agent_name": "billing",
            "text": "invoice March",
            "user_id": "UANN",
            "channel_id": None,
            "since": None,
            "limit": 5,
            "also_in_channel": also_in_channel,
            "exclude_thread": ("C7", NOW),
        }
    ]


async def test_limit_defaults_to_ten_when_left_out_or_null() -> None:
    storage = RecordingStorage()
    tool = history_tool()

    await tool.call_tool(TOOL, {"query": "invoice"}, caller("UANN"), storage)
    await tool.call_tool(TOOL, {"query": "invoice", "limit": None}, caller("UANN"), storage)

    assert [call["limit"] for call in storage.calls] == [10, 10]


@pytest.mark.parametrize(
    "context",
    [None, caller(""), {**caller("UANN"), "user_id": None}],
    ids=["no-context", "empty-user-id", "null-user-id"],
)
async def test_without_a_caller_nothing_is_searched(context: Any) -> None:
    storage = RecordingStorage()

    result = await history_tool().call_tool(TOOL, {"query": "invoice"}, context, storage)

    payload = tool_error(result)
    assert (payload["error"], payload["code"]) == ("permission_denied", "unknown_caller")
    assert payload["recovery"] == "abort"
    assert storage.calls == []


@pytest.mark.parametrize(
    "storage",
    [BuiltinSqliteStorage(":memory:"), None],
    ids=["framework-sqlite", "no-storage"],
)
async def test_a_storage_not_ours_is_answered_with_a_tool_error(storage: Any) -> None:
    result = await history_tool().call_tool(TOOL, {"query": "invoice"}, caller("UANN"), storage)

    payload = tool_error(result)
    assert (payload["error"], payload["code"]) == ("system_error", "unsupported_storage")
    assert payload["recovery"] == "contact_support"
    assert "slack_agents_sa" in payload["message"]


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": " \n\t"}, "query"),
        ({"query": 42}, "query"),
        ({"query": ["invoice"]}, "query"),
        ({"query": "invoice", "limit": 0}, "limit"),
        ({"query": "invoice", "limit": 51}, "limit"),
        ({"query": "invoice", "limit": -3}, "limit"),
        ({"query": "invoice", "limit": "5"}, "limit"),
        ({"query": "invoice", "limit": 2.5}, "limit"),
        ({"query": "invoice", "limit": True}, "limit"),
    ],
)
async def test_bad_arguments_are_input_errors_naming_the_argument(
    arguments: dict[str, Any], argument: str
) -> None:
    storage = RecordingStorage()

    result = await history_tool().call_tool(TOOL, arguments, caller("UANN"), storage)

    payload = tool_error(result)
    assert (payload["error"], payload["code"]) == ("input_error", "invalid_argument")
    assert payload["details"] == {"argument": argument}
    assert f"`{argument}`" in payload["message"]
    assert storage.calls == []


async def test_an_unknown_tool_name_is_an_input_error() -> None:
    result = await history_tool().call_tool(
        "delete_history", {"query": "x"}, caller("UANN"), RecordingStorage()
    )

    payload = json.loads(result["content"])
    assert result["is_error"] is True
    assert (payload["error"], payload["code"], payload["tool"]) == (
        "input_error",
        "unknown_tool",
        "delete_history",
    )


@pytest.mark.parametrize(
    ("failure", "code", "recovery"),
    [
        (ConnectionLostError("the connection was lost"), "database_unavailable", "retry"),
        (RuntimeError("boom"), "search_failed", "contact_support"),
    ],
)
async def test_a_failed_search_is_a_tool_error_not_an_exception(
    failure: Exception, code: str, recovery: str
) -> None:
    storage = RecordingStorage(fails_with=failure)

    result = await history_tool().call_tool(TOOL, {"query": "invoice"}, caller("UANN"), storage)

    payload = tool_error(result)
    assert (payload["error"], payload["code"], payload["recovery"]) == (
        "system_error",
        code,
        recovery,
    )
    assert "boom" not in result["content"]


# --- through the framework: config.yaml, load_plugin, the agent loop --------------------


class ScriptedLLM(BaseLLMProvider):
    """An LLM whose first turn calls the tool and whose second answers; it keeps what it got."""

    max_input_tokens = 100_000
    model = "scripted"

    def __init__(self, call: ToolCall) -> None:
        self.call = call
        self.seen: list[tuple[list[Message], list[dict[str, Any]] | None]] = []

    async def complete(
        self,
        messages: list[Message],
        system_prompt: str = "",
        tools: list[dict[str, Any]] | None = None,
    ) -> LLMResponse:
        raise NotImplementedError

    async def stream(  # type: ignore[override,misc]  # an async generator, as the host's LLMs
        self,
        messages: list[Message],
        system_prompt: str = "",
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        self.seen.append((list(messages), tools))
        if len(self.seen) == 1:
            yield StreamEvent(type="tool_use_start", tool_call=self.call)
            yield StreamEvent(type="tool_use_end", tool_call=self.call)
            yield StreamEvent(type="message_end", stop_reason="tool_use")
        else:
            yield StreamEvent(type="text_delta", text="You asked about it in March.")
            yield StreamEvent(type="message_end", stop_reason="end_turn")

    def estimate_cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
    ) -> float | None:
        return None


CONFIG = """\
schema: "slack-agents/v1"
version: "1.0.0"
slack:
  bot_token: "xoxb-test"
  app_token: "xapp-test"
llm:
  type: slack_agents.llm.anthropic
  model: claude-sonnet-4-5
storage:
  type: slack_agents_sa
  url: {url}
access:
  type: slack_agents.access.allow_all
tools:
  history:
    type: slack_agents_sa.tools.history
    scope: channel
    allowed_functions: [".*"]
"""


async def test_an_agent_configured_for_the_tool_calls_it_through_the_agent_loop(
    tmp_path: Path, fresh_url: str, provider_options: dict[str, Any]
) -> None:
    agent_dir = tmp_path / AGENT
    agent_dir.mkdir()
    (agent_dir / "config.yaml").write_text(CONFIG.format(url=json.dumps(fresh_url)))
    (agent_dir / "system_prompt.txt").write_text("You help with billing.")
    config, system_prompt, agent_name = load_agent_config(agent_dir)
    # What the host's SlackAgent.start() does: storage first, then the FrameworkContext,
    # then each tool through load_plugin (slack_agents/slack/agent.py, _init_tools).
    storage_options = dict(config.storage)
    storage = load_plugin(storage_options.pop("type"), **storage_options, **provider_options)
    assert isinstance(storage, Provider)
    await storage.initialize()
    try:
        context = FrameworkContext(
            bot_token=config.slack.bot_token, agent_name=agent_name, storage=storage
        )
        tools: list[BaseToolProvider] = []
        for options in config.tools.values():
            options = dict(options)
            tool = load_plugin(options.pop("type"), framework_ctx=context, **options)
            assert isinstance(tool, BaseToolProvider)
            await tool.initialize()
            tools.append(tool)
        await thread(storage, "C1", "1700000001.000100", "UANN", "the invoice for March")
        await thread(storage, "C2", "1700000002.000100", "UBO", "Bo's invoice elsewhere")
        await thread(storage, "C1", "1700000003.000100", "UBO", "Bo's invoice here")
        await thread(storage, "C1", NOW, "UANN", "when did I ask about the invoice?")
        call = ToolCall(id="toolu_1", name=TOOL, input={"query": "invoice"})
        llm = ScriptedLLM(call)

        events = [
            event
            async for event in run_agent_loop_streaming(
                llm=llm,
                messages=[Message(role="user", content="when did I ask about the invoice?")],
                system_prompt=system_prompt,
                tool_providers=tools,
                user_conversation_context=caller("UANN", "C1", NOW),
                storage=storage,
            )
        ]
    finally:
        await storage.close()

    [(_, offered), (answered, _)] = llm.seen
    assert offered is not None
    assert [tool["name"] for tool in offered] == [TOOL]
    [done] = [e for e in events if isinstance(e, dict) and e["status"] == "done"]
    # scope: channel (from config.yaml): Ann's thread and Bo's in her channel, not hers now.
    assert threads(done["tool_result"]) == {
        ("C1", "1700000001.000100"),
        ("C1", "1700000003.000100"),
    }
    # The result went back to the LLM as the framework's tool_result block.
    content = answered[-1].content
    assert isinstance(content, list)
    [tool_result] = content
    assert tool_result["type"] == "tool_result"
    assert tool_result["tool_use_id"] == "toolu_1"
    assert "is_error" not in tool_result
    assert tool_result["content"] == done["tool_result"]["content"]
    assert events[-1] == StreamEvent(type="message_end", stop_reason="end_turn")
