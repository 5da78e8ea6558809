"""Property-based differential tests: the provider answers exactly as the reference model does.

Hypothesis draws sequences of operations; each runs on the provider (every backend) and on
`tests.reference.ReferenceStore`, and every answer must be equal. Each example works in
namespaces and threads of its own, so examples never see one another's data.

Budget: EXAMPLES examples a test and backend, each up to STEPS operations, derandomised so a
CI run is repeatable. That is enough to hit key ordering, int/float typing, big and negative
integers, unicode (including NUL and 4-byte characters) and the set/append split in `query`.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_agents.conversations import ConversationManager

from slack_agents_sa import Provider
from tests.reference import ReferenceStore

EXAMPLES = 100
STEPS = 30

DIFFERENTIAL = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_example_numbers = itertools.count()

#: Any str, lone surrogates and NUL included: inside JSON every one round-trips.
JSON_TEXT = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["\x00", "a\ud800b", "\U0001f44b", "\u202eRTL"]
)
#: Strings for text columns, which refuse NUL and lone surrogates (tested elsewhere).
COLUMN_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30
)

# Lookalike names, so collisions between them would show.
NAMESPACES = st.sampled_from(["ns", "Ns", "ns ", "n.s", "ñs"])
KEYS = st.sampled_from(["k", "K", "k ", "", "👋", 'a"b', "a.b", "$[0]"])
# "id" is left out: in query results it is an appended item's id, compared through a map.
FIELD_NAMES = (
    st.sampled_from(["name", "Name", "n", "", "a.b", 'q"', "👋", "\x00"]) | JSON_TEXT
).filter(lambda name: name != "id")

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(FIELD_NAMES, children, max_size=4)
    ),
    max_leaves=10,
)
DOCUMENTS = st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=5)

KV_OPERATIONS = st.one_of(
    st.tuples(st.just("set"), NAMESPACES, KEYS, DOCUMENTS),
    st.tuples(st.just("append"), NAMESPACES, KEYS, DOCUMENTS),
    st.tuples(st.just("delete"), NAMESPACES, KEYS),
    st.tuples(st.just("get"), NAMESPACES, KEYS),
    st.tuples(st.just("get_list"), NAMESPACES, KEYS),
    # A query's filters are drawn from the stored values when it runs (see _filters).
    st.tuples(st.just("query"), NAMESPACES, st.randoms(use_true_random=False)),
)


def _filters(stored: list[dict[str, Any]], chooser: Any) -> dict[str, Any]:
    """Some top-level fields of a stored value, so the filter really matches; sometimes
    plus a field no value has (matching only None), sometimes nothing at all."""
    if not stored or chooser.random() < 0.15:
        return {}
    value = chooser.choice(stored)
    fields = list(value)  # "id" included: an appended item matches on its id too
    picked = chooser.sample(fields, k=chooser.randint(0, len(fields)))
    filters = {name: value[name] for name in picked}
    if chooser.random() < 0.2:
        filters["absent field"] = None
    return filters


@DIFFERENTIAL
@given(operations=st.lists(KV_OPERATIONS, min_size=1, max_size=STEPS))
async def test_key_value_primitives_match_the_reference(
    provider: Provider, operations: list[tuple[Any, ...]]
) -> None:
    reference = ReferenceStore()
    prefix = f"example-{next(_example_numbers)}/"
    # Ours are database ids, the reference's its own counter: compare them through this map.
    ids: dict[str, str] = {}

    def same_ids(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**value, "id": ids[value["id"]]} if "id" in value else value for value in values]

    for step, (name, namespace, *args) in enumerate(operations):
        namespace = prefix + namespace
        context = f"step {step}: {name}({namespace!r}, {args!r})"
        if name == "query":
            filters = _filters(await reference.query(namespace, {}), args[0])
            context += f" filters={filters!r}"
            ours_ids = {reference_id: our_id for our_id, reference_id in ids.items()}
            ours = await provider.query(
                namespace,
                {**filters, "id": ours_ids.get(filters["id"], filters["id"])}
                if "id" in filters
                else filters,
            )
            expected = await reference.query(namespace, filters)
            assert same_ids(ours) == expected, context
            assert [list(value) for value in ours] == [list(value) for value in expected], (
                "field order differs: " + context
            )
        elif name == "append":
            ours_id = await provider.append(namespace, *args)
            ids[ours_id] = await reference.append(namespace, *args)
            assert same_ids(await provider.get_list(namespace, args[0])) == (
                await reference.get_list(namespace, args[0])
            ), context
        elif name == "get_list":
            assert same_ids(await provider.get_list(namespace, *args)) == (
                await reference.get_list(namespace, *args)
            ), context
        else:
            method = getattr(provider, name)
            answer = await method(namespace, *args)
            expected = await getattr(reference, name)(namespace, *args)
            assert answer == expected, context
            key = args[0]
            assert await provider.get(namespace, key) == await reference.get(namespace, key), (
                context
            )


# --- conversations through ConversationManager ---

AGENTS = st.sampled_from(["bot", "Bot"])
CHANNELS = st.sampled_from(["C1", "c1", "C1 "])
THREADS = st.sampled_from(["1.1", "1.2"])
CHANNEL_NAMES = st.none() | st.sampled_from(["general", "Général 🎉"])
TOOL_CALL_IDS = st.sampled_from(["toolu_1", "toolu_2", "TOOLU_1"])
TEXT = COLUMN_TEXT
IMAGE = st.builds(
    lambda data: {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": data},
    },
    st.text(alphabet="ABCDEF0123456789+/=", max_size=16),
)
DOCUMENT = st.builds(
    lambda data, name: {"data": data, "filename": name, "mimeType": "application/pdf"},
    st.text(alphabet="ABCDEF0123456789+/=", max_size=16),
    TEXT,
)

CONVERSATION_OPERATIONS = st.one_of(
    st.tuples(st.just("conversation"), AGENTS, CHANNELS, THREADS, CHANNEL_NAMES),
    st.tuples(st.just("message"), TEXT, TEXT),
    st.tuples(st.just("text"), JSON_TEXT, st.booleans()),
    st.tuples(st.just("tool"), TOOL_CALL_IDS, TEXT, DOCUMENTS, TEXT, st.booleans()),
    st.tuples(st.just("file"), IMAGE | DOCUMENT, st.booleans(), TEXT),
    st.tuples(
        st.just("usage"),
        st.integers(0, 10**9),
        st.floats(0, 100, allow_nan=False) | st.none(),
    ),
)


class _Side:
    """One store driven through ConversationManager, and the ids it has handed out."""

    def __init__(self, storage: Any) -> None:
        self.manager = ConversationManager(storage)
        self.conversations: list[int | str] = []
        self.messages: list[int | str] = []

    async def apply(self, operation: tuple[Any, ...], prefix: str) -> None:
        name, *args = operation
        cm = self.manager
        if name == "conversation":
            agent, channel, thread, channel_name = args
            self.conversations.append(
                await cm.get_or_create_conversation(prefix + agent, channel, thread, channel_name)
            )
            return
        if not self.conversations:
            self.conversations.append(await cm.get_or_create_conversation(prefix, "C", "0"))
        if name == "message" or not self.messages:
            user_name, handle = (args[0], args[1]) if name == "message" else ("u", "h")
            self.messages.append(
                await cm.create_message(self.conversations[-1], "U1", user_name, handle)
            )
            if name == "message":
                return
        message_id = self.messages[-1]
        if name == "text":
            await cm.append_text_block(message_id, args[0], is_user=args[1])
        elif name == "tool":
            call_id, tool_name, tool_input, output, is_error = args
            await cm.append_tool_block(
                message_id,
                tool_call_id=prefix + call_id,
                tool_name=tool_name,
                tool_input=tool_input,
                tool_output=output,
                is_error=is_error,
            )
        elif name == "file":
            content, is_user, filename = args
            await cm.append_file_block(
                message_id,
                content,
                is_user=is_user,
                filename=filename,
                mimetype=content.get("mimeType", "image/png"),
                size_bytes=len(json.dumps(content)),
            )
        elif name == "usage":
            tokens, cost = args
            await cm.append_usage_block(
                message_id,
                model="m",
                version="v",
                input_tokens=tokens,
                output_tokens=tokens // 3,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=tokens // 2,
                peak_single_call_input_tokens=tokens,
                estimated_cost_usd=cost,
            )


@DIFFERENTIAL
@given(operations=st.lists(CONVERSATION_OPERATIONS, min_size=1, max_size=STEPS))
async def test_conversations_match_the_reference_through_the_conversation_manager(
    provider: Provider, operations: list[tuple[Any, ...]]
) -> None:
    prefix = f"example-{next(_example_numbers)}/"
    reference_store = ReferenceStore()
    ours, reference = _Side(provider), _Side(reference_store)
    for step, operation in enumerate(operations):
        await ours.apply(operation, prefix)
        await reference.apply(operation, prefix)
        context = f"step {step}: {operation!r}"
        assert await ours.manager.get_messages(ours.conversations[-1]) == (
            await reference.manager.get_messages(reference.conversations[-1])
        ), context

    for conversation, expected in zip(ours.conversations, reference.conversations, strict=True):
        assert await ours.manager.get_messages(conversation) == (
            await reference.manager.get_messages(expected)
        )
    for call_id in ("toolu_1", "toolu_2", "TOOLU_1"):
        assert await ours.manager.get_tool_call(prefix + call_id) == (
            await reference.manager.get_tool_call(prefix + call_id)
        ), call_id
    for agent in ("bot", "Bot", ""):

        def without_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{name: row[name] for name in row if name != "id"} for row in rows]

        assert without_ids(await provider.get_conversations_for_export(prefix + agent)) == (
            without_ids(
                await reference.manager._storage.get_conversations_for_export(prefix + agent)
            )
        ), agent
