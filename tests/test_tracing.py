"""Spans (the `[otel]` extra): one per call, named and tagged, never holding a value."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from slack_agents.storage.base import BaseStorageProvider, OAuthTokenRow

from slack_agents_sa import Provider, ProviderClosedError, tracing
from slack_agents_sa.keyvalue import KeyValueMethods

REPO_ROOT = Path(__file__).resolve().parent.parent
AGENT = "agent-ocelot"
#: Every argument and value the calls below pass, bar the agent name: none may reach a span.
NAMESPACE = "ns-aardvark"
KEY = "key-bandicoot"
VALUE = {"field-cassowary": "value-dingo"}
CHANNEL, THREAD, CHANNEL_NAME = "C-echidna", "T-fossa", "chan-gecko"
USER_ID, USER_NAME, USER_HANDLE = "U-hyrax", "name-ibis", "handle-jackal"
TEXT = "text-kinkajou"
SERVER = "srv-lemur"
TOKEN = OAuthTokenRow(
    access_token="access-mongoose",
    refresh_token_enc="refresh-narwhal",
    token_type="type-okapi",
    scopes="scope-pangolin",
    expires_at=1_900_000_000,
    created_at=1_700_000_000,
    updated_at=1_700_000_100,
)
NEVER_RECORDED = [
    NAMESPACE,
    KEY,
    "field-cassowary",
    "value-dingo",
    CHANNEL,
    THREAD,
    CHANNEL_NAME,
    USER_ID,
    USER_NAME,
    USER_HANDLE,
    TEXT,
    SERVER,
    "access-mongoose",
    "refresh-narwhal",
    "type-okapi",
    "scope-pangolin",
    "1900000000",
    "1700000100",
]
DB_SYSTEMS = {"sqlite", "postgresql", "mysql"}


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans of this test only: a TracerProvider of its own in place of the global one."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("slack_agents_sa"))
    yield spans
    provider.shutdown()


async def _turn(provider: Provider) -> int:
    """One agent turn's worth of calls, each argument a marker that must not be recorded."""
    await provider.set(NAMESPACE, KEY, VALUE)
    assert await provider.get(NAMESPACE, KEY) == VALUE
    conversation_id = await provider.get_or_create_conversation(
        AGENT, CHANNEL, THREAD, CHANNEL_NAME
    )
    message_id = await provider.create_message(conversation_id, USER_ID, USER_NAME, USER_HANDLE)
    await provider.append_text_block(message_id, TEXT, is_user=True)
    assert await provider.get_message_blocks(str(conversation_id)) == [
        (message_id, [{"block_type": "user_text", "content": {"text": TEXT}}])
    ]
    await provider.put_oauth_token(USER_ID, SERVER, TOKEN)
    return conversation_id


async def test_each_call_is_one_span_with_db_system_agent_and_conversation(
    provider: Provider, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    conversation_id = await _turn(provider)
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [
        "slack_agents_sa.set",
        "slack_agents_sa.get",
        "slack_agents_sa.get_or_create_conversation",
        "slack_agents_sa.create_message",
        "slack_agents_sa.append_text_block",
        "slack_agents_sa.get_message_blocks",
        "slack_agents_sa.put_oauth_token",
    ]
    system = provider.db.engine.dialect.name.replace("mariadb", "mysql")
    assert system in DB_SYSTEMS
    expected = [
        {"db.system": system},
        {"db.system": system},
        {"db.system": system, tracing.AGENT_NAME: AGENT},
        {"db.system": system, tracing.CONVERSATION_ID: conversation_id},
        {"db.system": system},
        # Given as a str, recorded as the id it names.
        {"db.system": system, tracing.CONVERSATION_ID: conversation_id},
        {"db.system": system},
    ]
    assert [dict(span.attributes or {}) for span in spans] == expected
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET
        assert span.events == ()
        assert span.parent is None


async def test_no_span_holds_a_value_key_namespace_user_or_secret(
    provider: Provider, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    await _turn(provider)
    await provider.query(NAMESPACE, VALUE)
    await provider.get_oauth_token(USER_ID, SERVER)
    # Failing calls whose messages quote what they were given: the spans must not.
    with pytest.raises(ValueError, match="date-quagga"):
        await provider.get_conversations_for_export(AGENT, date_from="date-quagga")
    with pytest.raises(ValueError):
        await provider.set(NAMESPACE, KEY, {"x": float("nan")})
    spans = exporter.get_finished_spans()
    assert len(spans) == 11
    # to_json holds everything a span exports: name, attributes, events, status, links.
    exported = "\n".join(span.to_json() for span in spans)
    for marker in [*NEVER_RECORDED, "date-quagga"]:
        assert marker.lower() not in exported.lower(), marker


async def test_a_failing_call_is_an_error_span_with_the_error_type_only(
    provider: Provider, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    with pytest.raises(ValueError, match="does not name an existing row"):
        await provider.create_message(987_654, USER_ID, USER_NAME, USER_HANDLE)
    [span] = exporter.get_finished_spans()
    assert span.name == "slack_agents_sa.create_message"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "slack_agents_sa.errors.MissingRowError"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "slack_agents_sa.errors.MissingRowError"
    assert span.attributes[tracing.CONVERSATION_ID] == 987_654
    assert span.events == ()  # no exception event: its message could quote a value


async def test_a_closed_provider_error_is_named_fully_qualified(
    fresh_url: str, exporter: InMemorySpanExporter
) -> None:
    provider = Provider(url=fresh_url)
    with pytest.raises(ProviderClosedError):
        await provider.get(NAMESPACE, KEY)
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "slack_agents_sa.errors.ProviderClosedError"
    assert span.attributes["db.system"] in DB_SYSTEMS


async def test_a_cancelled_call_ends_its_span_marked_cancelled_not_failed(
    provider: Provider, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    call = asyncio.ensure_future(provider.set(NAMESPACE, KEY, VALUE))
    await asyncio.sleep(0)  # the call is inside its span, waiting on the database
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    [span] = exporter.get_finished_spans()
    assert span.name == "slack_agents_sa.set"
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert span.attributes[tracing.CANCELLED] is True
    assert "error.type" not in span.attributes
    # The statement ran on to its end (shielded) and the provider serves the next call.
    await provider.db.settle()
    assert await provider.get(NAMESPACE, KEY) == VALUE


async def test_spans_nest_under_the_callers_span(
    provider: Provider, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    assert tracing._tracer is not None  # the exporter fixture's
    with tracing._tracer.start_as_current_span("agent turn"):
        await provider.get(NAMESPACE, KEY)
    inner, outer = exporter.get_finished_spans()
    assert inner.name == "slack_agents_sa.get"
    assert inner.parent is not None and outer.context is not None
    assert inner.parent.span_id == outer.context.span_id


def test_every_public_async_method_is_wrapped_keeping_signature_and_docstring() -> None:
    host = {
        name
        for name, member in vars(BaseStorageProvider).items()
        if inspect.iscoroutinefunction(member)
    }
    public_async = {
        name
        for name in dir(Provider)
        if not name.startswith("_") and inspect.iscoroutinefunction(getattr(Provider, name))
    }
    wrapped = {name for name in public_async if hasattr(vars(Provider).get(name), "__wrapped__")}
    assert host <= wrapped == public_async
    assert {"initialize", "close"} <= wrapped
    traced_get = vars(Provider)["query"]
    assert traced_get.__wrapped__ is KeyValueMethods.query
    assert traced_get.__doc__ == KeyValueMethods.query.__doc__
    assert inspect.signature(Provider.query) == inspect.signature(KeyValueMethods.query)


async def test_a_method_added_before_instrument_is_traced_once(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Later(Provider):
        async def prune_like(self, agent_name: str) -> str:
            return agent_name

    tracer = tracing._tracer
    tracing.instrument(Later)
    tracing.instrument(Later)  # again: nothing wrapped twice
    monkeypatch.setattr(tracing, "_tracer", tracer)  # instrument took the global one
    assert "get" not in vars(Later)  # inherited spans are Provider's own
    assert await Later(url="sqlite://").prune_like(AGENT) == AGENT
    [span] = exporter.get_finished_spans()
    assert span.name == "slack_agents_sa.prune_like"
    assert span.attributes == {"db.system": "sqlite", tracing.AGENT_NAME: AGENT}


def _python(script: str, pythonpath: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_without_opentelemetry_the_methods_stay_undecorated(tmp_path: Path) -> None:
    blocked = tmp_path / "opentelemetry"
    blocked.mkdir()
    (blocked / "__init__.py").write_text("raise ImportError('the [otel] extra is not installed')\n")
    out = _python(
        """
        import asyncio, sys
        from slack_agents_sa import Provider
        from slack_agents_sa.keyvalue import KeyValueMethods

        async def main():
            provider = Provider(url="sqlite://")
            await provider.initialize()
            print(await provider.get("n", "k"))
            await provider.close()

        try:
            import opentelemetry.trace
        except ImportError:
            print("blocked")
        assert Provider.get is KeyValueMethods.get
        assert not any(hasattr(m, "__wrapped__") for m in vars(Provider).values())
        asyncio.run(main())
        """,
        pythonpath=tmp_path,
    )
    assert out.split() == ["blocked", "None"]


def test_a_tracer_provider_set_after_import_gets_the_spans() -> None:
    out = _python(
        """
        import asyncio
        from slack_agents_sa import Provider  # instrumented before any TracerProvider
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)

        async def main():
            provider = Provider(url="sqlite://")
            await provider.initialize()
            await provider.get("n", "k")
            await provider.close()

        asyncio.run(main())
        for span in exporter.get_finished_spans():
            print(span.name, span.instrumentation_scope.name)
        """
    )
    assert out.splitlines() == [
        "slack_agents_sa.initialize slack_agents_sa",
        "slack_agents_sa.get slack_agents_sa",
        "slack_agents_sa.close slack_agents_sa",
    ]
