"""Publish: a read-only copy of the marts that analysts can always open.

A DuckDB file has one writing process, and while a load or `dbt build` holds the warehouse no
other process can open it, not even read-only. `publish` copies the chosen schemas (the dbt
marts by default) into a new DuckDB file next to the target, then renames it over the target
with os.replace(), which is atomic: a reader opens either the previous copy or the new one,
never a half-written file, and a connection already open keeps reading the copy it opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from loader import writer
from loader.errors import UsageError
from loader.sql import ident, literal, table_ref

DEFAULT_SCHEMAS = ("analytics",)  # where dbt builds the marts (profiles.yml)


@dataclass
class Published:
    target: str
    tables: dict[str, int]  # schema.table -> rows


def publish(db_path: str, target: str, schemas: tuple[str, ...] = DEFAULT_SCHEMAS) -> Published:
    """Copy every table and view of `schemas` (views become tables: they would refer to the
    warehouse) from the warehouse into `target`, replacing it atomically."""
    if Path(target).resolve() == Path(db_path).resolve():
        raise UsageError("--to must be another file than --db: readers open the copy")
    if not Path(target).parent.is_dir():
        raise UsageError(f"cannot publish to {target}: its folder {Path(target).parent} does not exist")
    source = writer.connect(db_path, read_only=True)  # fails fast (exit 3) while a writer holds it
    try:
        relations = source.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE list_contains(?, schema_name) "
            "UNION ALL SELECT schema_name, view_name FROM duckdb_views() "
            "WHERE list_contains(?, schema_name) AND NOT internal ORDER BY 1, 2",
            [list(schemas), list(schemas)]).fetchall()
    finally:
        source.close()
    missing = set(schemas) - {s for s, _ in relations}
    if missing:
        raise UsageError(f"nothing to publish in schema(s) {', '.join(sorted(missing))} of {db_path}: "
                         "run `dbt build` first, or name the schemas with --schema")
    partial = f"{target}.publishing-{os.getpid()}"
    _remove(partial)
    con = duckdb.connect(partial)
    try:
        con.execute(f"ATTACH {literal(str(db_path))} AS warehouse (READ_ONLY)")
        tables = {}
        for schema in schemas:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
        for schema, name in relations:
            con.execute(f"CREATE TABLE {table_ref(schema, name)} AS "
                        f"SELECT * FROM warehouse.{table_ref(schema, name)}")
            tables[f"{schema}.{name}"] = con.execute(
                f"SELECT count(*) FROM {table_ref(schema, name)}").fetchall()[0][0]
        con.execute("DETACH warehouse")
        con.execute("CHECKPOINT")  # everything in the file itself, nothing left in a WAL
    except BaseException:
        con.close()
        _remove(partial)
        raise
    con.close()
    os.replace(partial, target)
    _remove(f"{target}.wal")  # a WAL of the previous copy does not belong to the new file
    return Published(target, tables)


def _remove(path: str) -> None:
    for p in (path, f"{path}.wal"):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass
