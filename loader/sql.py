"""Identifier quoting through sqlglot: user-controlled names never reach SQL unquoted."""

from __future__ import annotations

from functools import lru_cache

from sqlglot import exp


@lru_cache(maxsize=65536)
def ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


@lru_cache(maxsize=16384)
def table_ref(schema: str, table: str) -> str:
    return exp.table_(table, db=schema, quoted=True).sql(dialect="duckdb")


def literal(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="duckdb")


def int_list(values) -> str:
    """Integers (load or file ids) as the inside of an SQL `IN (...)`."""
    return ", ".join(str(int(v)) for v in values)
