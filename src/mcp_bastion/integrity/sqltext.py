"""SQL text read the way a database would read it, for the ``sql`` and ``sql_identifier`` sinks.

Not a parser: a tokenizer that knows where string literals, quoted identifiers and comments begin and end,
which is what an injection exploits. A quote inside a literal (``'O''Brien'``) and SQL words inside quoted
text (``'drop table; -- later'``) are data, not syntax, and are not refused.

Dialects disagree on what a backslash means inside a string (MySQL: an escape; standard SQL: a character),
on ``#`` (MySQL: a comment; PostgreSQL: an operator), on ``$tag$…$tag$`` (PostgreSQL: a string) and on
``[…]``/backticks (identifiers in T-SQL/SQLite/MySQL). The ``generic`` dialect reads the text every way and
refuses what any reading refuses: with the database unknown, a text is safe only if it is safe in all of
them (``'O\\'Brien'`` is refused there; configure the dialect to accept it).

Invariants (each a refusal, ``UnsafeArgument`` with reason ``argument_unsafe_sql``; identifiers:
``argument_unsafe_sql_identifier``):
- no NUL character; no comment (``--``, ``/* */``, and ``#`` where it is one) outside literals;
- nothing but whitespace after the first ``;`` outside literals (no stacked statements);
- no unterminated literal or quoted identifier;
- read-only: the statement starts with a read keyword (``SELECT``, ``WITH``, ``VALUES``, ``TABLE``, ``SHOW``,
  ``EXPLAIN``, ``DESCRIBE``) and no bare word outside literals writes (``INSERT``, ``UPDATE``, ``DELETE``,
  ``INTO``, ``CREATE``, …: catches data-modifying CTEs, ``SELECT … INTO``, ``EXPLAIN ANALYZE DELETE``).
  Functions with side effects are out of reach of any text check: a read-only database role is the real
  control, this is a second line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal

from mcp_bastion.errors import UnsafeArgument

Dialect = Literal["generic", "ansi", "sqlite", "postgres", "mysql", "mssql"]

_STANDARD_STRING: Final = r"'(?:[^']|'')*'"
_DOUBLE_IDENT: Final = r'"(?:[^"]|"")*"'
_BACKSLASH_STRINGS: Final = r"'(?:[^'\\]|\\[\s\S]|'')*'|\"(?:[^\"\\]|\\[\s\S]|\"\")*\""
_BACKTICK: Final = r"`(?:[^`]|``)*`"
_BRACKET: Final = r"\[(?:[^\]]|\]\])*\]"
_DOLLAR: Final = r"\$(?P<tag>(?:[A-Za-z_][A-Za-z0-9_]*)?)\$[\s\S]*?\$(?P=tag)\$"
_DOLLAR_OPEN: Final = r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$"
_E_STRING: Final = r"[Ee]'(?:[^'\\]|\\[\s\S]|'')*'"


def _reading(literals: str, opens: str, comments: str) -> re.Pattern[str]:
    # Alternatives in order: the first that matches at a position wins, so a complete literal is taken
    # before its opening quote is seen as unterminated. Every character matches something (``other``).
    return re.compile(
        rf"(?P<ws>\s+)|(?P<comment>{comments})|(?P<literal>{literals})|(?P<open>{opens})"
        r"|(?P<semi>;)|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)|(?P<other>[\s\S])"
    )


_STANDARD: Final = _reading(f"{_STANDARD_STRING}|{_DOUBLE_IDENT}", "['\"]", r"--|/\*")
_MYSQL: Final = _reading(f"{_BACKSLASH_STRINGS}|{_BACKTICK}", "['\"`]", r"--|/\*|\#")
_POSTGRES: Final = _reading(
    f"{_E_STRING}|{_STANDARD_STRING}|{_DOUBLE_IDENT}|{_DOLLAR}", f"['\"]|{_DOLLAR_OPEN}", r"--|/\*"
)
_BRACKETS: Final = _reading(f"{_STANDARD_STRING}|{_DOUBLE_IDENT}|{_BACKTICK}|{_BRACKET}", r"['\"`\[]", r"--|/\*")

READINGS: Final[Mapping[Dialect, tuple[re.Pattern[str], ...]]] = {
    "generic": (_STANDARD, _MYSQL, _POSTGRES, _BRACKETS),
    "ansi": (_STANDARD,),
    "sqlite": (_BRACKETS,),
    "postgres": (_POSTGRES,),
    "mysql": (_MYSQL,),
    "mssql": (_BRACKETS,),
}
"""The readings a dialect's text is checked under (SQLite and T-SQL both quote identifiers with brackets)."""

READ_STARTS: Final = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "DESCRIBE", "DESC"})
WRITE_WORDS: Final = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "INTO", "CREATE", "ALTER", "DROP", "TRUNCATE",
        "GRANT", "REVOKE", "CALL", "EXEC", "EXECUTE", "COPY", "ATTACH", "DETACH", "LOAD",
    }
)  # fmt: skip
"""Bare words that make a statement write, wherever they appear outside literals."""


def _refuse(detail: str) -> UnsafeArgument:
    return UnsafeArgument(f"sql: {detail}", reason="argument_unsafe_sql")


def _words(text: str, reading: re.Pattern[str]) -> list[str]:
    """The bare words of ``text`` (upper case) under one reading; ``UnsafeArgument`` on a violation."""
    words: list[str] = []
    ended = False
    for token in reading.finditer(text):
        kind = token.lastgroup
        if kind == "ws":
            continue
        if ended:
            raise _refuse("a second statement after ';'")
        if kind == "comment":
            raise _refuse("a comment outside literals")
        if kind == "open":
            raise _refuse("an unterminated literal or quoted identifier")
        if kind == "semi":
            ended = True
        elif kind == "word":
            words.append(token.group().upper())
    return words


def check_sql(text: str, *, dialect: Dialect = "generic", read_only: bool = False) -> None:
    """Raise ``UnsafeArgument`` unless ``text`` is one statement without comments (read-only if asked)."""
    if "\x00" in text:
        raise _refuse("a NUL character")
    for reading in READINGS[dialect]:
        words = _words(text, reading)
        if read_only and words and (words[0] not in READ_STARTS or not WRITE_WORDS.isdisjoint(words)):
            raise _refuse("not a read-only statement")


_PLAIN: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_QUOTED_IDENTIFIERS: Final[Mapping[Dialect, str]] = {
    "generic": r'"(?:[^"\x00-\x1f]|"")+"',
    "ansi": r'"(?:[^"\x00-\x1f]|"")+"',
    "postgres": r'"(?:[^"\x00-\x1f]|"")+"',
    "sqlite": r'"(?:[^"\x00-\x1f]|"")+"|`(?:[^`\x00-\x1f]|``)+`|\[[^\]\x00-\x1f]+\]',
    "mysql": r"`(?:[^`\x00-\x1f]|``)+`",
    "mssql": r'"(?:[^"\x00-\x1f]|"")+"|\[(?:[^\]\x00-\x1f]|\]\])+\]',
}
MAX_IDENTIFIER: Final = 256
_IDENTIFIER: Final[Mapping[Dialect, re.Pattern[str]]] = {
    dialect: re.compile(rf"(?:{_PLAIN}|{quoted})(?:\.(?:{_PLAIN}|{quoted})){{0,2}}")
    for dialect, quoted in _QUOTED_IDENTIFIERS.items()
}


def check_identifier(text: str, *, dialect: Dialect = "generic") -> None:
    """Raise ``UnsafeArgument`` unless ``text`` is a (qualified, up to three parts) SQL identifier: plain
    (``[A-Za-z_][A-Za-z0-9_]*``) or quoted the dialect's way with its quote doubled inside."""
    if len(text) > MAX_IDENTIFIER or not _IDENTIFIER[dialect].fullmatch(text):
        raise UnsafeArgument(
            "sql identifier: not a plain or properly quoted name", reason="argument_unsafe_sql_identifier"
        )
