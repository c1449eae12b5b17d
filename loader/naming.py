"""Segment's warehouse naming: go-snakecase, `_` flattening, safe and bounded identifiers.

`snakecase` is a port of segmentio/go-snakecase (snake.go), the function Segment uses for
table and column names; the tests carry the package's own test cases.
"""

from __future__ import annotations

import hashlib

from loader.spec import CALL_TABLES, STATE_TABLES, TRACKS_TABLE

MAX_IDENTIFIER_LENGTH = 63  # Postgres' limit: keeps names portable to other warehouses

STANDARD_TABLES = frozenset({TRACKS_TABLE, *CALL_TABLES.values(), *STATE_TABLES})

# Words that cannot be a bare table name in the SQL dialects users query us from. An event whose
# slug is one of these gets a `_` prefix, as Segment does on Redshift (`open` -> `_open`).
SQL_KEYWORDS = frozenset(
    """all analyse analyze and any array as asc asymmetric authorization between binary both case
    cast check collate column constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user default deferrable delete desc
    distinct do drop else end except exists false fetch for foreign freeze from full grant group
    having ilike in initially inner insert intersect into is isnull join lateral leading left like
    limit localtime localtimestamp natural not notnull null offset on only or order outer overlaps
    placing primary references returning right select session_user similar some symmetric table
    tablesample then to trailing true union unique update user using variadic verbose when where
    window with pivot unpivot qualify summarize describe show attach detach pragma""".split()  # noqa: SIM905
)


def _is_lower(c: str) -> bool:
    return "a" <= c <= "z"


def _is_upper(c: str) -> bool:
    return "A" <= c <= "Z"


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _is_alnum(c: str) -> bool:
    return _is_lower(c) or _is_upper(c) or _is_digit(c)


def snakecase(s: str) -> str:
    """Segment's snake_case (go-snakecase): ASCII word splitting, everything else a separator."""
    n = len(s)
    idx = 0
    has_lower = has_underscore = lowercase_since_underscore = False
    while idx < n:
        c = s[idx]
        if _is_lower(c):
            has_lower = True
            if has_underscore:
                lowercase_since_underscore = True
        elif _is_digit(c):
            pass
        elif c == "_" and 0 < idx < n - 1 and (_is_lower(s[idx + 1]) or _is_digit(s[idx + 1])):
            has_underscore = True
            lowercase_since_underscore = False
        else:
            break
        idx += 1
    if idx == n:
        return s

    out = [s[:idx]]
    if _is_upper(s[idx]) and (not has_lower or (has_underscore and not lowercase_since_underscore)):
        while idx < n and (_is_upper(s[idx]) or _is_digit(s[idx])):
            out.append(s[idx].lower())
            idx += 1
        while idx < n and (_is_lower(s[idx]) or _is_digit(s[idx])):
            out.append(s[idx])
            idx += 1

    while idx < n:
        if not _is_alnum(s[idx]):
            idx += 1
            continue
        if any(out):
            out.append("_")
        while idx < n and (_is_upper(s[idx]) or _is_digit(s[idx])):
            out.append(s[idx].lower())
            idx += 1
        while idx < n and (_is_lower(s[idx]) or _is_digit(s[idx])):
            out.append(s[idx])
            idx += 1
    return "".join(out)


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def bounded(name: str) -> str:
    """Shorten a long name predictably: a prefix plus a hash of the whole name, so two long
    names that share a prefix never merge."""
    if len(name) <= MAX_IDENTIFIER_LENGTH:
        return name
    return f"{name[: MAX_IDENTIFIER_LENGTH - 9].rstrip('_')}_{short_hash(name)}"


def event_table_name(event: str, reserved: frozenset[str] = frozenset()) -> str:
    """The table for a track event: its slug, made safe and distinct.

    Events whose slugs collide share a table, as in Segment (`event_text` tells them apart).
    A slug that is empty gets `_` plus a hash of the original name (so two unrelated empty
    slugs do not merge); one that starts with a digit, is an SQL keyword, or equals a standard
    or loader table gets a `_` prefix (Segment on Redshift and RudderStack do the same).
    """
    slug = snakecase(event)
    if not slug:
        return f"_{short_hash(event)}"
    if slug[0].isdigit() or slug in SQL_KEYWORDS or slug in STANDARD_TABLES or slug in reserved:
        slug = f"_{slug}"
    return bounded(slug)


def column_name(path: tuple[str, ...], *, context: bool, standard: frozenset[str]) -> str | None:
    """The column for a flattened key path, or None when the key has no ASCII letters or digits.

    The `_`-joined path is snake_cased once (as RudderStack does); context keys get `context_`.
    A user key that lands on a standard column (`id`, `user_id`, `timestamp`...) or in the
    `context_` namespace is prefixed with `_` instead of overwriting it.
    """
    slug = snakecase("_".join(path))
    if not slug:
        return None
    if context:
        return bounded(f"context_{slug}")
    if slug in standard or slug.startswith("context_") or slug[0].isdigit():
        slug = f"_{slug}"
    return bounded(slug)
