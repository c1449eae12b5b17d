"""Replay: load rejected lines again, after the tracking plan (or the PII config) was fixed.

The rejects of one file go through the same STAGES as a load (loader/stages.py: PII scrub,
validate, route, shape, tracking plan, schema, cast, dedup, write) under a new load id, so downstream models see them as new rows. In the
same transaction the replayed rejects leave `_loader.rejects` (lines rejected again are
recorded again, with their new reason), their old blocked violations leave
`_loader.violations`, and the file's manifest row moves them from `rejects` to `rows_loaded`
or `duplicates`: per file, lines = rows + duplicates + rejects still holds.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from loader import __version__, dedup, state, writer
from loader.config import LoadConfig
from loader.faults import crash_point
from loader.normalize import compute_connection
from loader.pipeline import FileResult, LoadResult, WarehouseSink
from loader.protocols import REJECT_REASON
from loader.read import source_id_from_path
from loader.stages import STAGES, Context, lines_batch, run

DEFAULT_REASONS = (REJECT_REASON,)


def replay(config: LoadConfig, reasons: tuple[str, ...] = DEFAULT_REASONS) -> LoadResult:
    """Re-load the rejects with one of `reasons`; one transaction per original file."""
    started = time.monotonic()
    _ = (config.compiled_plan, config.pii_policy)  # read them before writing anything
    result = LoadResult(None, config.db_path)
    con = writer.connect(config.db_path, memory_limit_mb=config.warehouse_memory_mb)
    ctx = Context(config, compute_connection(config.reader_memory_mb), {}, result.timer)
    try:
        writer.ensure_metadata(con, config.schema)
        result.load_id = load_id = state.start_load(
            con, __version__, {"replay": list(reasons), "tracking_plan": config.tracking_plan,
                               "pii_config": config.pii_config})
        schema = writer.read_schema(con, config.schema)
        replayed: dict[int, FileResult] = {}
        for file_id, path in state.rejected_files(con, reasons):
            lines, kept = state.rejected_lines(con, file_id, reasons)
            fr = FileResult(path, "loaded", lines=len(lines))
            tx = writer.begin(con)
            try:
                pending = writer.Pending()
                loaded_at = dt.datetime.now(dt.UTC)
                source_id = source_id_from_path(Path(path)) or config.source_id
                for chunk in _chunks(lines, config.batch_bytes):
                    table = pa.table({"line_no": pa.array([n for n, _ in chunk], pa.int64()),
                                      "raw": pa.array([t for _, t in chunk], pa.string())})
                    # The old rejects go before the write stage records the lines rejected again.
                    sink = WarehouseSink(
                        tx, config, schema, pending, [writer.FileRef(file_id, path, len(chunk))],
                        load_id=load_id, loaded_at=loaded_at, change_file_id=file_id,
                        before_write=lambda c=chunk, f=file_id: writer.forget_rejects(
                            con, f, [n for n, _ in c], reasons, load_id=load_id))
                    batch = run(lines_batch(table, source_id), STAGES, replace(ctx, sink=sink))
                    result.ran(batch)
                    result.schema_changes += [{**c.__dict__, "path": path} for c in batch.changes]
                    fr.add(batch, batch.counts[0])
                seen, earlier = writer.settle_group(
                    tx, config.schema, pending, load_id=load_id,
                    since_load=dedup.window_start(con, config.dedup_window_days))
                for counts in seen.values():
                    fr.seen_before(counts)  # one file: every history hit is its own
                for earlier_id, counts in earlier.items():  # a file replayed before in this run
                    replayed[earlier_id].seen_before(counts)
                    state.record_seen_before(con, earlier_id, counts)
                writer.refresh_state_tables(con, config.schema, schema, touched=tx.touched)
                state.record_replay(con, file_id, fr.rows_loaded, fr.duplicates, fr.discards, fr.rejects - len(lines))
                crash_point("before_commit")
                tx.commit()
            except BaseException:
                tx.rollback()
                raise
            fr.reason = f"{kept} reject(s) kept: not UTF-8" if kept else ""
            result.files.append(fr)
            replayed[file_id] = fr
        state.finish_load(con, load_id, "succeeded", result.summary())
        con.execute("CHECKPOINT")
    finally:
        ctx.con.close()
        con.close()
    result.seconds = time.monotonic() - started
    return result


def _chunks(lines: list[tuple[int, str]], batch_bytes: int):
    chunk, size = [], 0
    for item in lines:
        chunk.append(item)
        size += len(item[1])
        if size >= batch_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
