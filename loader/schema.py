"""Schema evolution as data: decide tables, column types and widenings from what arrived.

Pure functions over the current warehouse schema and a batch's column statistics (the
`plan_schema` stage); the writer applies the resulting `SchemaChange`s and records them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loader.batch import file_index
from loader.normalize import ColumnStats, TableSlice, _type_counts, combine_chunks
from loader.spec import (
    INTEGER_KINDS,
    NUMBER_KINDS,
    STANDARD_TYPES,
    STATE_TABLES,
    TRACKS_TABLE,
    ColumnType,
    Kind,
    standard_columns,
)

if TYPE_CHECKING:
    from loader.stages import Batch

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


def plan_schema(schema: Schema, batch: Batch):
    """Schema changes for every slice of a batch, applied to the in-memory schema as planned."""
    changes = []
    for slice_ in batch.slices:
        mine = plan_changes(schema, slice_)
        mine += state_table_changes(schema, mine)
        apply_to(schema, mine)
        changes += mine
    return changes


def plan_schema_by_file(schema: Schema, batch: Batch, files: int) -> list:
    """plan_schema for a unit of several files, with the changes loading the files one by one
    would make: a new column is typed by the first file that has values for it, later files
    only widen it, and columns are added in that order. Only columns new to the schema (or
    BIGINT, which may widen) are looked at per file; a column whose kinds give one type
    whatever the subset (all integers, all booleans...) needs only the files it occurs in."""
    if files == 1:
        return plan_schema(schema, batch)
    changes = []
    for slices in file_slices(schema, batch, files):
        for slice_ in slices:
            mine = plan_changes(schema, slice_)
            mine += state_table_changes(schema, mine)
            apply_to(schema, mine)
            changes += mine
    return changes


def file_slices(schema: Schema, batch: Batch, files: int) -> list[list[TableSlice]]:
    """Per file of a unit, its slices with the column statistics loading it alone would give
    (the columns that can change `schema`; with an empty schema, every column). The Spark
    loader plans the schema on its driver from these (loader/spark.py)."""
    # Per slice: the file of each row, and {file: {column: stats}}; mixed columns are counted
    # per file in one _type_counts call over the whole batch (column i of the stack = leaf i).
    row_files = [file_index(s.line) for s in batch.slices]
    stats_of: list[dict[int, dict[str, ColumnStats]]] = [{} for _ in batch.slices]
    mixed: list[tuple[int, str, ColumnStats]] = []
    for si, s in enumerate(batch.slices):
        existing = schema.get(s.table, {})
        for col, stats in s.columns.items():
            current = existing.get(col)
            kinds = {k for k, n in stats.types.items() if n}
            if not kinds or (current is not None and current != ColumnType.BIGINT):
                continue
            uniform = (kinds <= INTEGER_KINDS or kinds <= {Kind.ARRAY, Kind.OBJECT}
                       or (len(kinds) == 1 and Kind.VARCHAR not in kinds))
            if not uniform:
                mixed.append((si, col, stats))
                continue
            present = np.asarray(pc.is_valid(combine_chunks(s.values[col].kind)), dtype=bool)
            for f in np.unique(row_files[si][present]).tolist():
                stats_of[si].setdefault(f, {})[col] = stats
    if mixed:
        texts = [combine_chunks(batch.slices[si].values[col].text) for si, col, _ in mixed]
        kinds = [combine_chunks(batch.slices[si].values[col].kind) for si, col, _ in mixed]
        lengths = [len(t) for t in texts]
        leaf_codes = np.repeat(np.arange(len(mixed), dtype=np.int32), lengths)
        file_codes = np.concatenate([row_files[si] for si, _, _ in mixed]).astype(np.int32)
        counts = _type_counts(pa.concat_arrays(texts), pa.concat_arrays(kinds), leaf_codes, file_codes,
                              list(range(files)))
        for i, (si, col, stats) in enumerate(mixed):
            for f, types in counts.get(i, {}).items():
                if types:
                    stats_of[si].setdefault(f, {})[col] = ColumnStats(types=types, sources=stats.sources)
    seen: dict[tuple[int, str], set[int]] = {}

    def _files_with(si: int, col: str) -> set[int]:
        """The files with a value for `col` in slice `si`."""
        if (si, col) not in seen:
            present = np.asarray(pc.is_valid(combine_chunks(batch.slices[si].values[col].kind)), dtype=bool)
            seen[si, col] = set(np.unique(row_files[si][present]).tolist())
        return seen[si, col]

    per_file: list[list[TableSlice]] = [[] for _ in range(files)]
    for si, s in enumerate(batch.slices):
        for f in np.unique(row_files[si]).tolist():
            mine = stats_of[si].get(f, {})
            if s.call == TRACKS_TABLE:  # its columns in the order this file's event tables give them
                order = dict.fromkeys(c for ti, t in enumerate(batch.slices) if t.call == "track"
                                      for c in t.columns if c in mine and f in _files_with(ti, c))
            else:
                order = s.columns
            per_file[f].append(replace(s, columns={c: mine[c] for c in order if c in mine}))
    return per_file
