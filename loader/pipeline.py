"""The load: which files, in which order and transactions; the stages themselves are
loader/stages.py's STAGES, run by its one driver.

Batches go through UNIT_STAGES on reader threads (`ReadAhead`: they share every file's
stretches, in load order) while the main thread runs WAREHOUSE_STAGES over the batch before
(DuckDB and zlib release the GIL, so both cores work); a bounded window keeps memory flat.
A file's rows, rejects, discards, schema changes and manifest row commit together (commit
groups hold whole files), so a run killed at any point leaves only whole files behind.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import duckdb
import pyarrow as pa

from loader import __version__, dedup, state, writer
from loader.batch import FILE_SHIFT, LINE_MASK, Unit, plan_units, without_files
from loader.config import LoadConfig
from loader.errors import FileFailedError, LoaderError
from loader.faults import crash_point
from loader.http_batch import line_label
from loader.normalize import compute_connection
from loader.objectstore import Spool
from loader.protocols import REJECT_REASON
from loader.read import InputFile, Rejection, discover_files
from loader.schema import Schema
from loader.spec import Reason
from loader.stages import (
    STAGES,
    UNIT_STAGES,
    WAREHOUSE_STAGES,
    Batch,
    Context,
    file_batches,
    file_stretches,
    run,
    scrub,
    unit_batch,
)
from loader.timing import StageTimer

QUEUE_DEPTH = 1  # shaped batches waiting per reader thread for the writer: bounds memory
READERS = 2  # threads running UNIT_STAGES on batches in parallel (DuckDB, zlib and Arrow release the GIL)


@dataclass
class FileResult:
    path: str
    status: str  # loaded, skipped, failed, planned
    lines: int = 0
    rows_loaded: int = 0
    duplicates: int = 0
    rejects: int = 0
    discards: int = 0
    violations: int = 0  # of the tracking plan, recorded in _loader.violations
    blocked: int = 0  # events the tracking plan blocked (counted in rejects)
    reason: str = ""

    def add(self, batch: Batch, counts) -> None:
        """Count a written batch (its lines not included: a replay re-reads old lines)."""
        self.rows_loaded += counts.loaded
        self.duplicates += counts.duplicates
        self.discards += counts.discards
        self.violations += counts.violations
        self.rejects += len(batch.rejections)
        self.blocked += sum(r.reason == REJECT_REASON for r in batch.rejections)

    def seen_before(self, seen: writer.SeenBefore) -> None:
        """Rows the group's probe found in history: duplicates, not loaded."""
        self.rows_loaded -= seen.rows
        self.duplicates += seen.rows
        self.discards -= seen.discards
        self.violations -= seen.violations


@dataclass
class LoadResult:
    load_id: int | None
    db_path: str
    files: list[FileResult] = field(default_factory=list)
    schema_changes: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    timer: StageTimer = field(default_factory=StageTimer)
    stages: list[str] = field(default_factory=list)  # names of the stages the batches ran
    # Seconds per stage name (Batch.seconds summed over the batches), finer than `timer`'s six.
    seconds_by_stage: dict[str, float] = field(default_factory=dict)
    # Batch.seconds dicts already counted, with what was counted: the parts of a unit split
    # across commit groups share their batch's dict (dataclasses.replace does not copy it).
    _counted: dict[int, tuple[dict, dict]] = field(default_factory=dict, repr=False)
    # How many root objects (context, payload) of the batches each shaping path took
    # (normalize.SINGLE or FAST with the hints of earlier batches, CAREFUL otherwise).
    shape_paths: dict[str, int] = field(default_factory=dict)

    def ran(self, batch: Batch) -> None:
        """Note the stages a batch ran (every batch runs the same STAGES), their seconds and
        its shaping paths."""
        if self.stages != batch.stages:
            self.stages = list(dict.fromkeys(self.stages + batch.stages))
        if id(batch.seconds) not in self._counted:  # a unit split across groups counts once
            for path in batch.paths.values():
                self.shape_paths[path] = self.shape_paths.get(path, 0) + 1
        _, before = self._counted.get(id(batch.seconds), (None, {}))
        for name, s in batch.seconds.items():
            self.seconds_by_stage[name] = self.seconds_by_stage.get(name, 0.0) + s - before.get(name, 0.0)
        self._counted[id(batch.seconds)] = (batch.seconds, dict(batch.seconds))

    def total(self, key: str) -> int:
        return sum(getattr(f, key) for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def summary(self) -> dict:
        counts = {s: sum(f.status == s for f in self.files) for s in ("loaded", "skipped", "failed", "planned")}
        return {
            "load_id": self.load_id,
            "db": self.db_path,
            "files_seen": len(self.files),
            "files_loaded": counts["loaded"],
            "files_skipped": counts["skipped"],
            "files_failed": counts["failed"],
            "files_planned": counts["planned"],
            "lines": self.total("lines"),
            "rows_loaded": self.total("rows_loaded"),
            "duplicates": self.total("duplicates"),
            "rejects": self.total("rejects"),
            "discards": self.total("discards"),
            "violations": self.total("violations"),
            "blocked": self.total("blocked"),
            "schema_changes": len(self.schema_changes),
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.total("lines") / self.seconds) if self.seconds else None,
            "stage_seconds": self.timer.rounded(),
            "seconds_by_stage": {name: round(s, 3) for name, s in self.seconds_by_stage.items()},
            "shape_paths": dict(sorted(self.shape_paths.items())),
            "stages": self.stages,
        }

    def to_dict(self) -> dict:
        return {**self.summary(), "files": [asdict(f) for f in self.files], "schema_change_list": self.schema_changes}


def load(paths: list[str], config: LoadConfig | None = None) -> LoadResult:
    """Load Segment archives (files, folders, globs) into the warehouse; see LoadConfig."""
    config = config or LoadConfig()
    started = time.monotonic()
    files = discover_files(paths, config.since, config.exclude)
    _ = (config.compiled_plan, config.pii_policy)  # read both now: a bad one is a usage error
    result = LoadResult(None, config.db_path)
    if config.dry_run:
        _dry_run(files, config, result)
    else:
        _run(files, config, result)
    result.seconds = time.monotonic() - started
    return result


class ReadAhead:
    """The run's reading, shared by READERS threads in load order, for the writer to take in
    that order (`get`).

    The work is a sequence of tasks: a unit of small files read as one batch is one task; a
    file is one task per stretch of about `batch_bytes`, then its end. A thread takes the next
    task and reads its stretch under a lock (decompression is sequential), then runs
    UNIT_STAGES on it outside the lock; its result waits under the task's number. So both
    threads always work on the batches the writer needs next, whichever file they belong to
    (files handed out whole to each thread, in turn, left one thread waiting for the writer
    to finish the other's file). At most `window` tasks are out at a time: that bounds memory.
    """

    def __init__(self, units: list[Unit], config: LoadConfig, spool: Spool, readers: int = 0) -> None:
        self.config, self.spool = config, spool
        self.readers = readers or READERS
        self.window = self.readers * (QUEUE_DEPTH + 1)  # as many batches as per-thread queues held
        self.stop = threading.Event()
        self.timers = [StageTimer() for _ in range(self.readers)]
        self._tasks = self._plan(units)
        self._lock = threading.Lock()  # held while a task is taken (its stretch read)
        self._ready = threading.Condition()
        self._results: dict[int, list[tuple] | BaseException] = {}
        self._handed = 0  # tasks handed out
        self._taken = 0  # results the writer has taken
        self._failed: set[int] = set()  # files (by id) whose end with an error is known
        self._pending: list[tuple] = []  # items of the result being taken
        self._ended: set[int] = set()  # files whose end the writer has taken
        self._parquet_con: duckdb.DuckDBPyConnection | None = None
        self.threads = [threading.Thread(target=self._read, args=(self.timers[r],), daemon=True)
                        for r in range(self.readers)]
        for t in self.threads:
            t.start()

    def _plan(self, units: list[Unit]):
        """Tasks in load order: ("unit", unit, None), ("stretch", file, [source batch]),
        ("end", file, error or None). Advanced only under the lock."""
        for unit in units:
            if unit.combined:
                yield ("unit", unit, None)
                continue
            for file in unit.files:
                stretches = self.spool.reading(file, file_stretches(file, self.config, self._con_for(file)))
                try:
                    while id(file) not in self._failed:  # a stretch failed its stages: stop reading it
                        # In a list the taker empties: a name here would keep the raw lines
                        # alive until the next stretch is read.
                        box = [next(stretches, None)]
                        if box[0] is None:
                            break
                        yield ("stretch", file, box)
                except Exception as exc:  # noqa: BLE001 - reported as the file's failure
                    yield ("end", file, exc)
                    continue
                finally:
                    stretches.close()  # an object file's local copy goes now
                yield ("end", file, None)

    def _con_for(self, file: InputFile) -> duckdb.DuckDBPyConnection | None:
        """Parquet is turned into lines with DuckDB while the lock is held, by whichever thread
        reads it: on a connection of the plan's own, never a thread's (busy shaping)."""
        if file.format != "parquet":
            return None
        if self._parquet_con is None:
            self._parquet_con = compute_connection(self.config.reader_memory_mb)
        return self._parquet_con

    def _read(self, timer: StageTimer) -> None:
        ctx = Context(self.config, compute_connection(self.config.reader_memory_mb), {}, timer)
        # One DuckDB thread per reader: READERS threads already keep the cores busy, and a
        # second thread each only added memory (250k events: peak RSS 1,008 -> 921 MB; 1M:
        # 1,049 -> 1,027 MB) for no less CPU (bench/README.md, "The writer side").
        ctx.con.execute("SET threads = 1")
        try:
            while not self.stop.is_set():
                with self._ready:
                    if not self._ready.wait_for(lambda: self._handed - self._taken < self.window
                                                or self.stop.is_set(), timeout=0.5):
                        continue
                with self._lock:
                    if self.stop.is_set():
                        return
                    if self._handed - self._taken >= self.window:  # another thread took the room
                        continue
                    try:
                        with timer.stage("read"):
                            task = next(self._tasks, None)
                    except BaseException as exc:  # noqa: BLE001 - not a file's: the run stops
                        self._deliver(self._handed, exc)
                        self._handed += 1
                        return
                    if task is None:
                        return
                    seq = self._handed
                    self._handed += 1
                try:
                    result = self._run(task, ctx)
                except BaseException as exc:  # noqa: BLE001 - the writer raises it
                    self._deliver(seq, exc)
                    return
                task = None  # nothing of it is kept while this thread waits for room
                self._deliver(seq, result)
                result = None
        finally:
            ctx.con.close()

    def _run(self, task: tuple, ctx: Context) -> list[tuple]:
        """A task's items for the writer: UNIT_STAGES over its lines."""
        kind, what, payload = task
        if kind == "end":
            return [task]
        if kind == "stretch":  # the raw lines are freed as soon as the stages release them
            try:
                return [("batch", what, run(replace(payload.pop(), unit=Unit((what,))), UNIT_STAGES, ctx))]
            except Exception as exc:  # noqa: BLE001 - reported as the file's failure
                self._failed.add(id(what))
                return [("end", what, exc)]
        try:
            return [("unit", what, unit_batch(what, ctx))]
        except Exception:  # noqa: BLE001 - read its files one by one: each fails alone
            items: list[tuple] = []
            for file in what.files:
                try:
                    for b in self.spool.reading(file, file_batches(file, ctx)):
                        items.append(("batch", file, b))
                    items.append(("end", file, None))
                except Exception as exc:  # noqa: BLE001 - reported as the file's failure
                    items.append(("end", file, exc))
            return items

    def _deliver(self, seq: int, result: list[tuple] | BaseException) -> None:
        with self._ready:
            self._results[seq] = result
            self._ready.notify_all()

    def get(self) -> tuple:
        """The next item in load order: ("unit", unit, batch), ("batch", file, batch) or
        ("end", file, error or None). Once a file's end is taken, nothing more of it comes."""
        while True:
            while not self._pending:
                with self._ready:
                    self._ready.wait_for(lambda: self._taken in self._results)
                    result = self._results.pop(self._taken)
                    self._taken += 1
                    self._ready.notify_all()
                if isinstance(result, BaseException):
                    raise result
                self._pending = result
            item = self._pending.pop(0)
            if item[0] == "unit":
                return item
            if id(item[1]) in self._ended:  # after a stretch failed: the rest of its file
                continue
            if item[0] == "end":
                self._ended.add(id(item[1]))
            return item

    def close(self) -> None:
        self.stop.set()
        with self._ready:
            self._ready.notify_all()
        for t in self.threads:
            t.join(timeout=5)
        if self._parquet_con is not None:
            self._parquet_con.close()


def _hash_all(files: list[InputFile]) -> dict[Path, tuple[str, int] | OSError]:
    hashes: dict[Path, tuple[str, int] | OSError] = {}
    for f in files:
        if f.origin is not None:  # an object is known by its listing: nothing is downloaded
            hashes[f.path] = ("", f.origin.size)
            continue
        try:
            hashes[f.path] = state.content_hash(f.path)
        except OSError as exc:
            hashes[f.path] = exc
    return hashes


def _run(files: list[InputFile], config: LoadConfig, result: LoadResult) -> None:
    writer.map_large_blocks()
    con = writer.connect(config.db_path, memory_limit_mb=config.warehouse_memory_mb)
    try:
        writer.ensure_metadata(con, config.schema)
        result.load_id = load_id = state.start_load(
            con, __version__, {"paths": [f.name for f in files], "force": config.force,
                               "judging": judging_settings(config)})
        done_before = state.loaded_hashes(con)
        done_objects = state.loaded_objects(con)
        failed_hashes, failed_objects = ({}, {}) if config.retry_failed or config.force else \
            state.failed_before(con, judging_settings(config))
        hashes = _hash_all(files)
        todo: list[InputFile] = []
        for f in files:
            h = hashes[f.path]
            if isinstance(h, OSError):
                result.files.append(_record_failure(None, f, ("", 0), FileResult(f.name, "failed"), h,
                                                    [], con=con, load_id=load_id))
            elif f.origin is not None and (f.name, f.origin.version) in done_objects and not config.force:
                result.files.append(FileResult(f.name, "skipped", reason="already loaded (same ETag or generation)"))
            elif f.origin is None and h[0] in done_before and not config.force:
                result.files.append(FileResult(
                    f.name, "skipped", reason=f"already loaded (same content as {done_before[h[0]]})"))
            elif (error := failed_objects.get((f.name, f.origin.version)) if f.origin is not None
                  else failed_hashes.get(h[0])) is not None:
                result.files.append(FileResult(f.name, "skipped", reason=(
                    f"{SKIPPED_FAILED}: {error} (--retry-failed reads it again)")))
            else:
                todo.append(f)
        group = CommitGroup(con, config, load_id, result, writer.read_schema(con, config.schema))
        spool = Spool(todo)  # object files: downloaded a few ahead of the readers
        # Small local files of one source are read, shaped and written together (batch.py).
        units = plan_units(todo, {f.path: h[1] for f in todo if f.origin is None
                                  and not isinstance(h := hashes[f.path], OSError)}, config.batch_bytes)
        out = ReadAhead(units, config, spool)
        progress = Progress(config, len(todo), started=time.monotonic())
        try:
            for unit in units:
                first = out.get()
                if first[0] == "unit":
                    batch = first[2]
                    lines = batch.lines_per_file
                    if sum(lines) <= config.commit_every_rows:
                        result.files += write_unit(group, unit, batch, lines, hashes, progress)
                    else:  # a group smaller than the unit: its files are written, and grouped, one by one
                        everyone = set(range(len(unit.files)))
                        for k in sorted(everyone):
                            part = without_files(batch, everyone - {k})
                            result.files += write_unit(group, unit, part, lines, hashes, progress, only=k)
                            if group.full():
                                group.commit()
                else:
                    waiting = [first]  # handed over, so that no name here keeps the batch alive
                    first = None
                    for f in unit.files:
                        digest = (spool.digest, f.origin.size) if f.origin is not None else hashes[f.path]
                        result.files.append(write_file(group, f, digest, out, progress,
                                                       waiting.pop() if waiting else None))
                if group.full():
                    group.commit()
            group.commit()
        except BaseException as exc:
            group.rollback()
            _close_early(con, load_id, len(files), result, exc)
            raise
        finally:
            out.close()
            spool.close()
        for t in out.timers:
            result.timer.merge(t)
        status = "failed" if result.failed else "succeeded"
        with result.timer.stage("commit"):
            con.execute("CHECKPOINT")
        state.finish_load(con, load_id, status, result.summary())  # the timings as reported
    finally:
        con.close()


class CommitGroup:
    """Consecutive files written in one transaction, committed when it holds enough rows.

    Every file in it is whole (its rows, rejects, discards, schema changes and manifest row),
    so a crash still leaves only whole files; grouping pays DuckDB's per-statement and
    per-commit costs once per group rather than once per (often small) file."""

    def __init__(self, con, config: LoadConfig, load_id: int, result: LoadResult, schema: Schema):
        self.con, self.config, self.load_id, self.result, self.schema = con, config, load_id, result, schema
        self.pending = writer.Pending()
        self.tx: writer.OpenGroup | None = None  # the open transaction and its state
        self.changes: list[dict] = []
        self.files: dict[int, FileResult] = {}  # file id -> its counts, for the history probe
        self.run_files: dict[int, FileResult] = {}  # the same for the run's committed groups
        self.run_loads = state.continued_loads(con, load_id)  # interrupted runs this one finishes
        self.since_load = dedup.window_start(con, config.dedup_window_days)

    def begin(self) -> None:
        if self.tx is None:
            self.tx = writer.begin(self.con)

    def full(self) -> bool:
        return self.pending.rows >= self.config.commit_every_rows or self.pending.nbytes >= GROUP_BYTES

    def commit(self) -> None:
        if self.tx is None:
            return
        tx, timer = self.tx, self.result.timer
        seen, earlier = writer.settle_group(tx, self.config.schema, self.pending, load_id=self.load_id,
                                            since_load=self.since_load, run_loads=self.run_loads, timer=timer)
        with timer.stage("write"):
            for file_id, counts in [*seen.items(), *earlier.items()]:
                if (counted := self.files.get(file_id) or self.run_files.get(file_id)) is not None:
                    counted.seen_before(counts)  # else a file of an interrupted run this one continues
                state.record_seen_before(self.con, file_id, counts)
            if earlier.keys() - self.files.keys() - self.run_files.keys():
                state.recount_loads(self.con, self.run_loads)
            writer.refresh_state_tables(self.con, self.config.schema, self.schema, touched=tx.touched)
        crash_point("before_commit")
        with timer.stage("commit"):
            tx.commit()
        crash_point("after_commit")
        writer.release_memory()
        self.tx = None
        self.result.schema_changes += self.changes
        self.changes = []
        self.run_files.update(self.files)
        self.files = {}

    def write(self, batch: Batch, files: list[writer.FileRef], loaded_at: dt.datetime, change_file_id: int,
              path: str) -> Batch:
        """WAREHOUSE_STAGES over a batch of `files` (schema changes recorded under
        `change_file_id` and, in the result, `path`) into this group."""
        sink = WarehouseSink(self.tx, self.config, self.schema, self.pending, files, load_id=self.load_id,
                             loaded_at=loaded_at, change_file_id=change_file_id)
        batch = run(batch, WAREHOUSE_STAGES, Context(self.config, None, timer=self.result.timer, sink=sink))
        self.changes += [asdict(c) | {"path": path} for c in batch.changes]
        self.result.ran(batch)
        return batch

    def rollback(self) -> None:
        if self.tx is not None:
            self.tx.rollback()
            self.tx = None
        self.pending = writer.Pending()
        self.changes = []
        self.files = {}
        self.schema = writer.read_schema(self.con, self.config.schema)


GROUP_BYTES = 64 << 20  # typed rows held for one group's inserts: bounds memory


class WarehouseSink:
    """The warehouse as the stages' sink: a batch of `files` into the open commit group `tx`
    (rows wait in `pending` for the group's inserts; its ids are in `tx.ids`). `before_write`
    runs first (replay removes the rejects it is about to record again)."""

    def __init__(self, tx: writer.OpenGroup, config: LoadConfig, schema: Schema, pending: writer.Pending,
                 files: list[writer.FileRef], *, load_id: int, loaded_at: dt.datetime, change_file_id: int,
                 before_write: Callable[[], None] | None = None) -> None:
        self.tx, self.con = tx, tx.con
        self.config, self.schema, self.pending, self.files = config, schema, pending, files
        self.load_id, self.loaded_at, self.change_file_id = load_id, loaded_at, change_file_id
        self.before_write = before_write

    def fresh(self, batch: Batch) -> pa.Table:
        fresh, superseded = dedup.fresh_in_files(self.tx.ids, batch.messages, [f.file_id for f in self.files])
        if superseded.num_rows:  # the group's earlier copies of these become duplicates at the commit
            self.pending.superseded.append(superseded)
        return fresh

    def write(self, batch: Batch) -> list[writer.BatchCounts]:
        writer.apply_changes(self.con, self.config.schema, batch.changes, load_id=self.load_id,
                             file_id=self.change_file_id)
        if batch.changes:
            crash_point("after_schema_change")
        if self.before_write is not None:
            self.before_write()
        counts = writer.write_unit_batch(self.con, batch, self.pending, self.files, load_id=self.load_id,
                                         loaded_at=self.loaded_at)
        state.record_names(self.con, batch.name_map, self.load_id, self.pending.names)
        crash_point("after_insert")
        return counts


class DrySink:
    """A dry run's sink: schema changes are planned on `schema` (in memory), nothing is written."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def fresh(self, batch: Batch) -> pa.Table:
        return batch.messages  # no group, no history: only in-batch copies are duplicates

    def write(self, batch: Batch) -> list:
        return []


def write_file(group: CommitGroup, f: InputFile, digest, out: ReadAhead, progress, first_item=None) -> FileResult:
    """Write one file into the group. A file that fits in one batch is checked against the
    reject ratio before anything is written; a longer file gets a transaction of its own, so
    that failing it rolls back only its rows."""
    con, config, load_id = group.con, group.config, group.load_id
    fr = FileResult(f.name, "loaded")
    kind, _f, first = first_item or out.get()
    first_item = None  # from here only `batches` holds a batch: each is freed once written
    batches: list[Batch] = []
    error: Exception | None = None
    if kind == "end":
        error = first
    else:
        batches.append(first)
        kind, _f, second = out.get()
        if kind == "end":
            error = second
        else:
            batches.append(second)
    first = second = None
    streaming = len(batches) == 2  # more than one batch: the file cannot be judged upfront
    if streaming:
        group.commit()
    if error is None and not streaming:
        error = reject_ratio_error(f, config, batches[0].lines_read if batches else 0,
                                    batches[0].rejections if batches else [])
    if error is not None and not streaming:
        return _record_failure(group, f, digest, fr, error, batches)

    group.begin()
    file_id = state.next_file_id(con)
    group.files[file_id] = fr
    loaded_at = dt.datetime.now(dt.UTC)  # uuid_ts: one load time per file
    first_rejects: list = []
    try:
        while batches or streaming:
            if batches:
                batch = batches.pop(0)
            else:
                kind, _f, payload = out.get()
                if kind == "end":
                    error = payload
                    break
                batch = payload
            batch = group.write(batch, [writer.FileRef(file_id, fr.path, batch.lines_read)], loaded_at, file_id, fr.path)
            counts = batch.counts[0]
            fr.lines += batch.lines_read
            fr.add(batch, counts)
            first_rejects += [r for r in batch.rejections if r.reason != REJECT_REASON][: max(0, 3 - len(first_rejects))]
            progress.batch(fr.lines, counts.loaded)
            batch = payload = None  # not kept alive while the next batch is awaited
        if streaming and error is None:
            error = reject_ratio_error(f, config, fr.lines, first_rejects, rejects=fr.rejects - fr.blocked)
        if error is not None:  # only a streaming file gets here: it is alone in its group
            group.rollback()
            return _record_failure(group, f, digest, fr, error, [])
        crash_point("before_manifest")
        state.record_file(con, file_id, load_id, _manifest_row(f, digest, fr))
        if streaming:
            group.commit()
        progress.file_done()
        return fr
    except (LoaderError, OSError, ValueError, duckdb.Error) as exc:
        if not streaming:
            raise  # the group holds other files: the run stops, their transaction rolls back
        group.rollback()
        _drain_file(out)
        return _record_failure(group, f, digest, fr, exc, [])


def write_unit(group: CommitGroup, unit: Unit, batch: Batch, lines: list[int], hashes: dict,
                progress, only: int | None = None) -> list[FileResult]:
    """Write small files read as one batch: each file is judged against the reject ratio on
    its own (a failing one loses its rows, keeps its manifest row), the rest are written with
    one statement per table, each with its own counts and manifest row. `only`: the batch
    holds just that file of the unit."""
    con, config, load_id, timer = group.con, group.config, group.load_id, group.result.timer
    mine = [only] if only is not None else list(range(len(unit.files)))
    rejects: list[list] = [[] for _ in unit.files]
    for r in batch.rejections:  # with their line numbers in the file, for the messages
        rejects[r.line >> FILE_SHIFT].append(replace(r, line=r.line & LINE_MASK))
    failed = {}
    for i in mine:
        f = unit.files[i]
        error = reject_ratio_error(f, config, lines[i], rejects[i])
        if error is not None:
            failed[i] = _record_failure(group, f, hashes[f.path], FileResult(f.name, "failed", lines=lines[i]),
                                        error, [_Known(rejects[i])])
    if failed:
        batch = without_files(batch, set(failed))
    group.begin()
    kept = [i for i in mine if i not in failed]
    file_ids = dict(zip(kept, state.next_file_ids(con, len(kept)), strict=True))
    refs = [writer.FileRef(file_ids.get(i, -1), f.name, lines[i] if i in file_ids else 0)
            for i, f in enumerate(unit.files)]
    loaded_at = dt.datetime.now(dt.UTC)  # uuid_ts: one load time per unit of small files
    first = refs[kept[0]] if kept else None
    batch = group.write(batch, refs, loaded_at, first.file_id if first else 0, first.path if first else "")
    counts = batch.counts
    results, rows = [], []
    for i in mine:
        f = unit.files[i]
        if i in failed:
            results.append(failed[i])
            continue
        fr = FileResult(f.name, "loaded", lines=lines[i], rejects=len(rejects[i]),
                        blocked=sum(r.reason == REJECT_REASON for r in rejects[i]))
        group.files[refs[i].file_id] = fr  # the group's probe of history may move rows to duplicates
        c = counts[i]
        fr.rows_loaded, fr.duplicates, fr.discards, fr.violations = c.loaded, c.duplicates, c.discards, c.violations
        rows.append((refs[i].file_id, _manifest_row(f, hashes[f.path], fr)))
        results.append(fr)
        progress.batch(fr.lines, fr.rows_loaded)
    crash_point("before_manifest")
    with timer.stage("write"):
        state.record_files(con, load_id, rows)
    for _ in rows:
        progress.file_done()
    return results


@dataclass
class _Known:
    """The rejects already known of a failed small file (what _record_failure reads)."""

    rejections: list


SKIPPED_FAILED = "failed before, unchanged"


def judging_settings(config: LoadConfig) -> dict:
    """The settings that decide whether a file fails: a file that failed under the same ones
    and has not changed would fail again."""
    return {"max_reject_ratio": config.max_reject_ratio, "max_event_bytes": config.max_event_bytes,
            "tracking_plan": config.tracking_plan, "on_violation": config.on_violation,
            "unplanned_events": config.unplanned_events, "pii_config": config.pii_config}


def _close_early(con, load_id: int, files_seen: int, result: LoadResult, exc: BaseException) -> None:
    """Record a run stopped by Ctrl-C or an error that is not a file's, with the counters of
    the files it committed. If the database cannot take even that (disk full), the next run
    marks it interrupted."""
    try:
        state.close_run(con, load_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                        files_seen=files_seen, files_skipped=result.summary()["files_skipped"])
    except duckdb.Error:
        pass


def reject_ratio_error(f: InputFile, config: LoadConfig, lines: int, first_rejects: list,
                        rejects: int | None = None) -> Exception | None:
    """Events the tracking plan blocked are a policy, not a broken file: they do not count."""
    first_rejects = [r for r in first_rejects if r.reason != REJECT_REASON]
    rejects = len(first_rejects) if rejects is None else rejects
    if not lines or rejects / lines <= config.max_reject_ratio:
        return None
    examples = "; ".join(f"{line_label(r.line)}: {r.reason}" for r in first_rejects[:3])
    return FileFailedError(
        f"{f.name}: {rejects} of {lines} lines rejected ({rejects / lines:.0%}), over the limit "
        f"of {config.max_reject_ratio:.0%} (--max-reject-ratio); first: {examples}. "
        "Nothing from this file was loaded."
    )


def describe_failure(f: InputFile, exc: Exception) -> str:
    if isinstance(exc, OSError):
        text = str(exc.strerror or exc)
        if f.origin is None and f.path.is_symlink() and not f.path.exists():
            text += f" (a symlink to {os.readlink(f.path)}, which does not exist)"
        return text if f.name in text else f"cannot read {f.name}: {text}"
    if isinstance(exc, (MemoryError, duckdb.OutOfMemoryException)):
        return f"{f.name}: out of memory while reading it ({exc}); raise --memory-limit-mb"
    if not isinstance(exc, (LoaderError, ValueError)):
        return f"{f.name}: internal error {type(exc).__name__}: {exc!r} (a loader bug: please report it)"
    text = str(exc)
    return text if f.name in text else f"{f.name}: {text}"


def _drain_file(out: ReadAhead) -> None:
    while True:
        kind, _f, _p = out.get()
        if kind == "end":
            return


def _manifest_row(f: InputFile, digest, fr: FileResult) -> dict:
    """`digest`: (content hash, size); for an object (the spool's hash of f, size), as its
    bytes are hashed while they download."""
    return {
        "path": f.name,
        "size_bytes": digest[1],
        "content_hash": digest[0](f) if callable(digest[0]) else digest[0],
        "etag": f.origin.version if f.origin is not None else None,
        "last_modified": f.origin.last_modified if f.origin is not None else None,
        "source_id": f.source_id,
        "status": fr.status,
        "lines": fr.lines,
        "rows_loaded": fr.rows_loaded,
        "duplicates": fr.duplicates,
        "rejects": fr.rejects,
        "discards": fr.discards,
        "error": fr.reason or None,
    }


def _record_failure(group: CommitGroup | None, f: InputFile, digest, fr: FileResult, exc: Exception,
                    batches: list, *, con=None, load_id: int | None = None) -> FileResult:
    """A failed file: none of its rows is kept, every line it has is a reject (its own reason,
    else `file_failed`), so lines = rows + duplicates + rejects holds, and its manifest row
    says why."""
    failed = FileResult(f.name, "failed", reason=describe_failure(f, exc))
    if group is None:  # it could not even be read for its hash: no lines to keep
        con.execute("BEGIN TRANSACTION")
        state.record_file(con, state.next_file_id(con), load_id, _manifest_row(f, digest, failed))
        con.execute("COMMIT")
        return failed
    group.begin()
    file_id = state.next_file_id(group.con)
    failed.lines = failed.rejects = _keep_failed_lines(group, f, file_id, failed.reason, batches)
    state.record_file(group.con, file_id, group.load_id, _manifest_row(f, digest, failed))
    return failed


def _keep_failed_lines(group: CommitGroup, f: InputFile, file_id: int, error: str, batches: list) -> int:
    """Read the failed file again and keep each line as a reject; lines whose own problem is
    known keep that reason. Returns how many lines were kept (those that could be read)."""
    known = {r.line: r for b in batches for r in b.rejections if r.reason != REJECT_REASON}
    kept = 0
    ctx = Context(group.config, compute_connection(group.config.reader_memory_mb))
    try:
        for stretch in file_stretches(f, group.config, ctx.con):
            stretch = scrub(stretch, ctx)  # as the load would have kept them: PII removed
            lines, prior = stretch.lines, stretch.rejections
            rejects = [known.get(n) or Rejection(n, text.encode("utf-8").removesuffix(b"\n"), Reason.FILE_FAILED, error)
                       for n, text in zip(lines.column("line_no").to_pylist(), lines.column("raw").to_pylist())]
            rejects = sorted(rejects + prior, key=lambda r: r.line)
            writer.write_rejections(group.con, rejects, load_id=group.load_id, file_id=file_id, path=f.name)
            kept += len(rejects)
    except (OSError, ValueError, duckdb.Error):
        pass  # what could be read is kept; the manifest counts exactly those lines
    finally:
        ctx.con.close()
    return kept


def _dry_run(files: list[InputFile], config: LoadConfig, result: LoadResult) -> None:
    """Read and normalise everything, plan schema changes, write nothing."""
    schema: Schema = {}
    done_before: dict[str, str] = {}
    done_objects: set[tuple[str, str]] = set()
    if os.path.exists(config.db_path):
        con = writer.connect(config.db_path, read_only=True)
        try:
            schema = writer.read_schema(con, config.schema)
            if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = '_loader' AND table_name = 'files'").fetchall()[0][0]:
                done_before = state.loaded_hashes(con)
                done_objects = state.loaded_objects(con)
        finally:
            con.close()
    todo: list[InputFile] = []
    for f in files:
        if f.origin is not None:
            done = (f.name, f.origin.version) in done_objects
        else:
            try:
                done = state.content_hash(f.path)[0] in done_before
            except OSError as exc:
                result.files.append(FileResult(f.name, "failed", reason=describe_failure(f, exc)))
                continue
        if done and not config.force:
            result.files.append(FileResult(f.name, "skipped", reason="already loaded"))
        else:
            todo.append(f)
    ctx = Context(config, compute_connection(config.reader_memory_mb), {}, result.timer, DrySink(schema))
    try:
        with Spool(todo) as spool:
            for f in todo:
                fr = FileResult(f.name, "planned")
                try:
                    # The whole tuple, as a load runs it; the sink writes nothing.
                    stretches = (run(replace(b, unit=Unit((f,))), STAGES, ctx)
                                 for b in file_stretches(f, config, ctx.con))
                    for batch in spool.reading(f, stretches):
                        result.ran(batch)
                        result.schema_changes += [asdict(c) | {"path": fr.path} for c in batch.changes]
                        fr.lines += batch.lines_read
                        fr.rejects += len(batch.rejections)
                        fr.duplicates += batch.duplicates_in_batch
                        fr.violations += batch.violations.num_rows if batch.violations is not None else 0
                        fr.blocked += sum(r.reason == REJECT_REASON for r in batch.rejections)
                except OSError as exc:
                    fr = FileResult(f.name, "failed", reason=describe_failure(f, exc))
                result.files.append(fr)
    finally:
        ctx.con.close()


class Progress:
    """Rows and rows/s on stderr when it is a terminal, through config.progress otherwise."""

    def __init__(self, config: LoadConfig, files: int, started: float) -> None:
        self.callback = config.progress
        self.files = files
        self.files_done = 0
        self.rows = 0
        self.started = started

    def batch(self, lines: int, loaded: int) -> None:
        self.rows += loaded
        self._emit()

    def file_done(self) -> None:
        self.files_done += 1
        self._emit()

    def _emit(self) -> None:
        if self.callback is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.callback({"files_done": self.files_done, "files": self.files, "rows": self.rows,
                       "rows_per_second": self.rows / elapsed})
