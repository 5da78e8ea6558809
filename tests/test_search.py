"""Search over history (`Provider.search_history`): an agent's past conversations found by
the words people and the agent wrote, through each database's own full-text index.

- What is found: a person's text, the agent's text, an uploaded document's extracted text;
  never tool inputs or outputs, files or usage. Imported history is found too.
- How: every word required, case-insensitive, newest first, `limit`, `since`, `channel_id`,
  `exclude_thread`, only the agent's own conversations; each hit says who wrote it where.
- A person's words are never query syntax: quotes, `*`, `-`, `NEAR`, `:`, `%`, `_`, SQL,
  10 kB of noise: no error, and the hits are those of the plain words.
- A word is found however the text joins it to others (e-mail, URL, `snake_case`, ...).
- The access rule (`user_id`, `also_in_channel`), as a property over random conversations.
- Erasure, prune and a host's own deletes take the hits with them at once (SQLite's FTS5
  index checked against its table).
- Migration 0007 backfills the text blocks written before it, and survives a downgrade.
- Bad arguments are refused before any SQL; a cancelled search leaves the provider working.

Every test runs on each backend and executor (`provider`, `fresh_url`), the migration and
import tests on each persistent backend (`empty_url`).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_agents.storage import sqlite as builtin_sqlite
from sqlalchemy import Insert, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from slack_agents_sa import HistoryHit, Provider
from slack_agents_sa.backends.search import TextSearch
from slack_agents_sa.database import make_engine
from slack_agents_sa.importer import import_database
from slack_agents_sa.migrate import downgrade, upgrade
from slack_agents_sa.models import Block, Conversation, Message, table_of
from slack_agents_sa.search_text import MAX_INDEXED_CHARS
from slack_agents_sa.settings import normalize_url
from slack_agents_sa.types import utcnow
from tests.conversation_rows import age
from tests.databases import PERSISTENT_BACKENDS_BOTH, backend_params, opened_provider
from tests.search_index import assert_search_index_matches_the_blocks, index_every_block

AGENT = "helper"
OTHER_AGENT = "other"

_conversations = table_of(Conversation)
_messages = table_of(Message)
_blocks = table_of(Block)

#: A word as the search reads one (letters and digits), for the tests' own expectations.
_WORD = re.compile(r"[^\W_]+")


@pytest.fixture(autouse=True)
def _searches_go_through_sqlites_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite indexes new blocks in batches of 512 and scans those past the index
    (tests/test_search_batches.py). These tests write a few blocks each, so every search
    here first puts them all into the index: they search through FTS5, as a database with
    any history does."""
    search = Provider.search_history

    async def search_through_the_index(
        self: Provider, *args: Any, **kwargs: Any
    ) -> list[HistoryHit]:
        await index_every_block(self)
        return await search(self, *args, **kwargs)

    monkeypatch.setattr(Provider, "search_history", search_through_the_index)


# --- Writing history ------------------------------------------------------------------------


async def thread(
    storage: Provider,
    channel: str = "C1",
    thread_id: str = "1.1",
    *,
    agent: str = AGENT,
) -> int:
    return await storage.get_or_create_conversation(agent, channel, thread_id, f"chan-{channel}")


async def said(storage: Provider, conversation_id: int, user: str, words: str) -> int:
    """A message of `user`'s holding their text `words`; its id."""
    message = await storage.create_message(conversation_id, user, f"name {user}", user.lower())
    await storage.append_text_block(message, words, is_user=True)
    return message


async def answered(storage: Provider, message: int, words: str) -> None:
    """The agent's text `words` in `message` (the turn the agent answers)."""
    await storage.append_text_block(message, words)


async def snippets(storage: Provider, words: str, **options: Any) -> list[str]:
    """The snippets of a search's hits, newest first (a short text's snippet is all of it)."""
    return [hit.snippet for hit in await storage.search_history(AGENT, words, **options)]


def is_mysql(storage: Provider) -> bool:
    return storage.db.dialect_name in ("mysql", "mariadb")


def listed(mismatches: dict[Any, Any]) -> str:
    """Each mismatch on a line of its own (pytest's diff cuts a long dict short)."""
    return "\n".join(f"{key!r}: {value!r}" for key, value in mismatches.items())


async def block_count(storage: Provider) -> int:
    return int((await storage.db.execute(select(func.count()).select_from(_blocks))).scalar_one())


# --- What is found --------------------------------------------------------------------------


async def test_finds_what_people_and_the_agent_wrote_never_tools_files_or_usage(
    provider: Provider,
) -> None:
    conversation_id = await thread(provider)
    message = await said(provider, conversation_id, "U1", "Where is the quarterly kiwi report?")
    tool = await provider.append_tool_block(
        message,
        tool_call_id="call-1",
        tool_name="lookup",
        tool_input={"query": "toolinputword kiwi"},
        tool_output="tooloutputword kiwi",
        is_error=False,
    )
    chart = await provider.append_file_block(
        message,
        {"data": "iVBO", "filename": "fileonlyword-kiwi.png", "mimeType": "image/png"},
        is_user=False,
        filename="fileonlyword-kiwi.png",
        mimetype="image/png",
        size_bytes=4,
        tool_block_id=tool,
    )
    upload = await provider.append_file_block(
        message,
        {"type": "document", "filename": "budget.pdf", "text": "fileonlyword"},
        is_user=True,
        filename="budget.pdf",
        mimetype="application/pdf",
        size_bytes=10,
    )
    await provider.append_text_block(
        message, "Extracted: the budget for mango exports", is_user=True, source_file_id=upload
    )
    await provider.append_text_block(message, "The kiwi report is attached.", source_file_id=chart)
    await provider.append_usage_block(
        message,
        model="usagemodelword",
        version="usageversionword",
        input_tokens=10,
        output_tokens=1,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        peak_single_call_input_tokens=10,
        estimated_cost_usd=0.0,
    )

    kiwi = await provider.search_history(AGENT, "kiwi")
    assert [(hit.snippet, hit.from_agent) for hit in kiwi] == [
        ("The kiwi report is attached.", True),
        ("Where is the quarterly kiwi report?", False),
    ]
    [document] = await provider.search_history(AGENT, "mango")
    assert document.snippet == "Extracted: the budget for mango exports"
    assert not document.from_agent and document.author_user_id == "U1"
    for hidden in (
        "toolinputword",
        "tooloutputword",
        "fileonlyword",
        "usagemodelword",
        "usageversionword",
        "lookup",
        "png",
    ):
        assert await provider.search_history(AGENT, hidden) == [], hidden
    # Only text blocks carry searchable text at all.
    kinds = select(_blocks.c.block_type, _blocks.c.search_text.is_not(None))
    rows = {(kind, has) for kind, has in map(tuple, await provider.db.fetch(kinds))}
    assert rows == {
        ("user_text", True),
        ("text", True),
        ("tool_use", False),
        ("file", False),
        ("user_file", False),
        ("usage", False),
    }


async def test_every_word_is_required_and_case_does_not_matter(provider: Provider) -> None:
    conversation_id = await thread(provider)
    for words in ("Deploy the Gateway tonight", "deploy the database", "GATEWAY timeout"):
        await said(provider, conversation_id, "U1", words)

    assert await snippets(provider, "deploy gateway") == ["Deploy the Gateway tonight"]
    assert await snippets(provider, "DEPLOY") == [
        "deploy the database",
        "Deploy the Gateway tonight",
    ]
    assert await snippets(provider, "gAtEwAy") == ["GATEWAY timeout", "Deploy the Gateway tonight"]
    assert await snippets(provider, "deploy gateway database") == []
    assert await snippets(provider, "gateway tonight timeout") == []
    # A word is a whole word: neither a prefix nor a part of a longer one.
    assert await snippets(provider, "deplo") == []
    assert await snippets(provider, "gate") == []


async def test_hits_come_newest_first_up_to_limit(provider: Provider) -> None:
    first = await thread(provider, thread_id="1.1")
    second = await thread(provider, thread_id="2.2")
    messages = []
    for number in range(6):  # alternating between the two conversations
        conversation_id = first if number % 2 == 0 else second
        messages.append(await said(provider, conversation_id, "U1", f"status update {number}"))

    everything = await provider.search_history(AGENT, "status")
    assert [hit.snippet for hit in everything] == [f"status update {n}" for n in range(5, -1, -1)]
    assert [hit.message_id for hit in everything] == messages[::-1]
    three = await provider.search_history(AGENT, "status", limit=3)
    assert three == everything[:3]
    assert await provider.search_history(AGENT, "status", limit=1) == everything[:1]
    assert await provider.search_history(AGENT, "status", limit=200) == everything


async def test_since_channel_and_exclude_thread_narrow_the_hits(provider: Provider) -> None:
    here = await thread(provider, "C1", "1.1")
    there = await thread(provider, "C2", "1.1")  # the same thread id in another channel
    later = await thread(provider, "C1", "2.2")
    old = await said(provider, here, "U1", "invoice from march")
    await said(provider, there, "U2", "invoice from april")
    await said(provider, later, "U3", "invoice from may")
    then = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    await provider.db.execute(
        update(_blocks).where(_blocks.c.message_id == old), {"created_at": then}
    )

    all_three = ["invoice from may", "invoice from april", "invoice from march"]
    assert await snippets(provider, "invoice") == all_three
    assert await snippets(provider, "invoice", since=then) == all_three  # then or later
    assert await snippets(provider, "invoice", since=then + timedelta(seconds=1)) == all_three[:2]
    assert await snippets(provider, "invoice", since=utcnow() + timedelta(hours=1)) == []
    assert await snippets(provider, "invoice", channel_id="C1") == [all_three[0], all_three[2]]
    assert await snippets(provider, "invoice", channel_id="C2") == [all_three[1]]
    assert await snippets(provider, "invoice", channel_id="C9") == []
    # Thread ids are unique per channel only: the pair leaves out exactly one conversation.
    assert await snippets(provider, "invoice", exclude_thread=("C1", "1.1")) == all_three[:2]
    assert await snippets(provider, "invoice", exclude_thread=("C2", "1.1")) == [
        all_three[0],
        all_three[2],
    ]
    assert await snippets(provider, "invoice", exclude_thread=("C3", "1.1")) == all_three
    combined = await snippets(
        provider, "invoice", channel_id="C1", since=then + timedelta(seconds=1)
    )
    assert combined == ["invoice from may"]


async def test_other_agents_conversations_are_never_found(provider: Provider) -> None:
    mine = await thread(provider)
    theirs = await thread(provider, agent=OTHER_AGENT)  # same channel and thread
    await said(provider, mine, "U1", "secret roadmap mine")
    await said(provider, theirs, "U1", "secret roadmap theirs")

    assert await snippets(provider, "roadmap") == ["secret roadmap mine"]
    assert await snippets(provider, "roadmap", user_id="U1", also_in_channel="C1") == [
        "secret roadmap mine"
    ]
    [hit] = await provider.search_history(OTHER_AGENT, "roadmap")
    assert hit.snippet == "secret roadmap theirs" and hit.author_user_id == "U1"
    assert await provider.search_history("nobody", "roadmap") == []
    assert await provider.search_history(AGENT.upper(), "roadmap") == []


async def test_a_hit_says_who_wrote_it_where_and_when(provider: Provider) -> None:
    before = utcnow()
    conversation_id = await provider.get_or_create_conversation(AGENT, "C7", "7.7", "launch")
    message = await provider.create_message(conversation_id, "U7", "Grace Hopper", "grace")
    long_text = "lorem " * 150 + "the Zeppelin lands at noon " + "ipsum " * 150
    await provider.append_text_block(message, long_text, is_user=True)
    await provider.append_text_block(message, "Noted: zeppelin landing logged.")

    answer, question = await provider.search_history(AGENT, "zeppelin")
    for hit in (answer, question):
        assert isinstance(hit, HistoryHit)
        assert hit.conversation_id == conversation_id and hit.message_id == message
        assert (hit.channel_id, hit.channel_name, hit.thread_id) == ("C7", "launch", "7.7")
        assert hit.created_at.tzinfo is not None and hit.created_at.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=5) <= hit.created_at <= utcnow() + timedelta(seconds=5)
        assert "zeppelin" in hit.snippet.lower()
        assert 0 < hit.rank <= 1
    assert answer.from_agent and answer.author_name == AGENT
    assert answer.author_user_id != "U7"  # the agent's words are not the person's
    assert answer.snippet == "Noted: zeppelin landing logged."
    assert not question.from_agent and question.author_name == "Grace Hopper"
    assert question.author_user_id == "U7"
    # A long text's snippet is around the word, on one line, at most 200 characters.
    assert "Zeppelin lands" in question.snippet
    assert len(question.snippet.strip("…")) <= 200
    assert question.snippet.startswith("…") and question.snippet.endswith("…")
    assert question.rank < answer.rank


async def test_imported_history_is_found(tmp_path: Path, empty_url: str) -> None:
    source = tmp_path / "builtin.db"
    builtin = builtin_sqlite.Provider(str(source))
    await builtin.initialize()
    try:
        conversation_id = await builtin.get_or_create_conversation(AGENT, "C1", "1.1", "ops")
        message = await builtin.create_message(conversation_id, "U1", "Ann", "ann")
        await builtin.append_text_block(message, "imported question about walrus", is_user=True)
        await builtin.append_tool_block(
            message,
            tool_call_id="call-1",
            tool_name="lookup",
            tool_input={"q": "importedtoolword walrus"},
            tool_output="importedoutputword",
            is_error=False,
        )
        await builtin.append_text_block(message, "imported answer about walrus")
    finally:
        await builtin.close()

    await import_database(normalize_url(f"sqlite:///{source}"), normalize_url(empty_url))
    async with opened_provider(empty_url) as storage:
        hits = await storage.search_history(AGENT, "walrus")
        assert [(hit.snippet, hit.from_agent) for hit in hits] == [
            ("imported answer about walrus", True),
            ("imported question about walrus", False),
        ]
        assert await storage.search_history(AGENT, "importedtoolword") == []
        assert await storage.search_history(AGENT, "importedoutputword") == []
        await assert_search_index_matches_the_blocks(storage)


async def test_a_large_documents_text_is_stored_and_its_first_words_found(
    provider: Provider,
) -> None:
    """An uploaded document's extracted text can be a megabyte of distinct words (a table of
    identifiers, a log): it is stored whole, and its first `MAX_INDEXED_CHARS` characters
    of words are found (PostgreSQL refuses a tsvector over 1 MB, which this text passes).

    14,000 words of 80 characters, within MariaDB's longest word (84). (Not more words:
    MariaDB 10.11's FULLTEXT index loses a word now and then from a text of some 20,000
    words or more, a server fault.)"""
    conversation_id = await thread(provider)
    message = await said(provider, conversation_id, "U1", "here is the export")
    words = [f"row{number:06d}".ljust(80, "q") for number in range(14_000)]
    document = " ".join(words)
    await provider.append_text_block(message, document, is_user=True)

    indexed = MAX_INDEXED_CHARS // 81  # words of 80 characters and a space
    for word in (words[0], words[indexed - 1]):
        [hit] = await provider.search_history(AGENT, word)
        assert word in hit.snippet
    for word in (words[indexed + 1], words[-1]):
        assert await provider.search_history(AGENT, word) == []
    [(_, blocks)] = await provider.get_message_blocks(conversation_id)
    assert [block["content"]["text"] for block in blocks][-1] == document


async def test_a_text_block_with_nul_or_a_lone_surrogate_is_stored_as_before(
    provider: Provider,
) -> None:
    """A text block's text lives in JSON, which keeps NUL and lone surrogates (escaped):
    `append_text_block` took both before the search existed, and still does; the other words
    of such a text are found."""
    conversation_id = await thread(provider)
    message = await said(provider, conversation_id, "U1", "plain start")
    nul = "binary a\x00b nulword"
    surrogate = "broken \ud800 surrogateword"
    await provider.append_text_block(message, nul, is_user=True)
    await provider.append_text_block(message, surrogate)

    [(_, blocks)] = await provider.get_message_blocks(conversation_id)
    assert [block["content"]["text"] for block in blocks] == ["plain start", nul, surrogate]
    assert len(await provider.search_history(AGENT, "nulword")) == 1
    assert len(await provider.search_history(AGENT, "surrogateword")) == 1


# --- A person's words are never query syntax -------------------------------------------------

#: label -> text: one block each.
_TEXTS = {
    "foo-bar": "foo-bar meeting notes",
    "foobar": "foobar is one word",
    "foo": "just foo here",
    "percent": "100% sure now",
    "quote": 'she said "hello" loudly',
}
_FOO = frozenset({"foo-bar", "foo"})
_NONE: frozenset[str] = frozenset()


def _noise(size: int) -> str:
    """`size` characters of random words and every kind of punctuation."""
    pieces = ["foo", "bar", "hello", "near", "or", "and", "not", "x", "😀", "ß", "İ", "_"]
    pieces += list("\"'*()+-~<>@%_\\:^{}[];,.!?|&=$#/")
    noise = ""
    while len(noise) < size:
        step = len(noise)  # a fixed scramble: the same noise on every run
        noise += pieces[(step * step * 31 + step * 7) % len(pieces)] + ["", " ", "\n"][step % 3]
    return noise[:size]


#: query -> the labels of the blocks holding each of its plain words (`None`: no assertion on
#: which, only that every hit holds every word).
_QUERIES: dict[str, frozenset[str] | None] = {
    '"': _NONE,
    '""': _NONE,
    "'": _NONE,
    "*": _NONE,
    "foo*": _FOO,  # not a prefix: foobar stays out
    "*foo": _FOO,
    "he*": _NONE,
    "hello*": frozenset({"quote"}),
    "NEAR(foo bar)": _NONE,
    "NEAR": _NONE,
    "foo OR foobar": _NONE,  # "or" is a word: no text holds all three
    "foo AND foobar": _NONE,
    "-foo": _FOO,  # not an exclusion
    "+foo": _FOO,
    "foo:": _FOO,
    "search_text:foo": _NONE,  # not FTS5's column filter
    "title:foo": _NONE,
    "^foo": _FOO,
    "{foo}": _FOO,
    "foo\\": _FOO,
    "\\foo": _FOO,
    "(": _NONE,
    ")": _NONE,
    "@2": _NONE,
    "~": _NONE,
    "<": _NONE,
    ">": _NONE,
    "%": _NONE,  # never a wildcard
    "_": _NONE,
    "1%0": _NONE,
    "f%": _NONE,
    "fo_": _NONE,
    "\\": _NONE,
    "'; DROP TABLE agents_blocks; --": _NONE,
    "AND": _NONE,
    "NOT foo": _NONE,
    "foo-bar": frozenset({"foo-bar"}),
    '"foo"': _FOO,
    "FOO": _FOO,
    "foo bar": frozenset({"foo-bar"}),
    "100%": frozenset({"percent"}),
    '"hello': frozenset({"quote"}),
    'hello"': frozenset({"quote"}),
    "😀": _NONE,
    "!?.,;:-+*": _NONE,
    "foo " + "\"'*()+-~<>@%_\\:^" * 625: _FOO,  # 10 kB, one word
    _noise(10_000): None,
}


async def _query_mismatches(storage: Provider) -> dict[str, Any]:
    """Each of `_QUERIES` searched: {query: what went wrong} for those whose hits are not the
    blocks that hold its plain words (an error is a mismatch too)."""
    conversation_id = await thread(storage)
    for words in _TEXTS.values():
        await said(storage, conversation_id, "U1", words)
    label_of = {words: label for label, words in _TEXTS.items()}
    mismatches: dict[str, Any] = {}
    for query, expected in _QUERIES.items():
        shown = query if len(query) < 40 else f"{query[:40]}… ({len(query)} chars)"
        try:
            hits = await storage.search_history(AGENT, query, limit=200)
        except Exception as error:  # the test reports every query's outcome at once
            mismatches[shown] = repr(error)
            continue
        found = [label_of[hit.snippet] for hit in hits]
        if len(found) != len(set(found)):
            mismatches[shown] = f"duplicate hits {found}"
        elif expected is not None and set(found) != expected:
            mismatches[shown] = sorted(found)
        elif expected is None:
            asked = set(_WORD.findall(query[:2000].lower()))
            for label in found:
                if not asked <= set(_WORD.findall(_TEXTS[label].lower())):
                    mismatches[shown] = f"{label} lacks a word of the query"
    return mismatches


async def _table_rows(storage: Provider) -> tuple[int, ...]:
    counts = []
    for table in (_conversations, _messages, _blocks):
        stmt = select(func.count()).select_from(table)
        counts.append(int((await storage.db.execute(stmt)).scalar_one()))
    return tuple(counts)


async def test_a_persons_words_are_never_query_syntax(provider: Provider) -> None:
    """Each database's search syntax (FTS5's quotes, `*`, `NEAR`, `^`, column filters;
    boolean mode's `+ - ~ < > ( ) " *`; tsquery's `& | ! :*`; LIKE's `% _ \\`) typed as a
    search is never syntax: no error, and the hits are the blocks holding its plain words."""
    mismatches = await _query_mismatches(provider)
    assert mismatches == {}, listed(mismatches)
    assert await _table_rows(provider) == (1, 5, 5)  # every table still there, whole
    assert await snippets(provider, "foo") == [_TEXTS["foo"], _TEXTS["foo-bar"]]
    await assert_search_index_matches_the_blocks(provider)


async def test_any_other_dialects_like_search_finds_whole_words_only(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search a dialect without a known index gets (LIKE over the text), run here on
    each database: the same hits as the native indexes, `%` and `_` never wildcards."""
    monkeypatch.setattr(provider.db.backend, "text_search", TextSearch())
    mismatches = await _query_mismatches(provider)
    assert mismatches == {}, listed(mismatches)


#: text -> searches each of which must find it: the text's words however it joins them, and
#: the text as typed.
_JOINED_WORDS = {
    "write to anna@mailhost.org today": ("anna@mailhost.org", "anna", "mailhost"),
    "docs at https://docs.webhost.net/guide/setup now": (
        "https://docs.webhost.net/guide/setup",
        "webhost",
        "guide",
    ),
    "server db.internal.corp is down": ("db.internal.corp", "internal", "corp"),
    "call snake_case_handler here": ("snake_case_handler", "snake", "handler"),
    "path /usr/lib/python3 here": ("/usr/lib/python3", "python3"),
    "build 2718.2818 passed": ("2718.2818", "2818"),
    "uses node.js daily": ("node.js", "node"),
    "the agent's answer": ("agent's", "agent"),
    "e-mail hyphen": ("e-mail", "hyphen"),
    # NFD (as in text copied from macOS file names): the accent is a combining mark.
    "from cafe\u0301 decomposed": ("cafe\u0301 decomposed", "decomposed"),
    "visit İstanbul soon": ("İstanbul", "visit İstanbul soon"),
}
#: Longer than MariaDB's innodb_ft_max_token_size (84): found elsewhere, not there.
LONG_WORD = "x" * 90


async def test_each_word_is_found_whatever_joins_it_to_the_next(provider: Provider) -> None:
    conversation_id = await thread(provider)
    for words in _JOINED_WORDS:
        await said(provider, conversation_id, "U1", words)
    not_found = {
        (words, query): found
        for words, queries in _JOINED_WORDS.items()
        for query in (words, *queries)
        if (found := await snippets(provider, query)) != [words]
    }
    assert not_found == {}, listed(not_found)
    await said(provider, conversation_id, "U1", f"a {LONG_WORD} token")
    expected = [] if is_mysql(provider) else [f"a {LONG_WORD} token"]
    assert await snippets(provider, LONG_WORD.upper()) == expected


# --- The access rule -------------------------------------------------------------------------

#: Lookalike ids: a person's rule never matches another's (case, trailing space).
PEOPLE = ["U1", "U2", "U3", "u1", "U1 "]
CHANNELS = ["C1", "C2", "C3", "c1"]
SHARED_WORD = "orchid"
_example_numbers = itertools.count()

ACCESS_RULE = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Conversations as (channel, the people who wrote a message in it, in order).
CONVERSATIONS = st.lists(
    st.tuples(st.sampled_from(CHANNELS), st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=3)),
    min_size=1,
    max_size=5,
)


@ACCESS_RULE
@given(
    conversations=CONVERSATIONS,
    user=st.sampled_from(PEOPLE),
    channel=st.none() | st.sampled_from(CHANNELS),
)
async def test_a_person_finds_only_conversations_they_wrote_in_or_of_the_channel_given(
    provider: Provider,
    conversations: list[tuple[str, list[str]]],
    user: str,
    channel: str | None,
) -> None:
    agent = f"agent-{next(_example_numbers)}"  # each example sees its own conversations only
    written: dict[int, tuple[str, list[str]]] = {}
    for number, (channel_id, writers) in enumerate(conversations):
        key = await thread(provider, channel_id, f"{number}.1", agent=agent)
        for writer in writers:
            message = await said(provider, key, writer, f"{SHARED_WORD} from {writer}")
            await answered(provider, message, f"{SHARED_WORD} noted")
        written[key] = (channel_id, writers)
    # Another agent's conversation the person wrote in, in the channel given: never found.
    elsewhere = await thread(provider, channel or "C1", "9.9", agent=f"{agent}-other")
    await said(provider, elsewhere, user, f"{SHARED_WORD} elsewhere")
    own = {key for key, (_, writers) in written.items() if user in writers}
    of_channel = {key for key, (channel_id, _) in written.items() if channel_id == channel}

    hits = await provider.search_history(
        agent, SHARED_WORD, user_id=user, also_in_channel=channel, limit=200
    )
    assert {hit.conversation_id for hit in hits} == own | of_channel
    # Every text block of those conversations: each message's two.
    assert len(hits) == 2 * sum(len(written[key][1]) for key in own | of_channel)
    only_own = await provider.search_history(agent, SHARED_WORD, user_id=user, limit=200)
    assert {hit.conversation_id for hit in only_own} == own


# --- Deletes take their hits with them -------------------------------------------------------

#: The person erased, and another person who shares a conversation with them.
A = "U0ERASED"
B = "U0KEPT"


async def test_erasure_removes_the_persons_hits_at_once_and_a_dry_run_nothing(
    provider: Provider,
) -> None:
    alone = await thread(provider, thread_id="1.1")
    shared = await thread(provider, thread_id="2.2")
    theirs = await thread(provider, thread_id="3.3")
    message = await said(provider, alone, A, "alphasecret one")
    await answered(provider, message, "alphasecret reply to betakept")
    await said(provider, shared, A, "alphasecret two")
    await said(provider, shared, B, "betakept two")
    await said(provider, theirs, B, "betakept three")
    before_a = await snippets(provider, "alphasecret")
    before_b = await snippets(provider, "betakept")
    assert len(before_a) == 3 and len(before_b) == 3

    would = await provider.erase_user(A, dry_run=True)
    assert would.deleted_conversations == [alone] and would.trimmed_conversations == [shared]
    assert await snippets(provider, "alphasecret") == before_a
    assert await snippets(provider, "betakept") == before_b

    await provider.erase_user(A)
    assert await snippets(provider, "alphasecret") == []
    assert await snippets(provider, "betakept") == ["betakept three", "betakept two"]
    assert await snippets(provider, "betakept", user_id=A) == []
    assert await snippets(provider, "betakept", user_id=B) == ["betakept three", "betakept two"]
    await assert_search_index_matches_the_blocks(provider)


async def test_prune_removes_the_hits_of_old_conversations(provider: Provider) -> None:
    old = await thread(provider, thread_id="1.1")
    new = await thread(provider, thread_id="2.2")
    await said(provider, old, "U1", "pelican sighting old")
    await said(provider, new, "U1", "pelican sighting new")
    await age(provider, old, 200)

    await provider.prune(timedelta(days=90), dry_run=True)
    assert await snippets(provider, "pelican") == ["pelican sighting new", "pelican sighting old"]
    pruned = await provider.prune(timedelta(days=90))
    assert pruned.counts["conversations"] == 1
    assert await snippets(provider, "pelican") == ["pelican sighting new"]
    assert await snippets(provider, "old") == []
    await assert_search_index_matches_the_blocks(provider)


@pytest.mark.parametrize("fresh_url", backend_params(PERSISTENT_BACKENDS_BOTH), indirect=True)
async def test_a_hosts_own_deletes_and_updates_leave_no_stale_hit(
    fresh_url: str, provider: Provider
) -> None:
    """A host app's own engine (no provider in between, SQLite's foreign keys off as they are
    by default) deletes a conversation's rows and rewrites a block's text: the index follows
    in the same transaction (SQLite: the triggers; FTS5 checks itself against the table)."""
    gone = await thread(provider, thread_id="1.1")
    kept = await thread(provider, thread_id="2.2")
    doomed = await said(provider, gone, "U1", "narwhal deleted by the host")
    edited = await said(provider, kept, "U1", "narwhal kept then edited")
    engine = create_async_engine(normalize_url(fresh_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(_blocks).where(_blocks.c.message_id == doomed))
            await conn.execute(delete(_messages).where(_messages.c.id == doomed))
            await conn.execute(delete(_conversations).where(_conversations.c.id == gone))
            await conn.execute(
                update(_blocks).where(_blocks.c.message_id == edited),
                {"content": {"text": "walrus redacted"}, "search_text": "walrus redacted"},
            )
    finally:
        await engine.dispose()

    assert await snippets(provider, "narwhal") == []
    assert await snippets(provider, "walrus") == ["walrus redacted"]
    await assert_search_index_matches_the_blocks(provider)
    await said(provider, kept, "U1", "narwhal again")
    assert await snippets(provider, "narwhal") == ["narwhal again"]
    await assert_search_index_matches_the_blocks(provider)


# --- Migration 0007 --------------------------------------------------------------------------

#: Text blocks written at 0006: more than the backfill's batch of 2,000.
OLD_BLOCKS = 2_050


async def _insert_id(conn: AsyncConnection, stmt: Insert) -> int:
    key = (await conn.execute(stmt)).inserted_primary_key
    assert key is not None
    return int(key[0])


async def _written_at_0006(engine: AsyncEngine) -> None:
    """History as code at 0006 wrote it (no `search_text`): text blocks of a person and the
    agent, a tool block and a text block without text."""
    async with engine.begin() as conn:
        conversation_id = await _insert_id(
            conn,
            insert(_conversations).values(
                agent_name=AGENT, channel_id="C1", thread_id="1.1", channel_name="ops"
            ),
        )
        message_id = await _insert_id(
            conn,
            insert(_messages).values(
                conversation_id=conversation_id, user_id="U1", user_name="Ann", user_handle="ann"
            ),
        )
        block = {"message_id": message_id, "in_history": True}
        await conn.execute(
            insert(_blocks),
            [
                {**block, "block_type": "user_text", "content": {"text": f"heron entry{n:04d}"}}
                for n in range(OLD_BLOCKS)
            ],
        )
        await conn.execute(
            insert(_blocks),
            [
                {**block, "block_type": "text", "content": {"text": "Old answer about herons"}},
                {**block, "block_type": "tool_use", "content": {"text": "heron toolword"}},
                {**block, "block_type": "text", "content": {"other": "heron notext"}},
            ],
        )


async def _assert_old_history_found(url: str) -> None:
    async with opened_provider(url) as storage:
        heron = await storage.search_history(AGENT, "heron", limit=200)
        assert len(heron) == 200
        assert [hit.snippet for hit in heron[:2]] == [
            f"heron entry{n:04d}" for n in (OLD_BLOCKS - 1, OLD_BLOCKS - 2)
        ]
        [answer] = await storage.search_history(AGENT, "answer herons")
        assert answer.snippet == "Old answer about herons" and answer.from_agent
        for n in (0, 1_999, 2_000, OLD_BLOCKS - 1):  # both sides of the batch boundary
            [hit] = await storage.search_history(AGENT, f"entry{n:04d}")
            assert hit.snippet == f"heron entry{n:04d}" and hit.author_user_id == "U1"
        assert await storage.search_history(AGENT, "toolword") == []
        assert await storage.search_history(AGENT, "notext") == []
        await assert_search_index_matches_the_blocks(storage)


async def test_migration_backfills_history_written_before_it_and_downgrades(
    empty_url: str,
) -> None:
    engine = make_engine(normalize_url(empty_url))
    try:
        await upgrade(engine, "0006")
        await _written_at_0006(engine)
        await upgrade(engine)
        await _assert_old_history_found(empty_url)

        async with opened_provider(empty_url) as storage:
            conversation_id = await thread(storage, thread_id="2.2")
            await said(storage, conversation_id, "U2", "egret written at head")
        await downgrade(engine, "0006")
        await upgrade(engine)
        await _assert_old_history_found(empty_url)
        async with opened_provider(empty_url) as storage:
            [hit] = await storage.search_history(AGENT, "egret written")
            assert hit.author_user_id == "U2"
            conversation_id = await thread(storage, thread_id="3.3")
            await said(storage, conversation_id, "U3", "egret after the round trip")
            [hit] = await storage.search_history(AGENT, "egret round trip")
            assert hit.author_user_id == "U3"
            await assert_search_index_matches_the_blocks(storage)
    finally:
        await engine.dispose()


# --- Bad input -------------------------------------------------------------------------------

_NAIVE = datetime(2024, 1, 1)  # no tzinfo: refused

#: keyword arguments -> the error and what its message names.
_REFUSED: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"limit": 0}, ValueError, "limit"),
    ({"limit": 201}, ValueError, "limit"),
    ({"limit": -1}, ValueError, "limit"),
    ({"limit": True}, TypeError, "limit"),
    ({"limit": "5"}, TypeError, "limit"),
    ({"limit": 5.0}, TypeError, "limit"),
    ({"since": _NAIVE}, ValueError, "since"),
    ({"since": "2024-01-01"}, TypeError, "since"),
    ({"also_in_channel": "C1"}, ValueError, "also_in_channel"),
    ({"text": None}, TypeError, "text"),
    ({"text": b"falcon"}, TypeError, "text"),
    ({"text": 7}, TypeError, "text"),
    ({"text": ["falcon"]}, TypeError, "text"),
    ({"text": "falcon\x00secret"}, ValueError, "text"),
    ({"agent_name": None}, TypeError, "agent_name"),
    ({"agent_name": "a" * 256}, ValueError, "agent_name"),
    ({"user_id": 5}, TypeError, "user_id"),
    ({"channel_id": "c" * 256}, ValueError, "channel_id"),
    ({"user_id": "U1", "also_in_channel": b"C1"}, TypeError, "also_in_channel"),
]


async def test_bad_arguments_are_refused_naming_the_argument(provider: Provider) -> None:
    conversation_id = await thread(provider)
    await said(provider, conversation_id, "U1", "falcon report")
    for given_options, error, name in _REFUSED:
        options = {"agent_name": AGENT, "text": "falcon", **given_options}
        with pytest.raises(error, match=name) as refused:
            await provider.search_history(options.pop("agent_name"), options.pop("text"), **options)
        assert "secret" not in str(refused.value), given_options  # names, never values
    # The bounds themselves are accepted.
    for limit in (1, 200):
        assert len(await provider.search_history(AGENT, "falcon", limit=limit)) == 1
    aware = datetime(2024, 1, 1, tzinfo=UTC)
    assert len(await provider.search_history(AGENT, "falcon", since=aware)) == 1
    assert await provider.search_history(AGENT, "") == []
    assert await provider.search_history(AGENT, "   ") == []


async def test_a_search_of_only_short_or_stop_words_finds_nothing_on_mysql(
    provider: Provider,
) -> None:
    """InnoDB's FULLTEXT index leaves out words shorter than `innodb_ft_min_token_size` (3)
    and its default stop words: required in boolean mode, one would match nothing, so the
    search drops them there; a search of nothing but those searches nothing and finds no
    hit on MySQL/MariaDB, where the other databases find the text."""
    conversation_id = await thread(provider)
    await said(provider, conversation_id, "U1", "it is up to me to decide")

    only_short = await snippets(provider, "it is up to")
    assert only_short == ([] if is_mysql(provider) else ["it is up to me to decide"])
    # With a word the index holds, the short and stop words around it change nothing.
    assert await snippets(provider, "it is up to me to decide") == ["it is up to me to decide"]
    assert await snippets(provider, "to decide") == ["it is up to me to decide"]


# --- Cancellation ----------------------------------------------------------------------------

#: A search not done after this many seconds is hung (a busy machine is slow, not hung).
HANG_S = 120


def _checked_out(storage: Provider) -> int:
    counter = getattr(storage.db.engine.pool, "checkedout", None)
    return int(counter()) if callable(counter) else 0


async def test_a_search_cancelled_at_any_await_point_leaves_the_provider_working(
    provider: Provider,
) -> None:
    conversation_id = await thread(provider)
    for number in range(3):
        await said(provider, conversation_id, "U1", f"lantern note {number}")
    expected = await provider.search_history(AGENT, "lantern", user_id="U1")
    assert len(expected) == 3
    baseline = _checked_out(provider)
    cancelled = 0
    async with asyncio.timeout(HANG_S):
        for turns in range(1, 500):
            task = asyncio.ensure_future(provider.search_history(AGENT, "lantern", user_id="U1"))
            for _ in range(turns):
                if task.done():
                    break
                await asyncio.sleep(0)
            if task.done():
                assert await task == expected
                break  # completed before the cancel could land: every point was tried
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            cancelled += 1
            assert await provider.search_history(AGENT, "lantern", user_id="U1") == expected
            await provider.db.settle()
            assert _checked_out(provider) == baseline
    assert cancelled >= 1, "the search was never cancelled: the test proved nothing"
    assert await block_count(provider) == 3
