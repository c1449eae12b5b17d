"""Command line: `python -m loader load PATH... --db FILE`, `status`, `replay` (load rejected
lines again, e.g. after fixing the tracking plan) and `publish` (a read-only copy of the marts).

Exit codes: 0 success (also: nothing new to load); 1 one or more files failed (the others
were loaded); 2 usage error; 3 the database is held by another process (retry later);
4 out of memory, a write error (disk full) or an internal error; 130 interrupted. Every
failure is one `error:` line on stderr (and a JSON object on stdout with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections import Counter

import duckdb

from loader import __version__, state, writer
from loader.config import DEFAULT_MEMORY_MB, LoadConfig, default_db_path
from loader.errors import LoaderError, UsageError
from loader.pipeline import SKIPPED_FAILED, LoadResult, load
from loader.publish import DEFAULT_SCHEMAS, publish
from loader.replay import DEFAULT_REASONS, replay

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C (128 + SIGINT)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised (so --json can report them) instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m loader",
        description="Load Segment archives (NDJSON, gzipped or not, and Parquet) into DuckDB.",
        epilog="exit codes: 0 ok, 1 some files failed, 2 usage error, "
        "3 database in use by another process, 4 internal error (or out of memory, disk full), "
        "130 interrupted",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_load = sub.add_parser("load", help="load files, folders or globs")
    p_load.add_argument("paths", nargs="+", metavar="PATH")
    _db_options(p_load)
    p_load.add_argument("--force", action="store_true", help="reload files the manifest has already loaded (rows still dedup by messageId)")
    p_load.add_argument("--retry-failed", action="store_true", help="read again files that failed before and have not changed (by default they are skipped until their content or the settings that judged them change)")
    p_load.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave out files whose path or name matches GLOB (repeatable), e.g. a file you know is not an archive")
    p_load.add_argument("--dry-run", action="store_true", help="show the tables and schema changes a load would make; write nothing (with --engine spark also the counts: rows, duplicates, rejects per file, as the load would count them)")
    p_load.add_argument("--max-reject-ratio", type=float, default=0.25, help="fail a file when more than this share of its lines is rejected (default 0.25)")
    p_load.add_argument("--max-event-bytes", type=int, default=32 * 1024, help="reject lines longer than this (default 32768, Segment's limit)")
    p_load.add_argument("--source-id", help="source id for messages with no projectId outside the segment-logs/<source>/ layout")
    p_load.add_argument("--commit-every-rows", type=int, default=100_000, help="commit files in groups of about this many rows (default 100000; 1 = a transaction per file)")
    p_load.add_argument("--dedup-window", type=float, metavar="DAYS", help="count a message as a duplicate only if a run of the last DAYS days loaded its messageId (Segment's windowed semantics; default: no window, every id ever loaded; both engines)")
    p_load.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_MB, help="DuckDB memory for the load, in MB (default 640: a third for each of the two reader threads, the rest for the warehouse); it spills to disk past it")
    p_load.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb", help="duckdb (default): load into the --db file; spark: run the stages as Spark tasks and write Parquet lake tables under --lake (loader/spark.py)")
    p_load.add_argument("--lake", metavar="DIR", help="with --engine spark: the lake folder (a path the driver and every executor see)")
    p_load.add_argument("--spark-master", default=None, metavar="URL", help="with --engine spark: Spark master (default: spark-submit's, else local[2])")
    p_load.add_argument("--since", metavar="WINDOW", help="only day folders of the segment-logs/<source>/<day>/ layout received in this window (2d, 36h) or from this day on (YYYY-MM-DD); s3:// and gs:// list only those days")
    _control_options(p_load)
    _output_options(p_load, verbose="with --json, list every skipped file (by default they are counted)")

    p_replay = sub.add_parser("replay", help="load rejected lines again (after fixing the tracking plan)")
    _db_options(p_replay)
    p_replay.add_argument("--reason", action="append", metavar="REASON",
                          help=f"replay rejects with this reason (repeatable; default {DEFAULT_REASONS[0]})")
    p_replay.add_argument("--source-id", help="as for load")
    p_replay.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_MB, help="as for load")
    _control_options(p_replay)
    _output_options(p_replay)

    p_publish = sub.add_parser("publish", help="copy the marts into a read-only file analysts can open during loads and builds")
    p_publish.add_argument("--db", default=default_db_path(), help="the warehouse (default: $SEGMENT_DUCKDB_PATH or warehouse.duckdb)")
    p_publish.add_argument("--to", required=True, metavar="FILE", help="the DuckDB file readers open (replaced atomically)")
    p_publish.add_argument("--schema", action="append", metavar="NAME", help=f"schema to copy (repeatable; default {DEFAULT_SCHEMAS[0]}, where dbt builds the marts)")
    _output_options(p_publish)

    p_status = sub.add_parser("status", help="manifest, last runs, open problems and schema changes")
    _db_options(p_status)
    p_status.add_argument("--table", metavar="NAME", help="list the last load's schema changes of this table, column by column")
    p_status.add_argument("--verbose", action="store_true", help="list every schema change of the last load (by default they are summarised)")
    p_status.add_argument("--json", action="store_true", help="print everything as one JSON object")
    return parser


def _db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=default_db_path(), help="DuckDB file (default: $SEGMENT_DUCKDB_PATH or warehouse.duckdb)")
    p.add_argument("--schema", default="segment", help="schema of the event tables (default: segment)")


def _output_options(p: argparse.ArgumentParser, verbose: str | None = None) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing when all went well (errors still go to stderr): for cron")
    if verbose:
        p.add_argument("--verbose", action="store_true", help=verbose)


def _control_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-plan", metavar="PLAN", help="validate events against this tracking plan (Segment Protocols format, JSON or YAML); violations go to _loader.violations")
    p.add_argument("--on-violation", choices=("allow", "block"), default="allow", help="allow (default): load the event and record its violations; block: reject it (reason tracking_plan_violation, replayable); an event's own on_violation in the plan wins")
    p.add_argument("--unplanned-events", choices=("allow", "block"), default="allow", help="track events the plan does not list: allow (default, recorded as unplanned_event) or block")
    p.add_argument("--pii-config", metavar="FILE", help="properties, traits and context paths to drop or hash (salted SHA-256; salt from the file or $SEGMENT_LOADER_PII_SALT) before anything is written")


def main(argv: list[str] | None = None) -> int:
    """Run one command; every outcome ends in one `error:` line (no traceback) and its code."""
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv
    try:
        args = _parser().parse_args(argv)
        if args.command == "load":
            return _load(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "publish":
            return _publish(args)
        return _status(args)
    except LoaderError as exc:
        return _fail(exc.exit_code, str(exc), as_json)
    except (MemoryError, duckdb.OutOfMemoryException) as exc:
        return _fail(EXIT_INTERNAL, f"out of memory ({exc}). Files committed before this one are "
                     "complete; nothing of the file being loaded was kept. Raise --memory-limit-mb or "
                     "give the process more memory, then run again.", as_json)
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted: files committed so far are complete (the run is "
                     "recorded as interrupted); run again to finish", as_json)
    except Exception as exc:  # noqa: BLE001 - whatever it is: one line and exit 4, never a traceback
        if _is_write_failure(exc):
            return _fail(EXIT_INTERNAL, f"cannot write the database ({exc}). Is the disk full? Files "
                         "committed before the error are complete, the rest was rolled back and the run "
                         "is recorded as failed: free space, then run again.", as_json)
        return _fail(EXIT_INTERNAL, f"internal error {type(exc).__name__}: {exc} (a loader bug: please "
                     "report it with the command; set SEGMENT_LOADER_DEBUG=1 for the traceback)", as_json)


def _is_write_failure(exc: Exception) -> bool:
    """Disk full, file size limit, I/O error: DuckDB reports them as IO or commit errors."""
    text = str(exc)
    return isinstance(exc, (OSError, duckdb.IOException)) or any(
        k in text for k in ("Could not write", "No space left", "File too large", "Input/output error"))


def _fail(code: int, message: str, as_json: bool) -> int:
    if os.environ.get("SEGMENT_LOADER_DEBUG"):
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        _out(json.dumps({"error": {"exit_code": code, "message": message}}))
    return code


def _out(text: str = "") -> None:
    """Print to stdout; a reader that went away (`status | head`) is not an error: the rest of
    the output is dropped and the command's own exit code stands."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _load(args) -> int:
    progress = _terminal_progress if sys.stderr.isatty() and not args.json and not args.quiet else None
    config = _config(
        args,
        force=args.force,
        retry_failed=args.retry_failed,
        exclude=tuple(args.exclude),
        dry_run=args.dry_run,
        max_reject_ratio=args.max_reject_ratio,
        max_event_bytes=args.max_event_bytes,
        commit_every_rows=args.commit_every_rows,
        dedup_window_days=args.dedup_window,
        since=args.since,
        progress=progress,
    )
    _warn_plan(config)
    if args.engine == "spark":
        result = _load_spark(args, config)
    elif args.lake or args.spark_master:
        raise UsageError("--lake and --spark-master go with --engine spark")
    else:
        result = load(args.paths, config)
    if progress:
        print(file=sys.stderr)
    if args.json:
        _out(json.dumps(_load_json(result, verbose=args.verbose), default=str))
    elif not args.quiet:
        _print_result(result, dry_run=args.dry_run, counted=args.engine == "spark")
    for f in result.failed:
        print(f"error: {f.reason}", file=sys.stderr)
    return EXIT_FILES_FAILED if result.failed else EXIT_OK


def _load_spark(args, config: LoadConfig) -> LoadResult:
    if not args.lake:
        raise UsageError("--engine spark needs --lake DIR (the folder of the Parquet lake tables)")
    from loader.spark import load_spark, session  # pyspark is an optional dependency

    return load_spark(args.paths, config, args.lake, session(args.spark_master))


def _load_json(result: LoadResult, *, verbose: bool) -> dict:
    """Skipped files are counted by why (thousands of them every hour say nothing new)."""
    out = result.to_dict()
    if not verbose:
        skipped = [f for f in out["files"] if f["status"] == "skipped"]
        out["files"] = [f for f in out["files"] if f["status"] != "skipped"]
        out["skipped_by_reason"] = dict(Counter(f["reason"].split(" (")[0].split(":")[0] for f in skipped))
    return out


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
        _out(json.dumps(result.to_dict(), default=str))
        return EXIT_OK
    if args.quiet:
        return EXIT_OK
    s = result.summary()
    _out(f"replay {s['load_id']}: {s['lines']:,} rejected line(s) of {s['files_seen']} file(s) replayed in {s['seconds']:.2f}s")
    _out(f"  rows {s['rows_loaded']:,} + duplicates {s['duplicates']:,} + rejected again {s['rejects']:,} "
         f"({s['blocked']:,} blocked by the tracking plan); {s['violations']:,} violation(s) recorded")
    return EXIT_OK


def _publish(args) -> int:
    published = publish(args.db, args.to, tuple(args.schema or DEFAULT_SCHEMAS))
    if args.json:
        _out(json.dumps({"target": published.target, "tables": published.tables}))
    elif not args.quiet:
        _out(f"published {len(published.tables)} table(s), {sum(published.tables.values()):,} rows, "
             f"to {published.target}")
    return EXIT_OK


def _terminal_progress(p: dict) -> None:
    sys.stderr.write(
        f"\rfiles {p['files_done']}/{p['files']}  rows {p['rows']:,}  "
        f"{p['rows_per_second']:,.0f} rows/s   "
    )
    sys.stderr.flush()


def _accounting(s: dict) -> str:
    return (f"lines {s['lines']:,} = rows {s['rows_loaded']:,} + duplicates {s['duplicates']:,} "
            f"+ rejects {s['rejects']:,}; {s['discards']:,} value(s) discarded")


def _print_result(result: LoadResult, *, dry_run: bool, counted: bool = False) -> None:
    """`counted`: a dry run that ran the writer too (the Spark engine's) has the load's counts."""
    s = result.summary()
    if dry_run:
        _out(f"dry run: {s['files_planned']} file(s) would be loaded, {s['files_skipped']} already loaded; nothing written")
        if counted:
            _out(f"  {_accounting(s)}")
        for ch in result.schema_changes:
            what = ch["change"].replace("_", " ")
            col = f".{ch['column']}" if ch["column"] else ""
            types = f" {ch['old_type'] or ''}{' -> ' if ch['old_type'] else ''}{ch['new_type'] or ''}".rstrip()
            _out(f"  {what:12} {ch['table']}{col}{types}")
        return
    failed_before = sum(f.status == "skipped" and f.reason.startswith(SKIPPED_FAILED) for f in result.files)
    skipped = f"{s['files_skipped']} skipped"
    if failed_before:
        skipped += f" ({failed_before} failed before and unchanged: see status; --retry-failed reads them again)"
    if s["files_loaded"] == 0 and s["files_failed"] == 0:
        _out(f"nothing to load: all {s['files_skipped']} file(s) were loaded before (use --force to reload)"
             if not failed_before else f"nothing to load: {skipped}")
        return
    _out(f"load {s['load_id']}: {s['files_loaded']} file(s) loaded, {skipped}, "
         f"{s['files_failed']} failed in {s['seconds']:.2f}s")
    _out(f"  {_accounting(s)}; {s['schema_changes']} schema change(s)")
    if s["violations"] or s["blocked"]:
        _out(f"  tracking plan: {s['violations']:,} violation(s) recorded, {s['blocked']:,} event(s) "
             "blocked (in rejects; `python -m loader replay` loads them once the plan is fixed)")


def _status(args) -> int:
    con = writer.connect(args.db, read_only=True)
    try:
        info = state.status(con, args.schema, table=args.table, verbose=args.verbose)
    finally:
        con.close()
    if args.json:
        _out(json.dumps(info, default=str))
        return EXIT_OK
    _table("Last loads", info["loads"])
    with_rows = info["last_load_with_rows"]
    if with_rows and with_rows["load_id"] not in {r["load_id"] for r in info["loads"]}:
        _out(f"  last load that loaded rows: {with_rows['load_id']} ({with_rows['status']}, "
             f"{with_rows['started_at']}): {with_rows['files_loaded']} file(s), {with_rows['rows_loaded']:,} rows")
    _table("Files by status", info["files"])
    _table("Failed files (unchanged ones are not read again unless --retry-failed)",
           info["failed_files"], clip={"error": 160})
    _table("Rejects by reason", info["rejects_by_reason"])
    if info["superseded_rejects"]:
        _out(f"  (+ {info['superseded_rejects']:,} reject(s) of file versions loaded again since: "
             "kept in _loader.rejects for audit)")
    _table("Discarded values", info["discards_by_column"])
    _schema_changes(info, args)
    if info["violations"]:  # only with a tracking plan in use
        _table("Tracking plan violations", info["violations"])
    _table("Tables", info["tables"])
    return EXIT_OK


def _schema_changes(info: dict, args) -> None:
    s = info["schema_change_summary"]
    if args.verbose or args.table:
        _table(f"Schema changes in the last load ({s['load_id']})", info["schema_changes_last_load"])
        return
    _out(f"Schema changes in the last load ({s['load_id']}):")
    if not (s["tables_created"] or s["columns_added"] or s["widened"]):
        _out("  (none)")
        return
    _out(f"  {s['tables_created']} table(s) created ({s['columns_of_new_tables']} columns), "
         f"{s['columns_added']} column(s) added to {s['tables_with_columns_added']} table(s), "
         f"{len(s['widened'])} widened")
    for w in s["widened"][:10]:
        _out(f"  widened {w}")
    _out("  (status --verbose, or --table NAME, lists them column by column)")


def _table(title: str, rows: list[dict], clip: dict[str, int] | None = None) -> None:
    _out(f"{title}:")
    if not rows:
        _out("  (none)")
        return
    cells = [{c: _fmt(r[c], (clip or {}).get(c)) for c in r} for r in rows]
    cols = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in cells)) for c in cols]
    _out("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for r in cells:
        _out("  " + "  ".join(r[c].ljust(w) for c, w in zip(cols, widths)).rstrip())


def _fmt(value, clip: int | None = None) -> str:
    text = "" if value is None else str(value)
    return text if clip is None or len(text) <= clip else text[: clip - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
