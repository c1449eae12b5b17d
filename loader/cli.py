"""Command line: `python -m loader load PATH... --db FILE` and `python -m loader status`.

Exit codes: 0 success (also: nothing new to load); 1 one or more files failed (the others
were loaded); 2 usage error; 3 the database is held by another process (retry later);
4 unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import sys

import duckdb

from loader import __version__, state, writer
from loader.config import LoadConfig, default_db_path
from loader.errors import LoaderError
from loader.pipeline import LoadResult, load

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_INTERNAL = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loader",
        description="Load Segment archives (NDJSON, gzipped or not, and Parquet) into DuckDB.",
        epilog="exit codes: 0 ok, 1 some files failed, 2 usage error, "
        "3 database in use by another process, 4 internal error",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_load = sub.add_parser("load", help="load files, folders or globs")
    p_load.add_argument("paths", nargs="+", metavar="PATH")
    p_load.add_argument("--db", default=default_db_path(), help="DuckDB file (default: $SEGMENT_DUCKDB_PATH or warehouse.duckdb)")
    p_load.add_argument("--schema", default="segment", help="target schema (default: segment)")
    p_load.add_argument("--force", action="store_true", help="reload files the manifest has already loaded (rows still dedup by messageId)")
    p_load.add_argument("--dry-run", action="store_true", help="show the tables and schema changes a load would make; write nothing")
    p_load.add_argument("--max-reject-ratio", type=float, default=0.25, help="fail a file when more than this share of its lines is rejected (default 0.25)")
    p_load.add_argument("--max-event-bytes", type=int, default=32 * 1024, help="reject lines longer than this (default 32768, Segment's limit)")
    p_load.add_argument("--source-id", help="source id for messages with no projectId outside the segment-logs/<source>/ layout")
    p_load.add_argument("--commit-every-rows", type=int, default=100_000, help="commit files in groups of about this many rows (default 100000; 1 = a transaction per file)")
    p_load.add_argument("--memory-limit-mb", type=int, default=1536, help="DuckDB memory for the load, in MB (default 1536); it spills to disk past it")
    p_load.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    p_status = sub.add_parser("status", help="manifest, last runs, rejects and schema changes")
    p_status.add_argument("--db", default=default_db_path())
    p_status.add_argument("--schema", default="segment")
    p_status.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "load":
            return _load(args)
        return _status(args)
    except LoaderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (MemoryError, duckdb.OutOfMemoryException) as exc:
        print(f"error: out of memory ({exc}). Files committed before this one are complete; "
              "nothing of the file being loaded was kept. Raise --memory-limit-mb or give the "
              "process more memory, then run again.", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("interrupted: files committed so far are complete; run again to finish", file=sys.stderr)
        return 130


def _load(args) -> int:
    progress = _terminal_progress if sys.stderr.isatty() and not args.json else None
    config = LoadConfig(
        db_path=args.db,
        schema=args.schema,
        force=args.force,
        dry_run=args.dry_run,
        max_reject_ratio=args.max_reject_ratio,
        max_event_bytes=args.max_event_bytes,
        source_id=args.source_id,
        memory_limit_mb=args.memory_limit_mb,
        commit_every_rows=args.commit_every_rows,
        progress=progress,
    )
    result = load(args.paths, config)
    if progress:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        _print_result(result, dry_run=args.dry_run)
    for f in result.failed:
        print(f"error: {f.reason}", file=sys.stderr)
    return EXIT_FILES_FAILED if result.failed else EXIT_OK


def _terminal_progress(p: dict) -> None:
    sys.stderr.write(
        f"\rfiles {p['files_done']}/{p['files']}  rows {p['rows']:,}  "
        f"{p['rows_per_second']:,.0f} rows/s   "
    )
    sys.stderr.flush()


def _print_result(result: LoadResult, *, dry_run: bool) -> None:
    s = result.summary()
    if dry_run:
        print(f"dry run: {s['files_planned']} file(s) would be loaded, {s['files_skipped']} already loaded; nothing written")
        for ch in result.schema_changes:
            what = ch["change"].replace("_", " ")
            col = f".{ch['column']}" if ch["column"] else ""
            types = f" {ch['old_type'] or ''}{' -> ' if ch['old_type'] else ''}{ch['new_type'] or ''}".rstrip()
            print(f"  {what:12} {ch['table']}{col}{types}")
        return
    if s["files_loaded"] == 0 and s["files_failed"] == 0:
        print(f"nothing to load: all {s['files_skipped']} file(s) were loaded before (use --force to reload)")
        return
    print(
        f"load {s['load_id']}: {s['files_loaded']} file(s) loaded, {s['files_skipped']} skipped, "
        f"{s['files_failed']} failed in {s['seconds']:.2f}s"
    )
    print(
        f"  lines {s['lines']:,} = rows {s['rows_loaded']:,} + duplicates {s['duplicates']:,} "
        f"+ rejects {s['rejects']:,}; {s['discards']:,} value(s) discarded; "
        f"{s['schema_changes']} schema change(s)"
    )


def _status(args) -> int:
    con = writer.connect(args.db, read_only=True)
    try:
        info = state.status(con, args.schema)
    finally:
        con.close()
    if args.json:
        print(json.dumps(info, default=str))
        return EXIT_OK
    for title, key in [
        ("Last loads", "loads"),
        ("Files by status", "files"),
        ("Failed files", "failed_files"),
        ("Rejects by reason", "rejects_by_reason"),
        ("Discarded values", "discards_by_column"),
        ("Schema changes in the last load", "schema_changes_last_load"),
        ("Tables", "tables"),
    ]:
        rows = info[key]
        print(f"{title}:")
        if not rows:
            print("  (none)")
            continue
        cols = list(rows[0])
        widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols]
        print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for r in rows:
            print("  " + "  ".join(_fmt(r[c]).ljust(w) for c, w in zip(cols, widths)))
    return EXIT_OK


def _fmt(value) -> str:
    return "" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
