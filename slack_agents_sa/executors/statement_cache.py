"""The native executors' cache of compiled statements: bounded, least recently used first.

Statements equal by SQLAlchemy's cache key share one compilation (`compiled.py` makes it);
a statement object met before is found again by identity, without its cache key.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ClauseElement
from sqlalchemy.engine import Dialect

from slack_agents_sa.executors.compiled import CompiledStatement, StatementForm, Translate

__all__ = ["StatementCache"]

_echo_logger = logging.getLogger("sqlalchemy.engine.Engine")


class _Seen:
    """A statement object the cache has met: its compilation per set of value names."""

    __slots__ = ("ref", "views")

    def __init__(self, ref: weakref.ref[ClauseElement]) -> None:
        self.ref = ref
        self.views: dict[frozenset[str], CompiledStatement] = {}


class StatementCache:
    """Compiled statements of one dialect: at most `size` compilations, least recently used
    dropped first.

    Statements equal by SQLAlchemy's cache key share one compilation (a statement built
    per call is compiled once), each run with its own literal values, which are read from
    the statement being run, never from the one compiled (note 4 of native-executor-notes).
    Each statement object met is also remembered by identity for as long as it lives, so a
    module-level statement is found without making its cache key again. A statement
    without a cache key (some constructs have none) is compiled per object, within `size`.
    No statement is kept alive but the ones the kept compilations were made from.
    """

    def __init__(
        self,
        dialect: Dialect,
        echo: bool = False,
        schema_translate_map: Translate = None,
        size: int = 500,
    ) -> None:
        if size < 1:
            raise ValueError("a statement cache holds at least one statement")
        self.dialect = dialect
        self.size = size
        #: How many compilations were made (each a miss of the cache).
        self.compilations = 0
        self._echo = echo
        self._translate = schema_translate_map
        self._forms: OrderedDict[StatementForm, None] = OrderedDict()  # least recently used first
        self._by_key: dict[tuple[Any, ...], StatementForm] = {}
        self._by_id: dict[int, _Seen] = {}

    def __len__(self) -> int:
        """How many compilations are kept."""
        return len(self._forms)

    def get(self, stmt: ClauseElement, values: Mapping[str, Any]) -> CompiledStatement:
        names = frozenset(values)
        seen = self._by_id.get(id(stmt))
        # An entry is dropped as its statement dies: one found is for this very object.
        found = seen.views.get(names) if seen is not None else None
        if found is None:
            found = self._compiled(stmt, names)
        else:
            self._forms.move_to_end(found._form)
        if self._echo:
            # `echo: true` shows each statement on SQLAlchemy's own logger, values hidden.
            _echo_logger.info("%s\n[native executor] [parameters hidden]", found.sql)
        return found

    def _compiled(self, stmt: ClauseElement, names: frozenset[str]) -> CompiledStatement:
        cache_key = stmt._generate_cache_key()
        lookup = None if cache_key is None else (cache_key.key, names)
        form = self._by_key.get(lookup) if lookup is not None else None
        if form is None:
            form = StatementForm(stmt, self.dialect, names, self._translate, cache_key)
            self.compilations += 1
            if lookup is not None:
                form.key = lookup
                self._by_key[lookup] = form
        found = CompiledStatement._of(form, cache_key)
        self._remember(stmt, names, found)
        self._forms[form] = None
        self._forms.move_to_end(form)
        while len(self._forms) > self.size:
            self._drop(next(iter(self._forms)))
        return found

    def _remember(
        self, stmt: ClauseElement, names: frozenset[str], found: CompiledStatement
    ) -> None:
        uid = id(stmt)
        seen = self._by_id.get(uid)
        if seen is None:
            by_id = self._by_id

            def forget(ref: weakref.ref[ClauseElement]) -> None:
                entry = by_id.get(uid)
                if entry is not None and entry.ref is ref:
                    by_id.pop(uid, None)
                    for view in list(entry.views.values()):
                        view._form.users.discard(uid)

            try:
                seen = _Seen(weakref.ref(stmt, forget))
            except TypeError:  # pragma: no cover - every ClauseElement takes weak references
                return
            by_id[uid] = seen
        seen.views[names] = found
        found._form.users.add(uid)

    def _drop(self, form: StatementForm) -> None:
        """Forget `form`, and every statement's way to it (so its statement may go)."""
        del self._forms[form]
        if form.key is not None:
            del self._by_key[form.key]
        # A statement dying meanwhile (its weakref callback) pops its own entry: pop, not del.
        for uid in tuple(form.users):
            seen = self._by_id.get(uid)
            if seen is None:
                continue
            for names, view in list(seen.views.items()):
                if view._form is form:
                    seen.views.pop(names, None)
            if not seen.views:
                self._by_id.pop(uid, None)
        form.users.clear()
