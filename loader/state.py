"""State: the load runs and the file manifest that make re-runs idempotent, and `status`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow as pa

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


def start_load(con: duckdb.DuckDBPyConnection, version: str, arguments: dict) -> int:
    # We hold the only write lock, so a run still marked running was killed.
    con.execute("UPDATE _loader.loads SET status = 'interrupted' WHERE status = 'running'")
    load_id = con.execute("SELECT coalesce(max(load_id), 0) + 1 FROM _loader.loads").fetchall()[0][0]
    con.execute(
        "INSERT INTO _loader.loads (load_id, started_at, status, loader_version, arguments) "
        "VALUES (?, now(), 'running', ?, ?)",
        [load_id, version, json.dumps(arguments, sort_keys=True)],
    )
    return load_id


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


def record_names(con: duckdb.DuckDBPyConnection, mappings: list, load_id: int) -> None:
    """Keep the first mapping of each original name (names never change once chosen)."""
    if not mappings:
        return
    rows = sorted({(m.kind, m.table, m.original, m.name) for m in mappings})
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


def rejected_files(con: duckdb.DuckDBPyConnection, reasons: tuple[str, ...]) -> list[tuple[int, str]]:
    """Replay: (file id, path) of every file with rejects for one of `reasons`, in load order."""
    return con.execute(
        "SELECT file_id, any_value(path) FROM _loader.rejects WHERE list_contains(?, reason) "
        "GROUP BY file_id ORDER BY file_id", [list(reasons)]).fetchall()


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


def status(con: duckdb.DuckDBPyConnection, schema: str, *, last: int = 5) -> dict:
    """What `loader status` shows: runs, manifest totals, rejects, schema changes, tables."""

    def rows(sql: str, params: list | None = None) -> list[dict]:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    files = rows(
        "SELECT status, count(*) AS files, sum(lines) AS lines, sum(rows_loaded) AS rows_loaded, "
        "sum(duplicates) AS duplicates, sum(rejects) AS rejects, sum(discards) AS discards "
        "FROM _loader.files GROUP BY status ORDER BY status"
    )
    last_load = con.execute("SELECT max(load_id) FROM _loader.loads").fetchall()[0][0]
    return {
        "loads": rows(
            "SELECT load_id, status, started_at::VARCHAR AS started_at, "
            "finished_at::VARCHAR AS finished_at, files_loaded, files_skipped, files_failed, "
            "lines, rows_loaded, duplicates, rejects, discards "
            f"FROM _loader.loads ORDER BY load_id DESC LIMIT {int(last)}"
        ),
        "files": files,
        "failed_files": rows(
            "SELECT path, error, loaded_at::VARCHAR AS at FROM _loader.files f WHERE status = 'failed' "
            "AND NOT EXISTS (SELECT 1 FROM _loader.files g WHERE g.status = 'loaded' "
            "AND g.content_hash = f.content_hash) ORDER BY loaded_at DESC LIMIT 20"
        ),
        "rejects_by_reason": rows(
            "SELECT reason, count(*) AS rejects FROM _loader.rejects GROUP BY reason ORDER BY 2 DESC, 1"
        ),
        "discards_by_column": rows(
            "SELECT table_name, column_name, column_type, count(*) AS discards FROM _loader.discards "
            "GROUP BY ALL ORDER BY discards DESC, table_name, column_name LIMIT 20"
        ),
        "schema_changes_last_load": rows(
            "SELECT table_name, column_name, change, old_type, new_type FROM _loader.schema_changes "
            "WHERE load_id = ? ORDER BY table_name, column_name NULLS FIRST",
            [last_load],
        ),
        "violations": _violations(con, rows),
        "tables": _table_sizes(con, schema),
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

    tables = con.execute(
        "SELECT table_name, column_count FROM duckdb_tables() WHERE schema_name = ? ORDER BY 1", [schema]
    ).fetchall()
    return [
        {"table_name": t, "rows": con.execute(f"SELECT count(*) FROM {table_ref(schema, t)}").fetchall()[0][0],
         "columns": n}
        for t, n in tables
    ]
