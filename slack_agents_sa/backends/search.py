"""Full-text search over the blocks' `search_text`, one class per database's own index.

Each backend holds one of these (`Backend.text_search`): the condition that finds a
search's words through the index migration 0007 built for its database. The words are
data in a bound parameter, never query syntax (`search_text.words_of` keeps letters and
digits only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    FromClause,
    Integer,
    MetaData,
    Select,
    Subquery,
    Table,
    Text,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    union_all,
)

from slack_agents_sa.models import SEARCH_TABLE, Block, Conversation, Message, table_of
from slack_agents_sa.search_text import (
    boolean_mode_query,
    fts5_query,
    like_pattern,
)


def _hits(condition: ColumnElement[bool], since: datetime | None) -> Select[int, int]:
    """The `id` and `message_id` of the blocks that meet `condition`, written at `since` or
    later."""
    hits = select(Block.id, Block.message_id).where(condition)
    return hits if since is None else hits.where(Block.created_at >= since)


class TextSearch:
    """Any other dialect: every word found with LIKE, no index (a scan of the text blocks)."""

    def usable_words(self, words: Sequence[str]) -> list[str]:
        """The words this index can find (MySQL's leaves out the short ones)."""
        return list(words)

    def matches(self, words: Sequence[str], language: str, since: datetime | None) -> FromClause:
        """The blocks whose `search_text` holds every word (`words` non-empty), written at
        `since` or later, as rows of `id` and `message_id`; `language` is option
        `search_language` (PostgreSQL's text search configuration)."""
        return _hits(self.condition(words, language), since).subquery("hits")

    def newest(
        self, hits: FromClause, conditions: Sequence[ColumnElement[bool]], limit: int
    ) -> Subquery:
        """The ids of the newest `limit` hits whose conversation meets `conditions` (on
        `Conversation`), newest first."""
        return (
            select(hits.c.id)
            .join(Message, hits.c.message_id == Message.id)
            .join(Conversation, Message.conversation_id == Conversation.id)
            .where(*conditions)
            .order_by(hits.c.id.desc())
            .limit(limit)
            .subquery("newest_hits")
        )

    def condition(self, words: Sequence[str], language: str) -> ColumnElement[bool]:
        """SQL true for a block whose `search_text` holds every word."""
        return _holds_every_word(table_of(Block).c.search_text, words)


def _holds_every_word(
    search_text: ColumnElement[str | None], words: Sequence[str]
) -> ColumnElement[bool]:
    """SQL true where `search_text` holds every word, found with LIKE (no index)."""
    padded = literal(" ") + search_text + literal(" ")
    patterns: Iterator[BindParameter[str]] = (
        bindparam(f"word_{n}", like_pattern(word)) for n, word in enumerate(words)
    )
    return and_(*(padded.like(pattern) for pattern in patterns))


class PostgreSQLSearch(TextSearch):
    """A GIN index over `to_tsvector(<configuration>, search_text)` ('simple': no stemming,
    no stop words); words found with `plainto_tsquery`, which reads its text as plain words."""

    def condition(self, words: Sequence[str], language: str) -> ColumnElement[bool]:
        # A constant, not a parameter: the planner uses the index only for the expression it
        # was built on. `language` is a checked name (settings: letters, digits, `_`).
        config: ColumnElement[Any] = literal_column(f"'{language}'::regconfig")
        query = func.plainto_tsquery(config, bindparam("search_words", " ".join(words)))
        return func.to_tsvector(config, Block.search_text).op("@@")(query)

    def matches(self, words: Sequence[str], language: str, since: datetime | None) -> FromClause:
        # Materialized: every match through the GIN index first, then the newest of them.
        # Left to choose, the planner walks the blocks newest first, parsing each one's
        # text, and for a rare word parses them all (15 s over a million blocks).
        hits = _hits(self.condition(words, language), since).cte("hits")
        return hits.prefix_with("MATERIALIZED")

    def newest(
        self, hits: FromClause, conditions: Sequence[ColumnElement[bool]], limit: int
    ) -> Subquery:
        # The hits newest first behind a fence (OFFSET 0), then each one's conversation
        # checked in that order until `limit` pass (a subquery per hit, never joined). Given
        # a join, the planner read every message to merge them with the hits: 95 ms for
        # 3,867 hits among a million blocks.
        ordered = select(hits.c.id, hits.c.message_id).order_by(hits.c.id.desc()).offset(0)
        in_order = ordered.subquery("hits_newest_first")
        passes = (
            select(Conversation.id)
            .select_from(Message)
            .join(Conversation, Message.conversation_id == Conversation.id)
            .where(Message.id == in_order.c.message_id, *conditions)
            .limit(1)
            .scalar_subquery()
        )
        return (
            select(in_order.c.id)
            .where(passes.is_not(None))
            .order_by(in_order.c.id.desc())
            .limit(limit)
            .subquery("newest_hits")
        )


class MySQLSearch(TextSearch):
    """An InnoDB FULLTEXT index; every word required (`+word`) in boolean mode."""

    #: InnoDB's default `innodb_ft_min_token_size` and `innodb_ft_max_token_size`: shorter
    #: and longer words are not in its index.
    MIN_WORD_CHARS = 3
    MAX_WORD_CHARS = 84
    #: InnoDB's default stop words (INNODB_FT_DEFAULT_STOPWORD): not in its index, and a
    #: required one would match nothing.
    STOP_WORDS = frozenset(
        (
            "a",
            "about",
            "an",
            "are",
            "as",
            "at",
            "be",
            "by",
            "com",
            "de",
            "en",
            "for",
            "from",
            "how",
            "i",
            "in",
            "is",
            "it",
            "la",
            "of",
            "on",
            "or",
            "that",
            "the",
            "this",
            "to",
            "was",
            "what",
            "when",
            "where",
            "who",
            "will",
            "with",
            "und",
            "www",
        )
    )

    def usable_words(self, words: Sequence[str]) -> list[str]:
        return [
            word
            for word in words
            if self.MIN_WORD_CHARS <= len(word) <= self.MAX_WORD_CHARS
            and word not in self.STOP_WORDS
        ]

    def condition(self, words: Sequence[str], language: str) -> ColumnElement[bool]:
        from sqlalchemy.dialects.mysql import match as mysql_match  # MySQL users only

        query: BindParameter[str] = bindparam("search_words", boolean_mode_query(words))
        return mysql_match(Block.__table__.c.search_text, against=query).in_boolean_mode()


#: SQLite's FTS5 table over the blocks' `search_text` (external content: it stores only
#: the index), and the one row that says how far it goes: every block with an id up to
#: `done` is in it, none above (migration 0009). Not in our metadata: `create_all` cannot
#: build a virtual table, and both come with the triggers that keep them in step.
_search_tables = MetaData()
fts5_table = Table(
    SEARCH_TABLE, _search_tables, Column("rowid", Integer), Column("search_text", Text)
)
fts5_state = Table(f"{SEARCH_TABLE}_state", _search_tables, Column("done", Integer))


class SQLiteSearch(TextSearch):
    """An FTS5 table with external content, which triggers fill in batches of new blocks;
    every word an FTS5 string (its literal), all required. The blocks past the index's
    `done` (at most one batch) are scanned as any other dialect's."""

    def condition(self, words: Sequence[str], language: str) -> ColumnElement[bool]:
        # One list of ids from both, so SQLite starts from the matches (given `id IN (...)
        # OR id > done AND ...` it reads every block of the agent's conversations instead).
        query: BindParameter[str] = bindparam("search_words", fts5_query(words))
        indexed = select(fts5_table.c.rowid).where(fts5_table.c.search_text.match(query))
        newer = table_of(Block).alias("newer_blocks")
        done = select(fts5_state.c.done).scalar_subquery()
        not_yet_indexed = select(newer.c.id).where(
            newer.c.id > done, _holds_every_word(newer.c.search_text, words)
        )
        return Block.id.in_(union_all(indexed, not_yet_indexed))
