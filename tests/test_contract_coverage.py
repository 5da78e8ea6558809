"""Every method of the host's BaseStorageProvider is overridden: no scanning defaults remain."""

from __future__ import annotations

import inspect

from slack_agents.storage.base import BaseStorageProvider

from slack_agents_sa import Provider


def _host_methods() -> list[str]:
    names = []
    for name, member in vars(BaseStorageProvider).items():
        if name.startswith("__"):
            continue
        if inspect.isfunction(member) or isinstance(member, property):
            names.append(name)
    return names


def test_host_contract_has_the_expected_surface() -> None:
    # 6 primitives + 6 OAuth + initialize/close + 13 domain methods + supports_export.
    assert len(_host_methods()) == 28


def test_every_base_method_is_overridden() -> None:
    inherited = [
        name
        for name in _host_methods()
        if inspect.getattr_static(Provider, name) is vars(BaseStorageProvider)[name]
    ]
    assert inherited == []


def test_provider_is_concrete_and_a_storage_provider() -> None:
    assert issubclass(Provider, BaseStorageProvider)
    assert not inspect.isabstract(Provider)


def test_overrides_keep_the_host_signatures() -> None:
    for name in _host_methods():
        base = vars(BaseStorageProvider)[name]
        if isinstance(base, property):
            continue
        ours = inspect.signature(getattr(Provider, name))
        theirs = inspect.signature(base)
        assert list(ours.parameters) == list(theirs.parameters), name
        for param_name, param in theirs.parameters.items():
            assert ours.parameters[param_name].kind == param.kind, (name, param_name)
            assert ours.parameters[param_name].default == param.default, (name, param_name)
