"""The six key-value primitives, as the host contract states them, on every backend."""

from __future__ import annotations

import pytest

from slack_agents_sa import Provider


async def test_get_returns_none_for_a_missing_key(provider: Provider) -> None:
    assert await provider.get("ns", "missing") is None


async def test_set_then_get_round_trips_nested_json(provider: Provider) -> None:
    value = {
        "text": "héllo 👋 שלום",
        "nested": {"list": [1, 2.5, None, True, {"deep": "x"}], "empty": {}},
        "big": 2**62,
        "negative": -17,
        "flag": False,
        "blank": "",
    }
    await provider.set("ns", "k", value)
    assert await provider.get("ns", "k") == value


async def test_set_overwrites_the_previous_value(provider: Provider) -> None:
    await provider.set("ns", "k", {"v": 1, "old": True})
    await provider.set("ns", "k", {"v": 2})
    assert await provider.get("ns", "k") == {"v": 2}


async def test_keys_are_scoped_by_namespace(provider: Provider) -> None:
    await provider.set("a", "k", {"ns": "a"})
    await provider.set("b", "k", {"ns": "b"})
    assert await provider.get("a", "k") == {"ns": "a"}
    assert await provider.get("b", "k") == {"ns": "b"}


async def test_delete_removes_only_that_key(provider: Provider) -> None:
    await provider.set("ns", "gone", {"v": 1})
    await provider.set("ns", "kept", {"v": 2})
    await provider.delete("ns", "gone")
    await provider.delete("ns", "never-existed")
    assert await provider.get("ns", "gone") is None
    assert await provider.get("ns", "kept") == {"v": 2}


async def test_append_returns_string_ids_and_get_list_keeps_insertion_order(
    provider: Provider,
) -> None:
    ids = [await provider.append("ns", "list", {"n": n}) for n in range(5)]
    assert all(isinstance(item_id, str) for item_id in ids)
    assert len(set(ids)) == 5
    assert await provider.get_list("ns", "list") == [
        {"n": n, "id": item_id} for n, item_id in enumerate(ids)
    ]


async def test_get_list_of_an_unknown_list_is_empty(provider: Provider) -> None:
    assert await provider.get_list("ns", "nothing") == []


async def test_lists_are_separate_per_key_and_namespace(provider: Provider) -> None:
    first = await provider.append("ns", "a", {"v": 1})
    await provider.append("ns", "b", {"v": 2})
    await provider.append("other", "a", {"v": 3})
    assert await provider.get_list("ns", "a") == [{"v": 1, "id": first}]


async def test_query_matches_set_values_and_appended_items(provider: Provider) -> None:
    # The host's A2A delivery resumes tasks with query(ns, {}) over values it only `set`s.
    await provider.set("tasks", "t2", {"task_id": "t2", "state": "working"})
    await provider.set("tasks", "t1", {"task_id": "t1", "state": "done"})
    item = await provider.append("tasks", "log", {"task_id": "t0", "state": "working"})
    everything = await provider.query("tasks", {})
    assert everything == [
        {"task_id": "t0", "state": "working", "id": item},
        {"task_id": "t1", "state": "done"},
        {"task_id": "t2", "state": "working"},
    ]
    assert await provider.query("tasks", {"state": "working"}) == [
        {"task_id": "t0", "state": "working", "id": item},
        {"task_id": "t2", "state": "working"},
    ]


async def test_query_compares_nested_values_whole(provider: Provider) -> None:
    await provider.set("ns", "a", {"tags": ["x", "y"], "meta": {"k": 1}})
    await provider.set("ns", "b", {"tags": ["x"], "meta": {"k": 1, "extra": 2}})
    assert await provider.query("ns", {"tags": ["x"]}) == [
        {"tags": ["x"], "meta": {"k": 1, "extra": 2}}
    ]
    assert await provider.query("ns", {"meta": {"k": 1}}) == [
        {"tags": ["x", "y"], "meta": {"k": 1}}
    ]


async def test_query_treats_a_missing_field_as_none(provider: Provider) -> None:
    await provider.set("ns", "with", {"a": 1, "b": None})
    await provider.set("ns", "without", {"a": 2})
    assert await provider.query("ns", {"b": None}) == [{"a": 1, "b": None}, {"a": 2}]
    assert await provider.query("ns", {"b": 0}) == []


async def test_query_uses_python_equality_across_numeric_types(provider: Provider) -> None:
    await provider.set("ns", "int", {"v": 1})
    await provider.set("ns", "float", {"v": 1.0})
    await provider.set("ns", "bool", {"v": True})
    await provider.set("ns", "str", {"v": "1"})
    assert await provider.query("ns", {"v": 1}) == [{"v": 1}, {"v": True}, {"v": 1.0}]


async def test_query_filter_names_are_data_not_sql_or_json_paths(provider: Provider) -> None:
    await provider.set("ns", "k", {'a"b': 1, "a": {"b": 2}, "$.a": 3})
    assert await provider.query("ns", {'a"b': 1}) == [{'a"b': 1, "a": {"b": 2}, "$.a": 3}]
    assert await provider.query("ns", {"a.b": 2}) == []
    assert await provider.query("ns", {"$.a": 3}) == [{'a"b': 1, "a": {"b": 2}, "$.a": 3}]
    assert await provider.query("ns", {"x' OR '1'='1": None}) == [
        {'a"b': 1, "a": {"b": 2}, "$.a": 3}
    ]


async def test_query_only_sees_its_namespace(provider: Provider) -> None:
    await provider.set("one", "k", {"v": 1})
    await provider.append("two", "k", {"v": 1})
    assert await provider.query("one", {"v": 1}) == [{"v": 1}]


@pytest.mark.parametrize("bad", [["list"], "text", None, 3])
async def test_set_and_append_reject_non_dict_values(provider: Provider, bad: object) -> None:
    with pytest.raises(TypeError, match="value must be a dict"):
        await provider.set("ns", "k", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="item must be a dict"):
        await provider.append("ns", "k", bad)  # type: ignore[arg-type]
    assert await provider.get("ns", "k") is None


async def test_keys_longer_than_the_limit_are_rejected_by_name(provider: Provider) -> None:
    with pytest.raises(ValueError, match="key is 501 characters long; the limit is 500"):
        await provider.set("ns", "k" * 501, {"v": 1})
    with pytest.raises(ValueError, match="namespace is 256 characters"):
        await provider.get("n" * 256, "k")


async def test_keys_at_the_limit_round_trip(provider: Provider) -> None:
    namespace, key = "n" * 255, "🔑" * 500
    await provider.set(namespace, key, {"v": 1})
    assert await provider.get(namespace, key) == {"v": 1}


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({"x": float("nan")}, ValueError, "Out of range float values are not JSON compliant"),
        ({"x": float("inf")}, ValueError, "not JSON compliant"),
        ({"x": {1, 2}}, TypeError, "Object of type set is not JSON serializable"),
        ({"x": b"bytes"}, TypeError, "Object of type bytes is not JSON serializable"),
    ],
)
async def test_values_that_are_not_json_fail_clearly_and_write_nothing(
    provider: Provider, value: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"cannot store value: .*{message}"):
        await provider.set("ns", "k", value)
    with pytest.raises(error, match=message):
        await provider.append("ns", "k", value)
    assert await provider.get("ns", "k") is None
    assert await provider.get_list("ns", "k") == []
