"""The `alone` marker: under pytest-xdist, a test so marked runs while no other test does
(a test calibrated for a machine doing nothing else, such as writers racing on one Galera
row). Loaded by tests/conftest.py as a plugin.

A readers-writer lock on two files in a folder the controller makes for the run and hands
to its workers: every test holds `tests` shared from its set-up to its teardown (fixtures
of every scope included, servers started by them too), an `alone` one exclusively. An
`alone` test first takes `gate`, which every test passes through before its shared lock,
so the tests starting meanwhile cannot starve it. Without xdist nothing is locked.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

#: The key of the lock folder in each worker's `workerinput`.
_FOLDER = "slack_agents_sa_alone_folder"
_folder_key = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: no other test runs meanwhile under pytest-xdist (a test calibrated for a "
        "machine doing nothing else)",
    )
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        config.stash[_folder_key] = Path(tempfile.mkdtemp(prefix="slack_agents_sa-alone-"))


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_folder_key, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's hook on the controller: tell a worker where the lock files are."""
    node.workerinput[_FOLDER] = str(node.config.stash[_folder_key])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    workerinput: dict[str, Any] | None = getattr(item.config, "workerinput", None)
    if workerinput is None:
        return (yield)
    folder = Path(workerinput[_FOLDER])
    alone = item.get_closest_marker("alone") is not None
    with open(folder / "gate", "a") as gate, open(folder / "tests", "a") as tests:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(tests, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        return (yield)
