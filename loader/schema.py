"""Schema evolution as data: decide tables, column types and widenings from what arrived.

Pure functions over the current warehouse schema and a batch's column statistics; the writer
applies the resulting `SchemaChange`s and records them.
"""

from __future__ import annotations

from dataclasses import dataclass

from loader.normalize import ColumnStats, TableSlice
from loader.spec import (
    INTEGER_KINDS,
    NUMBER_KINDS,
    STANDARD_TYPES,
    STATE_TABLES,
    ColumnType,
    Kind,
    standard_columns,
)

Schema = dict[str, dict[str, str]]  # table -> column -> DuckDB type

# JSON value kinds each column type takes without any chance of a discard.
ALWAYS_CASTS = {
    ColumnType.VARCHAR: None,  # everything: numbers and booleans as text, arrays as JSON text
    ColumnType.JSON: None,
    ColumnType.DOUBLE: NUMBER_KINDS,
    ColumnType.BIGINT: INTEGER_KINDS,
    ColumnType.BOOLEAN: {Kind.BOOLEAN},
    ColumnType.TIMESTAMPTZ: set(),  # even well-formed strings can name impossible dates
}


@dataclass(frozen=True)
class SchemaChange:
    table: str
    column: str | None  # None for a new table
    change: str  # create_table, add_column, widen
    old_type: str | None
    new_type: str | None


def infer_type(stats: ColumnStats) -> ColumnType | None:
    """A new column's type from every non-null value of the batch that creates it."""
    kinds = {k for k, n in stats.types.items() if n}
    if not kinds:
        return None
    if kinds == {Kind.BOOLEAN}:
        return ColumnType.BOOLEAN
    if kinds <= INTEGER_KINDS:
        return ColumnType.BIGINT
    if kinds <= NUMBER_KINDS:
        return ColumnType.DOUBLE
    if kinds == {Kind.TIMESTAMP}:
        return ColumnType.TIMESTAMPTZ
    if kinds <= {Kind.ARRAY, Kind.OBJECT}:
        return ColumnType.JSON
    return ColumnType.VARCHAR  # mixed kinds (and integers beyond 64 bits) keep every value as text


def needs_widening(current: str, stats: ColumnStats) -> ColumnType | None:
    """BIGINT becomes DOUBLE when fractional numbers arrive; nothing else changes type."""
    if current == ColumnType.BIGINT and stats.types.get(Kind.DOUBLE):
        return ColumnType.DOUBLE
    return None


def may_discard(column_type: str, stats: ColumnStats | None) -> bool:
    """Whether some value of the batch might not cast (standard columns carry no stats)."""
    safe = ALWAYS_CASTS.get(column_type)
    if safe is None:
        return False
    if stats is None:
        return True
    return any(n and kind not in safe for kind, n in stats.types.items())


def plan_changes(schema: Schema, slice_: TableSlice) -> list[SchemaChange]:
    """Changes needed before `slice_` can be inserted (a new table, new columns, widenings)."""
    changes: list[SchemaChange] = []
    table = slice_.table
    existing = schema.get(table)
    if existing is None:
        changes.append(SchemaChange(table, None, "create_table", None, None))
        existing = {}
        for col in standard_columns(slice_.call):
            changes.append(SchemaChange(table, col, "add_column", None, STANDARD_TYPES[col]))
            existing[col] = STANDARD_TYPES[col]
    for col, stats in slice_.columns.items():
        current = existing.get(col)
        if current is None:
            new_type = infer_type(stats)
            if new_type is not None:
                changes.append(SchemaChange(table, col, "add_column", None, new_type))
        elif col not in STANDARD_TYPES and (wider := needs_widening(current, stats)):
            changes.append(SchemaChange(table, col, "widen", current, wider))
    return changes


def state_table_changes(schema: Schema, changes: list[SchemaChange]) -> list[SchemaChange]:
    """Mirror changes of `identifies`/`groups` onto `users`/`accounts`, whose columns follow."""
    mirrored: list[SchemaChange] = []
    for state, (source, _key, left_out) in STATE_TABLES.items():
        for ch in changes:
            if ch.table != source or ch.column in left_out:
                continue
            if ch.change == "create_table":
                if state not in schema:
                    mirrored.append(SchemaChange(state, None, "create_table", None, None))
                    mirrored.append(SchemaChange(state, "id", "add_column", None, "VARCHAR"))
            else:
                mirrored.append(SchemaChange(state, ch.column, ch.change, ch.old_type, ch.new_type))
    return mirrored


def apply_to(schema: Schema, changes: list[SchemaChange]) -> None:
    """Update an in-memory schema as the writer would (used by --dry-run too)."""
    for ch in changes:
        if ch.change == "create_table":
            schema.setdefault(ch.table, {})
        else:
            schema[ch.table][ch.column] = ch.new_type
