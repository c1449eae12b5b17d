"""State: the load runs and the file manifest that make re-runs idempotent, and `status`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa

from loader.sql import int_list

HASH_CHUNK = 8 << 20


def content_hash(path: Path) -> tuple[str, int]:
    """SHA-256 of the file's bytes as stored (compressed or not) and its size."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def loaded_hashes(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """content hash -> path, for every file loaded before."""
    return dict(
        con.execute(
            "SELECT content_hash, any_value(path) FROM _loader.files WHERE status = 'loaded' "
            "GROUP BY content_hash"
        ).fetchall()
    )


def loaded_objects(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    """(URI, ETag or generation) of every object loaded before: listing alone decides a skip."""
    return set(con.execute(
        "SELECT DISTINCT path, etag FROM _loader.files WHERE status = 'loaded' AND etag IS NOT NULL"
    ).fetchall())


def failed_before(con: duckdb.DuckDBPyConnection, judging: dict) -> tuple[dict, dict]:
    """Files that failed under the same settings that judge a file (reject ratio, event size,
    plan, PII config) and never loaded since: re-reading them would only fail again, so a run
    skips them unless told to retry. Returns {content hash: latest error} for local files and
    {(URI, ETag or generation): latest error} for objects (known by their listing)."""
    failed = (
        "FROM _loader.files f JOIN _loader.loads l USING (load_id) WHERE f.status = 'failed' "
        "AND json_extract(l.arguments, '$.judging') = json(?) "
        "AND NOT EXISTS (SELECT 1 FROM _loader.files g WHERE g.status = 'loaded' AND g.file_id > f.file_id "
    )
    judged = [json.dumps(judging, sort_keys=True)]
    by_hash = con.execute(
        "SELECT f.content_hash, arg_max(f.error, f.file_id) " + failed
        + "AND g.content_hash = f.content_hash) AND f.etag IS NULL AND f.content_hash <> '' "
        "GROUP BY f.content_hash", judged).fetchall()
    by_object = con.execute(
        "SELECT f.path, f.etag, arg_max(f.error, f.file_id) " + failed
        + "AND g.path = f.path AND g.etag = f.etag) AND f.etag IS NOT NULL GROUP BY f.path, f.etag",
        judged).fetchall()
    return dict(by_hash), {(path, etag): error for path, etag, error in by_object}


def start_load(con: duckdb.DuckDBPyConnection, version: str, arguments: dict) -> int:
    # We hold the only write lock, so a run still marked running was killed: it keeps the
    # counters of the files it committed.
    _count_from_manifest(con, "l.status = 'running'")
    con.execute("UPDATE _loader.loads SET status = 'interrupted' WHERE status = 'running'")
    load_id = con.execute("SELECT coalesce(max(load_id), 0) + 1 FROM _loader.loads").fetchall()[0][0]
    con.execute(
        "INSERT INTO _loader.loads (load_id, started_at, status, loader_version, arguments) "
        "VALUES (?, now(), 'running', ?, ?)",
        [load_id, version, json.dumps(arguments, sort_keys=True)],
    )
    return load_id


def continued_loads(con: duckdb.DuckDBPyConnection, load_id: int) -> tuple[int, ...]:
    """The interrupted runs (killed, or stopped by Ctrl-C) right before `load_id`, which it
    continues: their committed files and its own count as one run, so the result equals one
    clean run (among a run's copies of a message the earliest receivedAt wins)."""
    rows = con.execute(
        "SELECT load_id FROM _loader.loads WHERE load_id < ? AND status = 'interrupted' AND load_id > "
        "(SELECT coalesce(max(load_id), 0) FROM _loader.loads WHERE load_id < ? AND status <> 'interrupted') "
        "ORDER BY load_id", [load_id, load_id]).fetchall()
    return tuple(r[0] for r in rows)


def recount_loads(con: duckdb.DuckDBPyConnection, load_ids: tuple[int, ...]) -> None:
    """Read finished runs' counters back from the manifest (a later run moved some of their
    rows to duplicates)."""
    if load_ids:
        _count_from_manifest(con, f"l.load_id IN ({int_list(load_ids)})")


def close_run(con: duckdb.DuckDBPyConnection, load_id: int, status: str, *, files_seen: int,
              files_skipped: int) -> None:
    """End a run that stopped early (interrupted, or an error that is not a file's): its
    counters are those of the files it committed, read back from the manifest."""
    con.execute("UPDATE _loader.loads SET finished_at = now(), status = ?, files_seen = ?, "
                "files_skipped = ? WHERE load_id = ?", [status, files_seen, files_skipped, load_id])
    _count_from_manifest(con, f"l.load_id = {int(load_id)}")


def _count_from_manifest(con: duckdb.DuckDBPyConnection, which: str) -> None:
    con.execute(
        "UPDATE _loader.loads l SET files_loaded = m.loaded, files_failed = m.failed, lines = m.lines, "
        "rows_loaded = m.rows_loaded, duplicates = m.duplicates, rejects = m.rejects, discards = m.discards "
        "FROM (SELECT load_id, count(*) FILTER (WHERE status = 'loaded') AS loaded, "
        "count(*) FILTER (WHERE status = 'failed') AS failed, sum(lines) AS lines, "
        "sum(rows_loaded) AS rows_loaded, sum(duplicates) AS duplicates, sum(rejects) AS rejects, "
        "sum(discards) AS discards FROM _loader.files "
        f"WHERE load_id IN (SELECT load_id FROM _loader.loads l WHERE {which}) GROUP BY load_id) m "
        f"WHERE m.load_id = l.load_id AND {which}"
    )
    con.execute(  # a run that committed no file at all
        "UPDATE _loader.loads l SET files_loaded = 0, files_failed = 0, lines = 0, rows_loaded = 0, "
        "duplicates = 0, rejects = 0, discards = 0 "
        f"WHERE files_loaded IS NULL AND {which}"
    )


def next_file_id(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT nextval('_loader.file_ids')").fetchall()[0][0]


def record_file(con: duckdb.DuckDBPyConnection, file_id: int, load_id: int, info: dict) -> None:
    con.execute(
        "INSERT INTO _loader.files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?, ?)",
        [
            file_id,
            load_id,
            info["path"],
            info["size_bytes"],
            info["content_hash"],
            info["source_id"],
            info["status"],
            info["lines"],
            info["rows_loaded"],
            info["duplicates"],
            info["rejects"],
            info["discards"],
            info.get("error"),
            info.get("etag"),
            info.get("last_modified"),
        ],
    )


def finish_load(con: duckdb.DuckDBPyConnection, load_id: int, status: str, totals: dict) -> None:
    con.execute(
        "UPDATE _loader.loads SET finished_at = now(), status = ?, files_seen = ?, "
        "files_loaded = ?, files_skipped = ?, files_failed = ?, lines = ?, rows_loaded = ?, "
        "duplicates = ?, rejects = ?, discards = ? WHERE load_id = ?",
        [
            status,
            totals["files_seen"],
            totals["files_loaded"],
            totals["files_skipped"],
            totals["files_failed"],
            totals["lines"],
            totals["rows_loaded"],
            totals["duplicates"],
            totals["rejects"],
            totals["discards"],
            load_id,
        ],
    )
    if totals.get("stage_seconds") is not None:  # where the time went (loader/timing.py)
        con.execute("UPDATE _loader.loads SET stage_seconds = ?, seconds_by_stage = ?, shape_paths = ? "
                    "WHERE load_id = ?",
                    [json.dumps(totals["stage_seconds"]), json.dumps(totals.get("seconds_by_stage") or {}),
                     json.dumps(totals.get("shape_paths") or {}), load_id])


def record_names(con: duckdb.DuckDBPyConnection, mappings: list, load_id: int,
                 known: set[tuple[str, str, str, str]] | None = None) -> None:
    """Keep the first mapping of each original name (names never change once chosen).
    `known`: mappings already recorded (committed, or in the open transaction), skipped
    without a statement; the ones written are added to it."""
    rows = sorted({(m.kind, m.table, m.original, m.name) for m in mappings} - (known or set()))
    if not rows:
        return
    columns = list(zip(*rows))
    con.register("new_names", pa.table(
        {name: pa.array(col, pa.string()) for name, col in zip(("kind", "table_name", "original", "name"), columns)}
    ))
    con.execute(
        f"INSERT INTO _loader.name_map SELECT n.*, {int(load_id)} FROM new_names n "
        "ANTI JOIN _loader.name_map m ON m.kind = n.kind AND m.table_name = n.table_name "
        "AND m.original = n.original AND m.name = n.name"
    )
    con.unregister("new_names")
    if known is not None:
        known.update(rows)


def rejected_files(con: duckdb.DuckDBPyConnection, reasons: tuple[str, ...]) -> list[tuple[int, str]]:
    """Replay: (file id, path) of every file with rejects for one of `reasons`, in load order."""
    return con.execute(
        "SELECT file_id, any_value(path) FROM _loader.rejects WHERE list_contains(?, reason) "
        f"AND file_id NOT IN ({SUPERSEDED}) GROUP BY file_id ORDER BY file_id", [list(reasons)]).fetchall()


def rejected_lines(con: duckdb.DuckDBPyConnection, file_id: int,
                   reasons: tuple[str, ...]) -> tuple[list[tuple[int, str]], int]:
    """Replay: a file's rejected lines as (line, text), and how many are not UTF-8 (those stay)."""
    lines, kept = [], 0
    for line, raw in con.execute(
        "SELECT line, raw FROM _loader.rejects WHERE file_id = ? AND list_contains(?, reason) ORDER BY line",
        [file_id, list(reasons)],
    ).fetchall():
        try:
            lines.append((line, bytes(raw).decode("utf-8")))
        except UnicodeDecodeError:
            kept += 1
    return lines, kept


def record_seen_before(con: duckdb.DuckDBPyConnection, file_id: int, seen) -> None:
    """The commit group's probe of history found `seen.rows` of a file's rows loaded before:
    its manifest row moves them from rows_loaded to duplicates (with their discards)."""
    record_replay(con, file_id, -seen.rows, seen.rows, -seen.discards, 0)


def record_replay(con: duckdb.DuckDBPyConnection, file_id: int, loaded: int, duplicates: int,
                  discards: int, rejects_change: int) -> None:
    """Add to a file's manifest counts; replay moves its replayed lines from rejects to rows
    or duplicates, so lines = rows_loaded + duplicates + rejects still holds."""
    con.execute(
        "UPDATE _loader.files SET rows_loaded = rows_loaded + ?, duplicates = duplicates + ?, "
        "discards = discards + ?, rejects = rejects + ? WHERE file_id = ?",
        [loaded, duplicates, discards, rejects_change, file_id],
    )


# A file version is superseded once a later version of it loaded: the same path again (the
# complete file after a truncated one, a fixed file after a failed one) or the same bytes
# (a retry, --force). Its rows stay; its rejects and failure are kept for audit, not open.
# (Two equi-joins rather than one OR: each stays a hash join on a large manifest.)
SUPERSEDED = " UNION ".join(
    f"SELECT f.file_id FROM _loader.files f JOIN _loader.files g ON g.{key} = f.{key} "
    "AND g.file_id > f.file_id AND g.status = 'loaded'" for key in ("path", "content_hash"))


def status(con: duckdb.DuckDBPyConnection, schema: str, *, last: int = 5, table: str | None = None,
           verbose: bool = False) -> dict:
    """What `loader status` shows: runs, manifest totals, open problems, schema changes, tables.
    Schema changes of the last load are summarised; `verbose` or `table` lists them."""
    from loader.errors import UsageError

    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = '_loader' "
                       "AND table_name = 'files'").fetchall()[0][0]:
        raise UsageError("this database has no loader records (_loader.files): nothing was loaded "
                         "into it yet; check --db, or run `python -m loader load` first")

    def rows(sql: str, params: list | None = None) -> list[dict]:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    runs = ("SELECT load_id, status, strftime(started_at, '%Y-%m-%d %H:%M:%S') AS started_at, "
            "strftime(finished_at, '%Y-%m-%d %H:%M:%S') AS finished_at, files_loaded, files_skipped, files_failed, "
            "lines, rows_loaded, duplicates, rejects, discards FROM _loader.loads ")
    last_load = con.execute("SELECT max(load_id) FROM _loader.loads").fetchall()[0][0]
    changes = rows(
        "SELECT table_name, column_name, change, old_type, new_type FROM _loader.schema_changes "
        "WHERE load_id = ? AND (? IS NULL OR table_name = ?)", [last_load, table, table])
    changes.sort(key=lambda c: (natural_key(c["table_name"]), c["column_name"] is not None,
                                natural_key(c["column_name"] or "")))
    return {
        "loads": rows(runs + f"ORDER BY load_id DESC LIMIT {int(last)}"),
        "last_load_with_rows": (rows(runs + "WHERE rows_loaded > 0 ORDER BY load_id DESC LIMIT 1") or [None])[0],
        "files": rows(
            f"SELECT status || CASE WHEN file_id IN ({SUPERSEDED}) THEN ' (superseded)' ELSE '' END "
            "AS status, count(*) AS files, sum(lines) AS lines, sum(rows_loaded) AS rows_loaded, "
            "sum(duplicates) AS duplicates, sum(rejects) AS rejects, sum(discards) AS discards "
            "FROM _loader.files GROUP BY ALL ORDER BY 1"
        ),
        # Each failing path once, with its latest error (the path itself is the first column).
        "failed_files": rows(
            "SELECT path, count(*) AS attempts, strftime(max(loaded_at), '%Y-%m-%d %H:%M:%S') AS last_at, "
            "regexp_replace(replace(arg_max(error, file_id), path, 'the file'), '^the file: ', '') AS error "
            f"FROM _loader.files WHERE status = 'failed' AND file_id NOT IN ({SUPERSEDED}) "
            "GROUP BY path ORDER BY last_at DESC, path LIMIT 20"
        ),
        "rejects_by_reason": rows(
            f"SELECT reason, count(*) AS rejects FROM _loader.rejects WHERE file_id NOT IN ({SUPERSEDED}) "
            "GROUP BY reason ORDER BY 2 DESC, 1"
        ),
        "superseded_rejects": con.execute(
            f"SELECT count(*) FROM _loader.rejects WHERE file_id IN ({SUPERSEDED})").fetchall()[0][0],
        "discards_by_column": rows(
            "SELECT table_name, column_name, column_type, count(*) AS discards FROM _loader.discards "
            "GROUP BY ALL ORDER BY discards DESC, table_name, column_name LIMIT 20"
        ),
        "schema_change_summary": summarise_changes(changes) | {"load_id": last_load},
        "schema_changes_last_load": changes if verbose or table else [],
        "violations": _violations(con, rows),
        "tables": _table_sizes(con, schema),
    }


def natural_key(name: str) -> list:
    """new_event_2 before new_event_10: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def summarise_changes(changes: list[dict]) -> dict:
    """Counts for a load's schema changes; widenings are listed (they change a column's type)."""
    created = [c for c in changes if c["change"] == "create_table"]
    new_tables = {c["table_name"] for c in created}
    added = [c for c in changes if c["change"] == "add_column"]
    return {
        "tables_created": len(created),
        "columns_of_new_tables": sum(c["table_name"] in new_tables for c in added),
        "columns_added": sum(c["table_name"] not in new_tables for c in added),
        "tables_with_columns_added": len({c["table_name"] for c in added} - new_tables),
        "widened": [f"{c['table_name']}.{c['column_name']} {c['old_type']} -> {c['new_type']}"
                    for c in changes if c["change"] == "widen"],
    }


def _violations(con: duckdb.DuckDBPyConnection, rows) -> list[dict]:
    """Tracking plan violations by event, property and rule (a database from before tracking
    plans has no such table)."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = '_loader' "
                       "AND table_name = 'violations'").fetchall()[0][0]:
        return []
    return rows(
        "SELECT left(coalesce(event, table_name), 40) AS event, property_path, rule, "
        "count(*) FILTER (WHERE action = 'allow') AS loaded, "
        "count(*) FILTER (WHERE action = 'block') AS blocked, "
        "left(min(offending_value), 40) AS example, left(min(expected), 60) AS expected "
        "FROM _loader.violations GROUP BY ALL ORDER BY loaded + blocked DESC, 1, 2, 3 LIMIT 20"
    )


def _table_sizes(con: duckdb.DuckDBPyConnection, schema: str) -> list[dict]:
    """Exact row counts (DuckDB's estimated_size also counts rows deleted by users/accounts)."""
    from loader.sql import table_ref

    tables = sorted(con.execute(
        "SELECT table_name, column_count FROM duckdb_tables() WHERE schema_name = ?", [schema]
    ).fetchall(), key=lambda t: natural_key(t[0]))
    return [
        {"table_name": t, "rows": con.execute(f"SELECT count(*) FROM {table_ref(schema, t)}").fetchall()[0][0],
         "columns": n}
        for t, n in tables
    ]


def next_file_ids(con: duckdb.DuckDBPyConnection, n: int) -> list[int]:
    """`n` new file ids in one statement (a unit of small files takes one per file)."""
    if n <= 0:
        return []
    return sorted(r[0] for r in con.execute(f"SELECT nextval('_loader.file_ids') FROM range({int(n)})").fetchall())


_COUNTS = ("size_bytes", "lines", "rows_loaded", "duplicates", "rejects", "discards")


def record_files(con: duckdb.DuckDBPyConnection, load_id: int, rows: list[tuple[int, dict]]) -> None:
    """Manifest rows of several files in one statement, as `record_file` writes one."""
    if not rows:
        return
    names = ("path", "size_bytes", "content_hash", "source_id", "status", "lines", "rows_loaded",
             "duplicates", "rejects", "discards", "error", "etag")
    table = pa.table({"file_id": pa.array([f for f, _ in rows], pa.int64()),
                      **{k: pa.array([info.get(k) for _, info in rows],
                                     pa.int64() if k in _COUNTS else pa.string()) for k in names},
                      "last_modified": pa.array([info.get("last_modified") for _, info in rows],
                                                pa.timestamp("us", tz="UTC"))})
    con.register("manifest_rows", table)
    con.execute(
        f"INSERT INTO _loader.files SELECT file_id, {int(load_id)}, path, size_bytes, content_hash, source_id, "
        "status, lines, rows_loaded, duplicates, rejects, discards, error, now(), etag, last_modified "
        "FROM manifest_rows"
    )
    con.unregister("manifest_rows")
