"""Writing: the only module that changes the warehouse (the `write` stage persists through it).

A file's rows, rejects, discards, schema changes, name mappings and manifest row are written
inside one transaction, a commit group's (`OpenGroup`: `begin` opens it with the group's
state, the pipeline commits it; see `state.py` for the manifest).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loader import dedup
from loader.batch import file_index, plain_lines
from loader.errors import DatabaseLockedError, UsageError
from loader.normalize import TableSlice, combine_chunks
from loader.read import Rejection
from loader.schema import Schema, SchemaChange
from loader.spec import CALL_TABLES, STATE_TABLES, TRACKS_TABLE
from loader.sql import ident, int_list, literal, table_ref
from loader.timing import StageTimer, maybe

if TYPE_CHECKING:
    from loader.stages import Batch

METADATA_DDL = """
CREATE SCHEMA IF NOT EXISTS _loader;
CREATE SEQUENCE IF NOT EXISTS _loader.file_ids;
CREATE TABLE IF NOT EXISTS _loader.loads (
    load_id BIGINT PRIMARY KEY, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    status VARCHAR, loader_version VARCHAR, arguments VARCHAR,
    files_seen BIGINT, files_loaded BIGINT, files_skipped BIGINT, files_failed BIGINT,
    lines BIGINT, rows_loaded BIGINT, duplicates BIGINT, rejects BIGINT, discards BIGINT);
CREATE TABLE IF NOT EXISTS _loader.files (
    file_id BIGINT, load_id BIGINT, path VARCHAR, size_bytes BIGINT, content_hash VARCHAR,
    source_id VARCHAR, status VARCHAR, lines BIGINT, rows_loaded BIGINT, duplicates BIGINT,
    rejects BIGINT, discards BIGINT, error VARCHAR, loaded_at TIMESTAMPTZ);
-- s3:// and gs:// objects: ETag or generation and last-modified time (also added to older files)
ALTER TABLE _loader.files ADD COLUMN IF NOT EXISTS etag VARCHAR;
ALTER TABLE _loader.files ADD COLUMN IF NOT EXISTS last_modified TIMESTAMPTZ;
CREATE TABLE IF NOT EXISTS _loader.rejects (
    load_id BIGINT, file_id BIGINT, path VARCHAR, line BIGINT, reason VARCHAR, detail VARCHAR,
    raw BLOB, rejected_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS _loader.discards (
    load_id BIGINT, file_id BIGINT, table_name VARCHAR, column_name VARCHAR, message_id VARCHAR,
    line BIGINT, raw_value VARCHAR, column_type VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS _loader.schema_changes (
    load_id BIGINT, file_id BIGINT, table_name VARCHAR, column_name VARCHAR, change VARCHAR,
    old_type VARCHAR, new_type VARCHAR, changed_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS _loader.name_map (
    kind VARCHAR, table_name VARCHAR, original VARCHAR, name VARCHAR, load_id BIGINT);
CREATE TABLE IF NOT EXISTS _loader.violations (
    load_id BIGINT, file_id BIGINT, line BIGINT, message_id VARCHAR, table_name VARCHAR,
    event VARCHAR, property_path VARCHAR, rule VARCHAR, offending_value VARCHAR,
    expected VARCHAR, action VARCHAR, recorded_at TIMESTAMPTZ);
ALTER TABLE _loader.loads ADD COLUMN IF NOT EXISTS stage_seconds JSON;
ALTER TABLE _loader.loads ADD COLUMN IF NOT EXISTS seconds_by_stage JSON;
-- how many root objects took each shaping path (single, fast, careful), as in --json
ALTER TABLE _loader.loads ADD COLUMN IF NOT EXISTS shape_paths JSON;
"""


def connect(db_path: str, *, read_only: bool = False, memory_limit_mb: int = 1024) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, turning DuckDB's lock error into one that names the holder.
    DuckDB's own default memory limit is 80% of RAM; a load needs far less."""
    try:
        con = duckdb.connect(db_path, read_only=read_only, config={"memory_limit": f"{memory_limit_mb}MB"})
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            holder = re.search(r"held in (.+?)(?:\. See|$)", text)
            who = holder.group(1).strip() if holder else "another process"
            raise DatabaseLockedError(
                f"database {db_path} is in use by {who}: a loader or dbt is writing to it. "
                "Only one process can write a DuckDB file at a time; run again when it has "
                "finished (exit code 3 means: retry later)."
            ) from exc
        if read_only and "does not exist" in text.lower():
            raise UsageError(f"database {db_path} does not exist") from exc
        raise UsageError(f"cannot open database {db_path}: {_open_problem(db_path, text)}; check --db") from exc
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # our own progress goes to stderr
    if not read_only:
        # Fewer, larger checkpoints than DuckDB's 16 MB default (each rewrites the tables it
        # touches), but bounded: data not yet checkpointed is also held in memory.
        con.execute("SET checkpoint_threshold = '256MB'")
    return con


def _open_problem(db_path: str, duckdb_text: str) -> str:
    """Why a database file cannot be opened, in words (not a DuckDB file, a folder, ...)."""
    path = Path(db_path)
    if path.is_dir():
        return "it is a folder, not a DuckDB file"
    if not path.parent.is_dir():
        return f"its folder {path.parent} does not exist"
    if "not a valid DuckDB database" in duckdb_text:
        return "the file exists but is not a DuckDB database"
    return duckdb_text.removeprefix("IO Error: ")


def ensure_metadata(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    """Create the warehouse schema and `_loader` tables (converting an older history layout)
    in one transaction: a run killed half-way must not leave `_loader.files` without the
    history, nor half a conversion."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
        con.execute(METADATA_DDL)
        dedup.ensure_history(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def read_schema(con: duckdb.DuckDBPyConnection, schema: str) -> Schema:
    result: Schema = {}
    for table, column, dtype in con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? ORDER BY table_name, ordinal_position",
        [schema],
    ).fetchall():
        result.setdefault(table, {})[column] = "TIMESTAMPTZ" if dtype == "TIMESTAMP WITH TIME ZONE" else dtype
    return result


def apply_changes(
    con: duckdb.DuckDBPyConnection, schema: str, changes: list[SchemaChange], *, load_id: int, file_id: int
) -> None:
    # Tables created by these changes get their columns' final types (a unit of small files
    # can add a column and widen it in one list).
    pending_create: dict[str, dict[str, str]] = {}
    for ch in changes:
        if ch.change == "create_table":
            pending_create[ch.table] = {}
        elif ch.table in pending_create:
            pending_create[ch.table][ch.column] = ch.new_type
    for table, cols in pending_create.items():
        columns = ", ".join(f"{ident(c)} {t}" for c, t in cols.items())
        con.execute(f"CREATE TABLE {table_ref(schema, table)} ({columns})")
    for ch in changes:
        target = table_ref(schema, ch.table)
        if ch.table in pending_create:  # created above with all its columns
            continue
        if ch.change == "add_column":
            con.execute(f"ALTER TABLE {target} ADD COLUMN {ident(ch.column)} {ch.new_type}")
        elif ch.change == "widen":
            con.execute(f"ALTER TABLE {target} ALTER COLUMN {ident(ch.column)} TYPE {ch.new_type}")
    if changes:
        rows = pa.Table.from_pylist(
            [{"table_name": c.table, "column_name": c.column, "change": c.change,
              "old_type": c.old_type, "new_type": c.new_type} for c in changes],
            schema=pa.schema([(n, pa.string()) for n in
                              ("table_name", "column_name", "change", "old_type", "new_type")]),
        )
        con.register("new_changes", rows)
        con.execute(
            f"INSERT INTO _loader.schema_changes SELECT {int(load_id)}, {int(file_id)}, "
            "table_name, column_name, change, old_type, new_type, now() FROM new_changes"
        )
        con.unregister("new_changes")


@dataclass
class BatchCounts:
    loaded: int
    duplicates: int
    discards: int
    violations: int = 0


@dataclass
class Pending:
    """Typed rows waiting for the group's commit: one INSERT per table per group instead of
    one per file (DuckDB's cost per statement and per table touched dominates small files)."""

    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    # per part: each row's file id and line, to find the rows history holds
    origins: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    discards: list[pa.Table] = field(default_factory=list)
    violations: list[pa.Table] = field(default_factory=list)
    # (file_id, line) of pending rows that a later, earlier-received copy superseded
    superseded: list[pa.Table] = field(default_factory=list)
    # (state, k): the users / accounts keys the group's identifies / groups change, written
    # to the group's `touched` table with the inserts (one statement per group, not one per slice)
    touched: list[pa.Table] = field(default_factory=list)
    # (kind, table, original, name) already in _loader.name_map: the committed groups' and
    # the open one's (a rollback starts a new Pending), so a batch writes only new names
    names: set[tuple[str, str, str, str]] = field(default_factory=set)
    rows: int = 0
    nbytes: int = 0


@dataclass(frozen=True)
class FileRef:
    """Where a batch's rows came from: file i of a unit holds the rows whose line numbers
    carry index i (see loader/batch.py); most batches have one file."""

    file_id: int
    path: str
    lines: int  # lines of the file in this batch, rejected ones included


def write_unit_batch(
    con: duckdb.DuckDBPyConnection,
    batch: Batch,
    pending: Pending,
    files: list[FileRef],
    *,
    load_id: int,
    loaded_at: dt.datetime,
) -> list[BatchCounts]:
    """Record a batch that went through the `cast` and `dedup` stages: its rejects now; its
    rows new to the group, their discards and violations into `pending`. The counts treat
    every message new to the group as loaded: the group's one probe of history, at `flush`,
    moves those loaded before to the duplicates. Returns the counts of each file in `files`."""
    file_ids = np.asarray([f.file_id for f in files], dtype=np.int64)
    n = len(files)
    discarded = np.zeros(n, dtype=np.int64)
    for rows in batch.rows:
        kept = rows.slice.num_rows if rows.keep is None else (pc.sum(rows.keep).as_py() or 0)
        if kept:
            typed = _stamped(rows.table, rows.keep, load_id=load_id, loaded_at=loaded_at)
            pending.tables.setdefault(rows.slice.table, []).append(typed)
            pending.origins.setdefault(rows.slice.table, []).append(_origins(rows.slice.line, file_ids))
            pending.rows += kept
            pending.nbytes += typed.nbytes
        for d in rows.discards:
            which = file_index(d["line"])
            discarded += np.bincount(which, minlength=n)
            d = d.set_column(d.column_names.index("line"), "line", plain_lines(d["line"]))
            pending.discards.append(d.append_column("file_id", pa.array(file_ids[which])))
        _note_touched_state(pending, rows.slice, rows.keep)
    write_rejections(con, batch.rejections, load_id=load_id, files=files)
    violations = _pend_violations(pending, batch, file_ids=file_ids)
    loaded = np.bincount(file_index(batch.fresh["line_no"]), minlength=n)
    rejected = np.bincount(file_index([r.line for r in batch.rejections]), minlength=n)
    return [
        BatchCounts(int(loaded[i]), f.lines - int(rejected[i]) - int(loaded[i]), int(discarded[i]),
                    int(violations[i]))
        for i, f in enumerate(files)
    ]


def _stamped(table: pa.Table, keep: pa.Array | None, *, load_id: int, loaded_at: dt.datetime) -> pa.Table:
    """Cast rows with the loader's columns; rows seen before stay, flagged in KEEP_COLUMN."""
    n = table.num_rows
    arrays = dict(zip(table.column_names, table.columns, strict=True))
    arrays["uuid_ts"] = pa.repeat(pa.scalar(loaded_at, pa.timestamp("us", tz="UTC")), n)
    arrays["load_id"] = pa.repeat(pa.scalar(load_id, pa.int64()), n)
    if keep is not None:
        arrays[KEEP_COLUMN] = keep
    return pa.table(arrays)


def _origins(lines, file_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The file id and the line in that file of each row."""
    encoded = np.asarray(combine_chunks(lines), dtype=np.int64)
    return file_ids[file_index(encoded)], np.asarray(plain_lines(encoded), dtype=np.int64)


def _pend_violations(pending: Pending, batch: Batch, *, file_ids: np.ndarray) -> np.ndarray:
    """Tracking plan violations of the batch (the `dedup` stage kept those of rows new to
    the group and of blocked events). Returns the count per file of `file_ids`."""
    counts = np.zeros(len(file_ids), dtype=np.int64)
    violations = batch.violations
    if violations is not None and violations.num_rows:
        which = file_index(violations["line"])
        counts += np.bincount(which, minlength=len(file_ids))
        violations = violations.set_column(violations.column_names.index("line"), "line",
                                           plain_lines(violations["line"]))
        pending.violations.append(violations.append_column("file_id", pa.array(file_ids[which])))
    return counts


def forget_rejects(con: duckdb.DuckDBPyConnection, file_id: int, lines: list[int], reasons: tuple[str, ...],
                   *, load_id: int) -> None:
    """Replay: drop a file's replayed rejects (and the violations that blocked them) recorded
    by earlier loads; the replay records again whatever it rejects."""
    con.register("replayed_lines", pa.table({"line": pa.array(lines, pa.int64())}))
    reason_list = ", ".join(literal(r) for r in reasons)
    con.execute(
        f"DELETE FROM _loader.rejects WHERE file_id = {int(file_id)} AND load_id <> {int(load_id)} "
        f"AND reason IN ({reason_list}) AND line IN (SELECT line FROM replayed_lines)"
    )
    con.execute(
        f"DELETE FROM _loader.violations WHERE file_id = {int(file_id)} AND load_id <> {int(load_id)} "
        "AND action = 'block' AND line IN (SELECT line FROM replayed_lines)"
    )
    con.unregister("replayed_lines")


@dataclass
class SeenBefore:
    """What a file's counts lose when the group's probe finds some of its rows in history."""

    rows: int = 0
    discards: int = 0
    violations: int = 0


def flush(group: OpenGroup, schema_name: str, pending: Pending, hits: pa.Table, *,
          load_id: int) -> dict[int, SeenBefore]:
    """Insert everything pending except the rows `hits` (file_id, line: the group's probe of
    history, `dedup.probe_history`) says were loaded before, and those a later copy in the
    group superseded (`pending.superseded`): one statement per table. Returns, per file id,
    what was loaded before or superseded (duplicates now)."""
    hits = pa.concat_tables([hits.select(["file_id", "line"]), *pending.superseded]) if pending.superseded else hits
    seen = _drop_seen_before(pending, hits) if hits.num_rows else {}
    _insert_pending(group, schema_name, pending, load_id=load_id)
    return seen


def settle_group(group: OpenGroup, schema_name: str, pending: Pending, *, load_id: int,
                 since_load: int | None, run_loads: tuple[int, ...] = (), timer: StageTimer | None = None,
                 ) -> tuple[dict[int, SeenBefore], dict[int, SeenBefore]]:
    """The open `group`'s exactly-once work, in its transaction: one probe of history; among
    this run's copies (`load_id` and the interrupted `run_loads` it continues) the earliest
    receivedAt wins, so committed copies that the group's earlier-received ones supersede are
    removed; then the insert of what stays. Returns, per file id, what the group's files lose
    to history or to a superseding copy, and what files loaded earlier in the run lose."""
    con, loads = group.con, (load_id, *run_loads)
    with maybe(timer, "dedup"):
        hits = dedup.probe_history(group.ids, load_id=load_id, since_load=since_load, run_loads=run_loads)
        superseding = _superseding(con, schema_name, hits, loads)
        earlier = remove_superseded(group, schema_name, superseding, loads)
        if superseding.num_rows:
            dedup.move_history(con, superseding, load_id=load_id, run_loads=run_loads)
            hits = hits.join(superseding.select(["file_id", "line"]).append_column(
                "won", pa.repeat(pa.scalar(True), superseding.num_rows)), ["file_id", "line"], join_type="left outer")
            hits = hits.filter(pc.is_null(hits["won"]))
    with maybe(timer, "write"):
        return flush(group, schema_name, pending, hits.select(["file_id", "line"]), load_id=load_id), earlier


def _superseding(con: duckdb.DuckDBPyConnection, schema_name: str, hits: pa.Table,
                 loads: tuple[int, ...]) -> pa.Table:
    """The hits (`dedup.probe_history`) whose history copy this run loaded and received later
    (or without a receivedAt): with that copy's table (`tbl`). Every message is in `tracks`
    (its `event` names its table) or in one call table, so six lookups find any copy. They
    run only for the hits received before history's receivedAt of this run's copy, or whose
    copy's is NULL (none, or recorded before history kept it)."""
    earlier = pc.fill_null(pc.less(hits["received_at"], hits["run_received_at"]), True)
    candidates = hits.filter(pc.and_(pc.and_(pc.is_valid(hits["run_file_id"]), pc.is_valid(hits["received_at"])),
                                     earlier))
    empty = candidates.slice(0, 0).append_column("tbl", pa.array([], pa.string()))
    if not candidates.num_rows:
        return empty
    existing = {t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schema_name]).fetchall()}
    in_run = (f"load_id IN ({int_list(loads)}) "
              "AND id IN (SELECT message_id FROM superseding_candidates)")
    copies = [f"SELECT id, received_at, {'event' if table == TRACKS_TABLE else literal(table)} AS tbl "
              f"FROM {table_ref(schema_name, table)} WHERE {in_run}"
              for table in (TRACKS_TABLE, *CALL_TABLES.values()) if table in existing]
    if not copies:
        return empty
    con.register("superseding_candidates", candidates)
    try:
        return con.sql(
            f"SELECT c.*, o.tbl FROM superseding_candidates c JOIN ({' UNION ALL '.join(copies)}) o "
            "ON o.id = c.message_id WHERE o.received_at IS NULL OR c.received_at < o.received_at").to_arrow_table()
    finally:
        con.unregister("superseding_candidates")


def remove_superseded(group: OpenGroup, schema_name: str, superseded: pa.Table,
                      loads: tuple[int, ...]) -> dict[int, SeenBefore]:
    """Delete the rows that this run's `loads` committed and later-arriving, earlier-received
    copies supersede (message_id, run_file_id: the committed copy's file, tbl: its table),
    with their discards and violations; the users/accounts they touched are refreshed.
    Returns per file id what moves from its loaded rows to its duplicates."""
    if not superseded.num_rows:
        return {}
    con = group.con
    seen: dict[int, SeenBefore] = {}
    in_run = f"load_id IN ({int_list(loads)})"
    con.register("superseded_rows", superseded)
    try:
        for (tbl,) in con.execute("SELECT DISTINCT tbl FROM superseded_rows").fetchall():
            ids = f"{in_run} AND id IN (SELECT message_id FROM superseded_rows WHERE tbl = {literal(tbl)})"
            for state, (source, key, _) in STATE_TABLES.items():
                if tbl == source:  # the refresh must also see the user/account the old copy set
                    con.execute(f"INSERT INTO {group.touched} SELECT {literal(state)}, {ident(key)} "
                                f"FROM {table_ref(schema_name, tbl)} WHERE {ids} AND {ident(key)} IS NOT NULL")
            con.execute(f"DELETE FROM {table_ref(schema_name, tbl)} WHERE {ids}")
            if tbl not in CALL_TABLES.values():  # a track: `tracks` holds it too
                con.execute(f"DELETE FROM {table_ref(schema_name, TRACKS_TABLE)} WHERE {ids}")
        for file_id, n in con.execute("SELECT run_file_id, count(*) FROM superseded_rows GROUP BY ALL").fetchall():
            seen[file_id] = SeenBefore(rows=n)
        for name, extra in (("discards", ""), ("violations", " AND t.action <> 'block'")):
            where = f"t.{in_run} AND t.file_id = s.run_file_id AND t.message_id = s.message_id{extra}"
            for file_id, n in con.execute(f"SELECT t.file_id, count(*) FROM _loader.{name} t "
                                          f"JOIN superseded_rows s ON {where} GROUP BY ALL").fetchall():
                setattr(seen[file_id], name, n)
            con.execute(f"DELETE FROM _loader.{name} t USING superseded_rows s WHERE {where}")
    finally:
        con.unregister("superseded_rows")
    return seen


def _insert_pending(group: OpenGroup, schema_name: str, pending: Pending, *, load_id: int) -> None:
    con = group.con
    with one_thread(con):
        for table in list(pending.tables):
            # Each table's rows leave `pending` as they go in, so that the group's rows are
            # not held twice (Arrow and DuckDB's transaction) until the last table is in.
            parts = pending.tables.pop(table)
            try:
                _insert(con, schema_name, table, pa.concat_tables(parts, promote_options="permissive"))
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # parts typed before and after a widening
                for part in parts:
                    _insert(con, schema_name, table, part)
            del parts
    if pending.discards:
        con.register("batch_discards", pa.concat_tables(pending.discards))
        con.execute(
            f"INSERT INTO _loader.discards SELECT {int(load_id)}, file_id, table_name, "
            "column_name, message_id, line, raw_value, column_type, reason FROM batch_discards"
        )
        con.unregister("batch_discards")
    if pending.touched:
        con.register("touched_keys", pa.concat_tables(pending.touched))
        con.execute(f"INSERT INTO {group.touched} SELECT state, k FROM touched_keys")
        con.unregister("touched_keys")
    if pending.violations:
        con.register("batch_violations", pa.concat_tables(pending.violations))
        con.execute(
            f"INSERT INTO _loader.violations SELECT {int(load_id)}, file_id, line, message_id, "
            "table_name, event, property_path, rule, offending_value, expected, action, now() "
            "FROM batch_violations"
        )
        con.unregister("batch_violations")
    pending.origins.clear()
    pending.discards.clear()
    pending.violations.clear()
    pending.superseded.clear()
    pending.touched.clear()
    pending.rows = pending.nbytes = 0


def release_memory() -> None:
    """Hand the memory a committed group freed back to the system. Arrow's pool (mimalloc)
    and glibc's heaps keep freed pages resident for reuse, so the next group's inserts stacked
    on what the last one left (bench/README.md, "Peak RSS at 1M")."""
    pa.default_memory_pool().release_unused()
    if _libc is not None:
        _libc.malloc_trim(0)


def map_large_blocks() -> None:
    """Have glibc map every allocation from 128 kB up (DuckDB's 256 kB blocks) on its own and
    unmap it when freed. By default glibc raises that threshold the first time such a block is
    freed, after which DuckDB's blocks come from the heaps, where freed ones stay resident:
    that held the 1M load's peak about 50 MiB higher (bench/README.md, "Peak RSS at 1M")."""
    if _libc is not None:
        _libc.mallopt(_M_MMAP_THRESHOLD, 128 << 10)


def _glibc() -> ctypes.CDLL | None:
    """glibc, for malloc_trim and mallopt; None elsewhere (musl, macOS). The process's own
    symbols include the C library's: no search for the library file (a subprocess)."""
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_libc = _glibc()
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


@contextmanager
def one_thread(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the group's inserts on one DuckDB thread. With two, DuckDB inserts an Arrow scan
    in ordered batches per thread and merges them: for a group's many per-table inserts of a
    few thousand rows that cost 40% more CPU and was slower too (bench/README.md, "Writer
    CPU"). The probe of history, the checkpoints and queries keep every thread."""
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        con.execute(f"SET threads = {int(threads)}")


def _drop_seen_before(pending: Pending, hits: pa.Table) -> dict[int, SeenBefore]:
    """Flag the pending rows that history already holds (KEEP_COLUMN false) and drop their
    discards and violations; count per file what moved to the duplicates."""
    lines = {row["file_id"]: pa.array(row["line_list"], pa.int64())
             for row in hits.group_by("file_id").aggregate([("line", "list")]).to_pylist()}
    seen = {file_id: SeenBefore(rows=len(file_lines)) for file_id, file_lines in lines.items()}
    hit_lines = combine_chunks(hits["line"])
    hit_rows = set(zip(hits["file_id"].to_pylist(), hits["line"].to_pylist(), strict=True))
    for table, parts in pending.tables.items():
        for i, (part, (file_ids, part_lines)) in enumerate(zip(parts, pending.origins[table], strict=True)):
            # Lines first (vectorised), then the few candidates' files.
            candidates = np.flatnonzero(np.asarray(pc.is_in(pa.array(part_lines), value_set=hit_lines)))
            gone = np.zeros(len(part_lines), dtype=bool)
            gone[candidates] = [(int(file_ids[j]), int(part_lines[j])) in hit_rows for j in candidates]
            if gone.any():
                keep = pc.invert(pa.array(gone))
                if KEEP_COLUMN in part.column_names:
                    keep = pc.and_(keep, part[KEEP_COLUMN])
                    part = part.drop_columns([KEEP_COLUMN])
                parts[i] = part.append_column(KEEP_COLUMN, keep)
    for name, kept in (("discards", pending.discards), ("violations", pending.violations)):
        for i, part in enumerate(kept):
            for file_id, file_lines in lines.items():
                gone = pc.and_(pc.equal(part["file_id"], file_id), pc.is_in(part["line"], file_lines))
                if name == "violations":  # a blocked event is a reject, not a loaded message
                    gone = pc.and_(gone, pc.not_equal(part["action"], "block"))
                n = pc.sum(gone).as_py() or 0
                if n:
                    setattr(seen[file_id], name, getattr(seen[file_id], name) + n)
                    part = part.filter(pc.invert(gone))
            kept[i] = part
    return seen


# Rows seen before stay in the typed table, flagged false here: DuckDB drops them while it
# inserts, which is cheaper than filtering every column in Arrow. No column name has a '#'.
KEEP_COLUMN = "#keep"


def _insert(con: duckdb.DuckDBPyConnection, schema_name: str, table: str, rows: pa.Table) -> None:
    con.register("typed_rows", rows)
    names = ", ".join(ident(c) for c in rows.column_names if c != KEEP_COLUMN)
    where = f" WHERE {ident(KEEP_COLUMN)} IS NOT FALSE" if KEEP_COLUMN in rows.column_names else ""
    con.execute(f"INSERT INTO {table_ref(schema_name, table)} ({names}) SELECT {names} FROM typed_rows{where}")
    con.unregister("typed_rows")


def write_rejections(
    con: duckdb.DuckDBPyConnection, rejections: list[Rejection], *, load_id: int, files: list[FileRef] | None = None,
    file_id: int | None = None, path: str | None = None,
) -> None:
    """Rejects of one file (`file_id`, `path`) or of a unit's `files` (by each line's file index)."""
    if not rejections:
        return
    files = files if files is not None else [FileRef(int(file_id), str(path), 0)]
    which = file_index([r.line for r in rejections])
    table = pa.table(
        {
            "file_id": pa.array(np.asarray([f.file_id for f in files], dtype=np.int64)[which]),
            "path": pa.array([files[i].path for i in which.tolist()], pa.string()),
            "line": plain_lines([r.line for r in rejections]),
            "reason": pa.array([r.reason for r in rejections], pa.string()),
            "detail": pa.array([r.detail for r in rejections], pa.string()),
            "raw": pa.array([r.raw for r in rejections], pa.binary()),
        }
    )
    con.register("batch_rejects", table)
    con.execute(
        "INSERT INTO _loader.rejects SELECT ?, file_id, path, line, reason, detail, raw, now() FROM batch_rejects",
        [load_id],
    )
    con.unregister("batch_rejects")


def _note_touched_state(pending: Pending, slice_: TableSlice, keep: pa.Array | None) -> None:
    """Remember which users / accounts this file's identifies / groups change."""
    for state, (source, key, _) in STATE_TABLES.items():
        if slice_.table == source and key in slice_.values:
            text = slice_.values[key].text
            keys = pc.unique(pc.drop_null(text if keep is None else text.filter(keep)))
            if len(keys):
                pending.touched.append(pa.table({"state": pa.repeat(pa.scalar(state), len(keys)),
                                                 "k": keys.cast(pa.string())}))


@dataclass
class OpenGroup:
    """One open commit group's transaction and the state it holds in the warehouse
    connection: the ids it holds (`ids`, dedup.GroupState) and the users / accounts keys its
    identifies / groups change (`touched`: a temp table of (state, k), written with the
    group's inserts, read by `refresh_state_tables`). Made by `begin`, handed to every
    function that reads or writes that state, ended by `commit` or `rollback`; the temp
    tables' names are unique per group and the tables are gone once it ends."""

    con: duckdb.DuckDBPyConnection
    ids: dedup.GroupState
    touched: str  # temp table name, unique per group
    open: bool = True

    def close(self) -> None:
        """Drop the group's temp tables, in its transaction (a COMMIT then keeps none)."""
        self.ids.close()
        self.con.execute(f"DROP TABLE IF EXISTS {self.touched}")

    def commit(self) -> None:
        self.close()
        self.con.execute("COMMIT")
        self.open = False  # only now: after a failed COMMIT, `rollback` still ends the transaction

    def rollback(self) -> None:
        """ROLLBACK, which drops the temp tables made in the transaction. When a failed
        COMMIT (disk full) already ended the transaction, the COMMIT's error is the one to keep."""
        if self.open:
            self.open = False
            self.ids.closed = True
            try:
                self.con.execute("ROLLBACK")
            except duckdb.TransactionException:
                pass


def begin(con: duckdb.DuckDBPyConnection) -> OpenGroup:
    """Open a commit group: its transaction and its own temp tables."""
    con.execute("BEGIN TRANSACTION")
    ids = dedup.begin_group(con)
    touched = ids.scratch("touched")
    con.execute(f"CREATE TEMP TABLE {touched} (state VARCHAR, k VARCHAR)")
    return OpenGroup(con, ids, touched)


def refresh_state_tables(con: duckdb.DuckDBPyConnection, schema_name: str, schema: Schema, *, touched: str) -> None:
    """Recompute the `users` / `accounts` rows whose identifies/groups changed: the keys in
    the temp table `touched` (state, k; `OpenGroup.touched`). Per column, the latest non-null
    value by event time (then receipt time, then id), so the result does not depend on the
    order in which files were loaded."""
    for state, (source, key, left_out) in STATE_TABLES.items():
        if state not in schema or source not in schema:
            continue
        src = table_ref(schema_name, source)
        cols = [c for c in schema[state] if c != "id" and c in schema[source] and c not in left_out]
        # Rows ranked once by (timestamp, received_at, id), NULLs last as in a tuple's
        # comparison; then each column's latest non-null value by that integer rank (a
        # tuple key per column per row cost twice the CPU). Ids are unique: no ties.
        rank = ident(RANK_COLUMN)
        picks = [f"max_by(s.{ident(c)}, s.{rank}) FILTER (WHERE s.{ident(c)} IS NOT NULL)" for c in cols]
        target = table_ref(schema_name, state)
        keys = f"(SELECT k FROM {touched} WHERE state = {literal(state)})"
        con.execute(f"DELETE FROM {target} WHERE id IN {keys}")
        con.execute(
            f"INSERT INTO {target} (id{''.join(', ' + ident(c) for c in cols)}) "
            f"SELECT s.{ident(key)}{''.join(', ' + p for p in picks)} "
            f"FROM (SELECT *, row_number() OVER (ORDER BY \"timestamp\" ASC NULLS LAST, received_at ASC NULLS LAST, "
            f"id ASC NULLS LAST) AS {rank} FROM {src} WHERE {ident(key)} IN {keys}) s "
            f"GROUP BY s.{ident(key)}"
        )


RANK_COLUMN = "#rank"  # no warehouse column has a '#' in its name
