"""Identifier quoting through sqlglot: user-controlled names never reach SQL unquoted."""

from __future__ import annotations

from sqlglot import exp


def ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def table_ref(schema: str, table: str) -> str:
    return exp.table_(table, db=schema, quoted=True).sql(dialect="duckdb")


def literal(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="duckdb")
