"""Command line: `python -m loader load PATH... --db FILE`, `python -m loader status` and
`python -m loader replay` (load rejected lines again, e.g. after fixing the tracking plan).

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
from loader.replay import DEFAULT_REASONS, replay

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
    p_load.add_argument("--dedup-window", type=float, metavar="DAYS", help="count a message as a duplicate only if a run of the last DAYS days loaded its messageId (Segment's windowed semantics; default: no window, every id ever loaded)")
    p_load.add_argument("--memory-limit-mb", type=int, default=1024, help="DuckDB memory for the load, in MB (default 1024: 256 per reader thread, the rest for the warehouse); it spills to disk past it")
    p_load.add_argument("--since", metavar="WINDOW", help="only day folders of the segment-logs/<source>/<day>/ layout received in this window (2d, 36h) or from this day on (YYYY-MM-DD); s3:// and gs:// list only those days")
    _control_options(p_load)
    p_load.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    p_replay = sub.add_parser("replay", help="load rejected lines again (after fixing the tracking plan)")
    p_replay.add_argument("--db", default=default_db_path())
    p_replay.add_argument("--schema", default="segment")
    p_replay.add_argument("--reason", action="append", metavar="REASON",
                          help=f"replay rejects with this reason (repeatable; default {DEFAULT_REASONS[0]})")
    p_replay.add_argument("--source-id", help="as for load")
    p_replay.add_argument("--memory-limit-mb", type=int, default=1024)
    _control_options(p_replay)
    p_replay.add_argument("--json", action="store_true")

    p_status = sub.add_parser("status", help="manifest, last runs, rejects and schema changes")
    p_status.add_argument("--db", default=default_db_path())
    p_status.add_argument("--schema", default="segment")
    p_status.add_argument("--json", action="store_true")
    return parser


def _control_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-plan", metavar="PLAN", help="validate events against this tracking plan (Segment Protocols format, JSON or YAML); violations go to _loader.violations")
    p.add_argument("--on-violation", choices=("allow", "block"), default="allow", help="allow (default): load the event and record its violations; block: reject it (reason tracking_plan_violation, replayable); an event's own on_violation in the plan wins")
    p.add_argument("--unplanned-events", choices=("allow", "block"), default="allow", help="track events the plan does not list: allow (default, recorded as unplanned_event) or block")
    p.add_argument("--pii-config", metavar="FILE", help="properties, traits and context paths to drop or hash (salted SHA-256; salt from the file or $SEGMENT_LOADER_PII_SALT) before anything is written")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "load":
            return _load(args)
        if args.command == "replay":
            return _replay(args)
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
    config = _config(
        args,
        force=args.force,
        dry_run=args.dry_run,
        max_reject_ratio=args.max_reject_ratio,
        max_event_bytes=args.max_event_bytes,
        commit_every_rows=args.commit_every_rows,
        dedup_window_days=args.dedup_window,
        since=args.since,
        progress=progress,
    )
    _warn_plan(config)
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


def _config(args, **load_only) -> LoadConfig:
    """The settings `load` and `replay` share, plus the ones only `load` has."""
    return LoadConfig(
        db_path=args.db,
        schema=args.schema,
        source_id=args.source_id,
        memory_limit_mb=args.memory_limit_mb,
        tracking_plan=args.tracking_plan,
        on_violation=args.on_violation,
        unplanned_events=args.unplanned_events,
        pii_config=args.pii_config,
        **load_only,
    )


def _warn_plan(config: LoadConfig) -> None:
    for warning in config.compiled_plan.warnings() if config.compiled_plan else ():
        print(f"warning: {warning}", file=sys.stderr)


def _replay(args) -> int:
    config = _config(args)
    _warn_plan(config)
    result = replay(config, tuple(args.reason or DEFAULT_REASONS))
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return EXIT_OK
    s = result.summary()
    print(f"replay {s['load_id']}: {s['lines']:,} rejected line(s) of {s['files_seen']} file(s) replayed in {s['seconds']:.2f}s")
    print(f"  rows {s['rows_loaded']:,} + duplicates {s['duplicates']:,} + rejected again {s['rejects']:,} "
          f"({s['blocked']:,} blocked by the tracking plan); {s['violations']:,} violation(s) recorded")
    return EXIT_OK


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
    if s["violations"] or s["blocked"]:
        print(f"  tracking plan: {s['violations']:,} violation(s) recorded, {s['blocked']:,} event(s) "
              "blocked (in rejects; `python -m loader replay` loads them once the plan is fixed)")


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
        ("Tracking plan violations", "violations"),
        ("Tables", "tables"),
    ]:
        rows = info[key]
        if key == "violations" and not rows:
            continue  # no tracking plan in use
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
