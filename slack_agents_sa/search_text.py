"""Search over history, the database-free part: words of a query, snippets, ranks.

A person's search is words, never query syntax: quotes, `*`, `-`, `NEAR` or `:` are
parts of words here, and each backend turns the words into its own search as data.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

#: Words of a search beyond these are left out: a pasted page is not a search.
MAX_WORDS = 32
#: Characters of a search beyond these are left out before it is split into words.
MAX_QUERY_CHARS = 2_000
#: Characters of a block's words that are indexed: the rest of a long document is not
#: searched (PostgreSQL refuses a tsvector over 1 MB, which ~250k characters can reach).
MAX_INDEXED_CHARS = 200_000
#: Characters of a hit's text shown around its first match.
SNIPPET_CHARS = 200

#: A word: letters and digits, in any script. Everything else separates words, so `_`,
#: `@`, `.` and `/` split e-mails, paths and names alike on every database.
_WORD = re.compile(r"[^\W_]+")
#: Combining marks (accents) of the Latin, Greek and Cyrillic scripts and their kin.
_ACCENTS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _folded(text: str) -> str:
    """`text` lower-cased, without accents, compatibility forms unified (NFKD)."""
    if text.isascii():
        return text.lower()
    return _ACCENTS.sub("", unicodedata.normalize("NFKD", text)).lower()


def indexed_words(text: str) -> str:
    """What the index holds of a text block: its words, folded, one space between each.

    Every database's tokenizer splits this exactly as `words_of` splits a search, so
    each finds the same words (and none is refused: no NUL, no lone surrogate).
    """
    words = " ".join(_WORD.findall(_folded(text)))
    if len(words) > MAX_INDEXED_CHARS:
        words = words[: words.rfind(" ", 0, MAX_INDEXED_CHARS + 1)]
    return words


def words_of(text: str) -> list[str]:
    """The distinct words of a search, folded as `indexed_words` folds, in order, at most
    `MAX_WORDS`."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(_folded(text[:MAX_QUERY_CHARS])):
        seen.setdefault(word, None)
        if len(seen) == MAX_WORDS:
            break
    return list(seen)


def searchable_text(block_type: str, content: object) -> str | None:
    """`indexed_words` of a block that is searched: a person's or the agent's text (an
    uploaded document's extracted text is a person's text block); tools, files and usage
    are not."""
    if block_type not in ("text", "user_text") or not isinstance(content, dict):
        return None
    text = content.get("text")
    return indexed_words(text) if isinstance(text, str) else None


def _word_pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)


def snippet(text: str, words: Sequence[str]) -> str:
    """Up to `SNIPPET_CHARS` of `text` around the first search word in it, on one line."""
    found = _word_pattern(words).search(text) if words else None
    start = 0 if found is None else max(0, found.start() - SNIPPET_CHARS // 4)
    end = min(len(text), start + SNIPPET_CHARS)
    start = max(0, min(start, end - SNIPPET_CHARS))
    piece = " ".join(text[start:end].split())
    return ("…" if start > 0 else "") + piece + ("…" if end < len(text) else "")


def rank(indexed: str, words: Sequence[str]) -> float:
    """How much of a block is the search: the share of its words (`indexed_words`) that
    are search words (0-1)."""
    found = indexed.split()
    if not found or not words:
        return 0.0
    wanted = set(words)
    return sum(word in wanted for word in found) / len(found)


def like_pattern(word: str) -> str:
    """A LIKE pattern finding `word` whole in `' ' || indexed_words || ' '` (a word holds
    letters and digits only: no `%`, `_` or escape to spell)."""
    return f"% {word} %"


def fts5_query(words: Sequence[str]) -> str:
    """An SQLite FTS5 query: every word a quoted string (FTS5's literal), all required."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def boolean_mode_query(words: Sequence[str]) -> str:
    """A MySQL/MariaDB boolean-mode query: every word required (`+word`).

    Words hold letters and digits only (`words_of`), so no operator reaches the parser; a
    quoted phrase would make InnoDB re-read each candidate's text for positions.
    """
    return " ".join(f"+{word}" for word in words)
