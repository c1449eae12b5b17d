"""The loader as a Spark job (`python -m loader load PATH --engine spark --lake DIR`).

The same stages as the DuckDB loader, spread over Spark tasks, writing Parquet lake tables:

1. Shape (one task per unit of loader/batch.py: a file, or many small files): read, scrub,
   normalise and judge each file with the loader's own functions; return the column
   statistics of each planning step and write the unit's message ids (its in-unit winners).
2. Plan (driver): replay the schema planning unit by unit, in file order, from those
   statistics: the same tables, columns, types and widenings as loading the files one by one.
3. Dedup (Spark SQL): the first copy of each message id, in file order, that no committed
   load holds (a distributed anti-join against the lake's `_loader/seen_messages`; with a
   dedup window only the `load=<id>` folders of the loads inside it); every other copy is a
   loser of its unit.
4. Write (one task per unit): the loader's own writer, into a task-local in-memory DuckDB
   holding the schema as it stood before the unit, with the unit's losers pre-recorded as
   history (so they are counted as duplicates exactly as the DuckDB loader counts them); then
   each table is exported, cast to the load's final types, as Parquet under the staging area.
5. Commit (driver): `users`/`accounts` are recomputed, every staged table is moved to
   `<lake>/<schema>/<table>/load=<id>/`, and the commit record `_loader/commits/<id>.json`
   is written last, atomically (write then rename).

Exactly once without multi-table transactions: a `load=<id>` directory counts only when its
commit record exists. A run first removes what an uncommitted run left (its `load=<id>`
directories and the staging area), and takes the next load id after the last committed one,
so a re-run after a crash redoes that load from scratch. Files are skipped by the committed
manifest, as in the DuckDB loader, so a re-run after success is a no-op.

A dry run runs steps 1-4 as a load does (the same counts, by the same writer) but its write
tasks export nothing, step 5 never runs, and the tasks' scratch (message ids, losers) lives in
a temporary folder beside the lake: nothing in the lake is written, not even its lock file
(opened to read).

The lake is plain Parquet on a filesystem every executor and the driver see (local disk in
local mode, a shared mount on a cluster): directory renames are what make publishing cheap.
A table format (Delta, Iceberg) would replace step 5's renames and commit record by its own
atomic commit; the stages before it stay as they are.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import fcntl
import io
import json
import os
import pickle
import queue
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loader import __version__, dedup, pipeline, state, writer
from loader.batch import FILE_SHIFT, LINE_MASK, Unit, plan_units, without_files
from loader.config import LoadConfig
from loader.errors import DatabaseLockedError, UsageError
from loader.faults import crash_point
from loader.normalize import TableSlice, combine_chunks, compute_connection
from loader.objectstore import SPOOL_PREFIX, Spool
from loader.read import InputFile, discover_files
from loader.schema import Schema, file_slices, plan_schema
from loader.spec import STATE_TABLES
from loader.sql import ident, literal, table_ref
from loader.stages import Batch, run_unit_stages
from loader.timing import StageTimer

META = "_loader"
# `_loader` tables each unit writes (seen_messages: the ids it loaded, from the view)
UNIT_META = ("rejects", "discards", "schema_changes", "name_map", "violations", "files", "seen_messages")
CRASH_ENV = "SEGMENT_LOADER_CRASH_AT"
# Named points of the driver's commit (SEGMENT_LOADER_CRASH_AT=<point>, loader/faults.py)
SPARK_CRASH_POINTS = ("spark_before_publish", "spark_mid_publish", "spark_before_commit", "spark_after_commit")
FILE_IDS_PER_UNIT = 2  # a streamed file that fails takes a second file id (pipeline.write_file)
_LOAD_DIR = re.compile(r"^load=(\d+)$")


# ---- the adapter to the loader's stages: run_unit_stages, pipeline.write_unit/_write_file ----

@dataclass
class Shaped:
    """A unit after the shape stage. `combined`: its files are one batch (`batches[0]`);
    otherwise `batches[i]` are file i's batches and `errors[i]` what stopped its reading."""

    index: int
    unit: Unit
    combined: bool
    batches: list
    errors: list
    lines: list[int]
    failed: set[int]
    steps: list[tuple[str, list[TableSlice]]]  # (path, slices with statistics only), in order
    digests: list[str] = field(default_factory=list)  # SHA-256 of each object file as downloaded
    timer: StageTimer = field(default_factory=StageTimer)  # the task's seconds per stage

    def light(self) -> Shaped:
        """Without the batches: what the driver needs to plan."""
        return replace(self, batches=[], errors=[None] * len(self.errors))


class _ArrowPickler(pickle.Pickler):
    """Pickles Arrow data through Arrow IPC, which writes only the rows of a slice: a shaped
    batch's table slices are views of shared buffers, and pickle would copy the whole buffer
    for every view (gigabytes for a 16 MB batch)."""

    def reducer_override(self, obj):
        if isinstance(obj, pa.Array):
            return _unpack_array, (_ipc(pa.table({"c": obj})),)
        if isinstance(obj, pa.ChunkedArray):
            return _unpack_chunked, (_ipc(pa.table({"c": obj})),)
        if isinstance(obj, pa.Table):
            return _unpack_table, (_ipc(obj),)
        return NotImplemented


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as out:
        out.write_table(table)
    return sink.getvalue().to_pybytes()


def _unpack_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _unpack_chunked(data: bytes) -> pa.ChunkedArray:
    return _unpack_table(data).column(0)


def _unpack_array(data: bytes) -> pa.Array:
    return combine_chunks(_unpack_chunked(data))


def pack(obj) -> bytes:
    """`obj` as bytes (Arrow data compactly, see _ArrowPickler); `pickle.loads` reads it."""
    buf = io.BytesIO()
    _ArrowPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _stats_only(slices: list[TableSlice]) -> list[TableSlice]:
    empty_lines, empty_ids = pa.array([], pa.int64()), pa.array([], pa.string())
    return [replace(s, line=empty_lines, message_id=empty_ids, values={}, unnamed={}) for s in slices]


@contextlib.contextmanager
def _spooled(unit: Unit, wanted: set[int] | None = None) -> Iterator[tuple[Unit, Spool]]:
    """The unit with its s3:// / gs:// files (those `wanted`, default all) downloaded into a
    spool folder of this task's own (Spool, loader/objectstore.py), so concurrent tasks never
    share one; local files pass through."""
    wanted = {i for i, f in enumerate(unit.files) if f.origin is not None} if wanted is None else wanted
    folder = Path(tempfile.gettempdir()) / f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    files = tuple(replace(f, path=folder / f"{i}-{f.path.name}") if i in wanted else f
                  for i, f in enumerate(unit.files))
    with Spool([f for i, f in enumerate(files) if i in wanted]) as spool:
        yield Unit(files), spool


def shape_unit(index: int, unit: Unit, config: LoadConfig) -> tuple[Shaped, pa.Table]:
    """The loader's warehouse-free stages (stages.run_unit_stages) over one unit, then each
    file judged against the reject ratio; returns it and its message ids (message_id, seq:
    the order in which the DuckDB loader meets them). As the DuckDB loader's reader does, a
    unit of small files that cannot be read as one batch is read file by file."""
    con = compute_connection(config.reader_memory_mb)
    hints: dict = {}
    timer = StageTimer()
    try:
        if unit.combined:  # only local files are combined (batch.plan_units)
            try:
                (batch,) = run_unit_stages(unit, config, con, hints, timer)
            except Exception:  # noqa: BLE001 - as pipeline.ReadAhead: its files one by one
                batch = None
            if batch is not None:
                shaped, ids = _judge_unit(index, unit, config, batch, batch.lines_per_file)
                shaped.timer = timer
                return shaped, ids
        batches, errors, digests = [], [], []
        with _spooled(unit) as (local, spool):
            for f in local.files:
                mine: list[Batch] = []
                try:
                    mine.extend(spool.reading(f, run_unit_stages(Unit((f,)), config, con, hints, timer)))
                    errors.append(None)
                except Exception as exc:  # noqa: BLE001 - the file's failure, recorded by the writer
                    errors.append(exc)
                batches.append(mine)
                digests.append(spool.digest(f))
        shaped, ids = _judge_files(index, unit, config, batches, errors)
        shaped.digests, shaped.timer = digests, timer
        return shaped, ids
    finally:
        con.close()


RECEIVED_AT = pa.timestamp("us", tz="UTC")  # the messages' receivedAt (dedup's order), as Arrow


def _judge_unit(index: int, unit: Unit, config: LoadConfig, batch: Batch,
                lines: list[int]) -> tuple[Shaped, pa.Table]:
    rejects: list[list] = [[] for _ in unit.files]
    for r in batch.rejections:
        rejects[r.line >> FILE_SHIFT].append(replace(r, line=r.line & LINE_MASK))
    failed = {i for i, f in enumerate(unit.files)
              if pipeline.reject_ratio_error(f, config, lines[i], rejects[i]) is not None}
    kept = without_files(batch, failed) if failed else batch
    per_file = file_slices({}, kept, len(unit.files))
    steps = [(f.name, _stats_only(per_file[i])) for i, f in enumerate(unit.files) if i not in failed]
    ids = pa.table({"message_id": kept.messages["message_id"], "unit": pa.repeat(pa.scalar(index, pa.int32()), kept.messages.num_rows),
                    "seq": kept.messages["line_no"], "received_at": kept.messages["received_at"]})
    shaped = Shaped(index, unit, True, [batch], [None] * len(unit.files), lines, failed, steps)
    return shaped, ids


def _judge_files(index: int, unit: Unit, config: LoadConfig, batches: list[list[Batch]],
                 errors: list) -> tuple[Shaped, pa.Table]:
    failed, steps, ids, received = set(), [], [], []
    for i, f in enumerate(unit.files):
        rejections = [r for b in batches[i] for r in b.rejections]
        read = sum(b.lines_read for b in batches[i])
        if errors[i] is not None or pipeline.reject_ratio_error(f, config, read, rejections) is not None:
            failed.add(i)
            continue
        steps += [(f.name, _stats_only(b.slices)) for b in batches[i]]
        ids += [combine_chunks(b.messages["message_id"]) for b in batches[i]]
        received += [combine_chunks(b.messages["received_at"]) for b in batches[i]]
    message_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    table = pa.table({"message_id": message_ids, "unit": pa.repeat(pa.scalar(index, pa.int32()), len(message_ids)),
                      "seq": pa.array(np.arange(len(message_ids), dtype=np.int64)),
                      "received_at": pa.concat_arrays(received) if received else pa.array([], RECEIVED_AT)})
    lines = [sum(b.lines_read for b in bs) for bs in batches]
    return Shaped(index, unit, False, batches, errors, lines, failed, steps), table


def write_unit(group, shaped: Shaped, hashes: dict) -> list[pipeline.FileResult]:
    """Write a shaped unit through the loader's own writer (pipeline.write_unit, or
    _write_file per file) into `group`, a commit group over a task-local DuckDB. An object
    file that failed is downloaded again: its lines are kept as rejects."""
    progress = pipeline.Progress(replace(group.config, progress=None), len(shaped.unit.files),
                                  started=time.monotonic())
    if shaped.combined:
        return pipeline.write_unit(group, shaped.unit, shaped.batches[0], shaped.lines, hashes, progress)
    results = []
    again = {i for i in shaped.failed if shaped.unit.files[i].origin is not None}
    with _spooled(shaped.unit, again) as (local, spool):
        for i, (f, batches, error) in enumerate(zip(local.files, shaped.batches, shaped.errors, strict=True)):
            digest = (shaped.digests[i], f.origin.size) if f.origin is not None else hashes[f.path]
            out: queue.Queue = queue.Queue()
            for b in batches:
                out.put(("batch", f, b))
            out.put(("end", f, error))

            def write_file(f=f, digest=digest, out=out) -> Iterator[None]:
                results.append(pipeline.write_file(group, f, digest, out, progress))
                yield None

            list(spool.reading(f, write_file()) if i in again else write_file())
    return results


# ---- the lake: committed loads, schema, reading it back ---------------------------------

def committed(lake: Path) -> dict[int, dict]:
    """Commit records by load id."""
    folder = lake / META / "commits"
    records = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        records[int(p.stem)] = json.loads(p.read_text())
    return records


def table_files(lake: Path, schema: str, table: str, loads: set[int]) -> list[str]:
    """The Parquet files of a table that committed loads wrote (users/accounts: one file)."""
    folder = lake / schema / table
    if not folder.is_dir():
        return []
    files = [str(p) for p in sorted(folder.glob("part*.parquet"))]
    for d in sorted(folder.iterdir()):
        m = _LOAD_DIR.match(d.name)
        if m and int(m.group(1)) in loads:
            files += [str(p) for p in sorted(d.glob("*.parquet"))]
    return files


def _read(files: list[str]) -> str:
    """DuckDB's read_parquet over lake files (their load=<id> folders are not a column)."""
    return f"read_parquet([{', '.join(literal(f) for f in files)}], union_by_name = true, hive_partitioning = false)"


def open_lake(lake: str | Path, con: duckdb.DuckDBPyConnection, schema: str = "segment") -> None:
    """Copy the committed lake into `con` as the DuckDB loader's tables (the event schema
    and `_loader`), e.g. to compare both loaders or query it with DuckDB."""
    lake = Path(lake)
    records = committed(lake)
    loads = set(records)
    writer.ensure_metadata(con, schema)
    tables: Schema = records[max(records)]["schema"] if records else {}
    for table, cols in tables.items():
        target = table_ref(schema, table)
        con.execute(f"CREATE TABLE {target} ({', '.join(f'{ident(c)} {t}' for c, t in cols.items())})")
        files = table_files(lake, schema, table, loads)
        if files:
            con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {_read(files)}")
    for table in (*UNIT_META, "loads"):
        files = table_files(lake, META, table, loads)
        if not files:
            continue
        rows = _read(files)
        if table == "seen_messages":
            dedup._record(con, f"(SELECT {dedup.key_sql('message_id')} AS key, message_id, file_id, load_id FROM {rows})")
        else:
            con.execute(f"INSERT INTO {META}.{table} BY NAME SELECT * FROM {rows}")


def _recover(lake: Path) -> set[int]:
    """Remove what uncommitted loads wrote (their load=<id> folders, the staging area);
    returns the committed load ids."""
    loads = set(committed(lake))
    for top in (p for p in lake.iterdir() if p.is_dir()) if lake.is_dir() else []:
        for table in (p for p in top.iterdir() if p.is_dir()):
            for d in table.iterdir():
                m = _LOAD_DIR.match(d.name)
                if m and int(m.group(1)) not in loads:
                    shutil.rmtree(d)
            for tmp in table.glob("*.tmp"):
                tmp.unlink()
    shutil.rmtree(lake / "_staging", ignore_errors=True)
    return loads


# ---- the job ------------------------------------------------------------------------------

@dataclass
class _UnitPlan:
    """What a write task needs from the driver's plan for its unit."""

    schema_before: Schema  # the tables the unit may touch, as they stood before it
    final: Schema  # every table after the whole load (parts are exported in these types)
    first_file_id: int
    load_id: int
    hashes: dict


@dataclass
class _Written:
    index: int
    files: list
    timer: StageTimer = field(default_factory=StageTimer)


def session(master: str | None = None, app: str = "segment-loader"):
    """A SparkSession for the loader: spark-submit's master when it set one, else `master`
    (default local[2]). In local mode the executors are this interpreter (the loader's
    dependencies are installed here)."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise UsageError("--engine spark needs pyspark: pip install '.[spark]' (and Java 17)") from exc
    builder = SparkSession.builder.appName(app)
    if master or not SparkConf().contains("spark.master"):
        master = master or "local[2]"
        builder = builder.master(master)
    if master and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (builder.config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")  # the CLI's output is the summary
             .config("spark.sql.shuffle.partitions", "4")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def load_spark(paths: list[str], config: LoadConfig, lake: str, spark=None) -> pipeline.LoadResult:
    """Load Segment archives into the Parquet lake at `lake` with Spark (see module doc).
    A dry run (`config.dry_run`) runs every stage but the commit and leaves the lake as it was."""
    started = time.monotonic()
    lake_dir = Path(lake).resolve()
    if not config.dry_run:
        lake_dir.mkdir(parents=True, exist_ok=True)
    files = discover_files(paths, config.since, config.exclude)
    _ = (config.compiled_plan, config.pii_policy)  # a bad one is a usage error, now
    spark = spark or session()
    with _reader(lake_dir) if config.dry_run else _only_writer(lake_dir):
        return _load(files, config, lake_dir, spark, started)


@contextlib.contextmanager
def _only_writer(lake: Path) -> Iterator[None]:
    """One load at a time per lake (as one writer per DuckDB file): a lock file held for the
    run; the kernel releases it when the driver dies, however it dies."""
    (lake / META).mkdir(parents=True, exist_ok=True)
    with open(lake / META / "lock", "w") as fh:
        _lock(fh, lake, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _reader(lake: Path) -> Iterator[None]:
    """A dry run's share of the lock: the lock file is opened to read, never created, so the
    lake is not touched; a load that is running stops the dry run (exit code 3), as a DuckDB
    file being written stops the DuckDB engine's read-only dry run."""
    lock = lake / META / "lock"
    if not lock.is_file():
        yield
        return
    with open(lock) as fh:
        _lock(fh, lake, fcntl.LOCK_SH)
        yield


def _lock(fh, lake: Path, how: int) -> None:
    try:
        fcntl.flock(fh, how | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DatabaseLockedError(f"lake {lake} is in use by another run (a load, or a dry run); run again "
                                  "when it has finished (exit code 3 means: retry later)") from None


def _load(files: list[InputFile], config: LoadConfig, lake_dir: Path, spark, started: float) -> pipeline.LoadResult:
    dry = config.dry_run
    # A dry run removes nothing: what an uncommitted run left is ignored by every reader anyway.
    loads = set(committed(lake_dir)) if dry else _recover(lake_dir)
    load_id = max(loads, default=0) + 1
    result = pipeline.LoadResult(None if dry else load_id, str(lake_dir))
    records = committed(lake_dir)
    base: Schema = copy.deepcopy(records[max(records)]["schema"]) if records else {}
    todo, hashes = _triage(files, config, lake_dir, loads, result)
    history = history_files(lake_dir, loads, _window_start(lake_dir, loads, config))
    if dry:
        # The tasks' scratch (message ids, losers) on the filesystem every executor sees, but
        # outside the lake: beside it (in its nearest existing ancestor when the lake's folder
        # does not exist yet, so that no folder is made), removed at the end.
        beside = next(p for p in lake_dir.parents if p.is_dir())
        staging = Path(tempfile.mkdtemp(prefix=f".{lake_dir.name}-dry-run-", dir=beside))
    else:
        staging = lake_dir / "_staging" / str(load_id)
        staging.mkdir(parents=True)
    try:
        final = _job(todo, hashes, config, lake_dir, loads, load_id, base, history, staging, spark, result)
        if dry:  # counted as the load would count them, by the same writer; nothing committed
            for f in result.files:
                f.status = "planned" if f.status == "loaded" else f.status
        else:
            with result.timer.stage("spark_commit"):
                _commit(lake_dir, staging, load_id, loads, base, final, config, result, started)
    finally:
        if dry:
            shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _job(todo: list[InputFile], hashes: dict, config: LoadConfig, lake_dir: Path, loads: set[int], load_id: int,
         base: Schema, history: list[str], staging: Path, spark, result: pipeline.LoadResult) -> Schema:
    """Shape, plan, dedup and write (steps 1-4 of the module doc) into `staging`; adds the
    files' results to `result` and returns the load's final schema. A dry run's write tasks
    write into their in-memory DuckDB only (no export)."""
    sizes = {f.path: hashes[f.path][1] for f in todo if f.origin is None}  # objects: a unit each
    units = plan_units(todo, sizes, config.batch_bytes)
    from pyspark import StorageLevel

    sc = spark.sparkContext
    # The window is applied here, by the driver's choice of history (the losers); a task's
    # DuckDB holds the losers as history of no load, which its own window would leave out.
    job_config = replace(config, progress=None, dedup_window_days=None)
    ids_dir = str(staging / "ids")

    def shape(item):
        os.environ.pop(CRASH_ENV, None)  # crash points are the driver's (a task would be retried)
        index, unit = item
        shaped, ids = shape_unit(index, unit, job_config)
        os.makedirs(ids_dir, exist_ok=True)
        pq.write_table(ids, os.path.join(ids_dir, f"part-{index:06}.parquet"))
        return shaped.light(), pack(shaped)

    with result.timer.stage("spark_shape"):
        # Kept for the write stage (recomputed by Spark if an executor is lost)
        shaped_rdd = (sc.parallelize(list(enumerate(units)), max(1, len(units))).map(shape)
                      .persist(StorageLevel.MEMORY_AND_DISK))
        plans = sorted(shaped_rdd.keys().collect(), key=lambda s: s.index)
    for shaped in plans:
        result.timer.merge(shaped.timer)
    with result.timer.stage("spark_plan"):
        unit_plans, final, changes = _plan(plans, base, load_id, _next_file_id(lake_dir, loads), hashes)
    result.schema_changes = changes
    with result.timer.stage("spark_dedup"):
        losers_dir = staging / "losers"
        if units:
            _losers(spark, ids_dir, history, str(losers_dir))
    schema_name = config.schema
    export = not config.dry_run
    plans_by_unit = sc.broadcast(unit_plans)  # sent once per executor, not with every task

    def write(packed: bytes) -> _Written:
        os.environ.pop(CRASH_ENV, None)
        shaped: Shaped = pickle.loads(packed)
        return _write_task(shaped, plans_by_unit.value[shaped.index], job_config, staging, losers_dir, schema_name,
                           export=export)

    with result.timer.stage("spark_write"):
        written = sorted(shaped_rdd.values().map(write).collect(), key=lambda w: w.index) if units else []
    shaped_rdd.unpersist()
    plans_by_unit.destroy()
    for w in written:
        result.files += w.files
        result.timer.merge(w.timer)
    return final


def _triage(files: list[InputFile], config: LoadConfig, lake: Path, loads: set[int],
            result: pipeline.LoadResult) -> tuple[list[InputFile], dict]:
    """The files to load, as the DuckDB loader chooses them: skip what the committed manifest
    holds (same content; an object: same ETag or generation, known by its listing), and
    files that failed before unchanged unless --retry-failed. Returns them and
    {path: (content hash, size)} (an object's hash is taken as it downloads)."""
    con = _metadata(lake, loads, config.schema, ("files", "loads"))
    try:
        done, done_objects = state.loaded_hashes(con), state.loaded_objects(con)
        failed_hashes, failed_objects = ({}, {}) if config.retry_failed or config.force else \
            state.failed_before(con, pipeline.judging_settings(config))
    finally:
        con.close()
    todo, hashes = [], {}
    for f in files:
        if f.origin is not None:
            hashes[f.path] = ("", f.origin.size)
            key, done_by, failed = (f.name, f.origin.version), done_objects, failed_objects
            why = "already loaded (same ETag or generation)"
        else:
            try:
                hashes[f.path] = state.content_hash(f.path)
            except OSError as exc:
                result.files.append(pipeline.FileResult(f.name, "failed", reason=pipeline.describe_failure(f, exc)))
                continue
            key, done_by, failed = hashes[f.path][0], done, failed_hashes
            why = f"already loaded (same content as {done.get(key)})"
        if key in done_by and not config.force:
            result.files.append(pipeline.FileResult(f.name, "skipped", reason=why))
        elif key in failed:
            result.files.append(pipeline.FileResult(
                f.name, "skipped", reason=f"{pipeline.SKIPPED_FAILED}: {failed[key]} (--retry-failed reads it again)"))
        else:
            todo.append(f)
    return todo, hashes


def _metadata(lake: Path, loads: set[int], schema: str, tables: tuple[str, ...]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the loader's metadata, `tables` of it filled from the
    committed lake, for the loader's own functions over them (loader/state.py, dedup.py)."""
    con = duckdb.connect()
    writer.ensure_metadata(con, schema)
    for table in tables:
        parts = table_files(lake, META, table, loads)
        if parts:
            con.execute(f"INSERT INTO {META}.{table} BY NAME SELECT * FROM {_read(parts)}")
    return con


def _window_start(lake: Path, loads: set[int], config: LoadConfig) -> int | None:
    """The first load of the dedup window (None: no window), as the DuckDB loader finds it
    (dedup.window_start: the first load started in the last DAYS days) over the lake's
    `_loader/loads`."""
    if config.dedup_window_days is None:
        return None
    con = _metadata(lake, loads, config.schema, ("loads",))
    try:
        return dedup.window_start(con, config.dedup_window_days)
    finally:
        con.close()


def history_files(lake: Path, loads: set[int], since: int | None = None) -> list[str]:
    """The `_loader/seen_messages` files dedup reads: every committed load's, or with a
    window only those of loads `since` onwards. History is laid out by load
    (`load=<id>/` folders), so a window's probe never lists or opens older loads' files."""
    return table_files(lake, META, "seen_messages", {i for i in loads if since is None or i >= since})


def _next_file_id(lake: Path, loads: set[int]) -> int:
    manifest = table_files(lake, META, "files", loads)
    if not manifest:
        return 1
    return duckdb.execute(f"SELECT coalesce(max(file_id), 0) + 1 FROM {_read(manifest)}").fetchone()[0]


class _Steps:
    """A planning step in the shape pipeline.plan_schema reads (its slices)."""

    def __init__(self, slices: list[TableSlice]) -> None:
        self.slices = slices


def _plan(plans: list[Shaped], base: Schema, load_id: int, first_file_id: int,
          hashes: dict) -> tuple[list[_UnitPlan], Schema, list[dict]]:
    """The schema before each unit and after the last, planned in file order (driver)."""
    schema = copy.deepcopy(base)
    unit_plans, changes = [], []
    next_id = first_file_id
    for shaped in plans:
        # the tables the unit's writer can touch: its slices' and the state tables with their sources
        touched = {s.table for _, slices in shaped.steps for s in slices}
        touched |= {t for state_table, (source, _k, _l) in STATE_TABLES.items() for t in (state_table, source)}
        before = {t: dict(cols) for t, cols in schema.items() if t in touched}
        for path, slices in shaped.steps:
            changes += [asdict(c) | {"path": path} for c in plan_schema(schema, _Steps(slices))]
        mine = {f.path: hashes[f.path] for f in shaped.unit.files}
        unit_plans.append(_UnitPlan(before, {}, next_id, load_id, mine))
        next_id += FILE_IDS_PER_UNIT * len(shaped.unit.files)
    for p in unit_plans:
        p.final = schema
    return unit_plans, schema, changes


def _losers(spark, ids_dir: str, history: list[str], out: str) -> None:
    """Per unit, the message ids it must not load: the copy with the earliest receivedAt
    wins (none: last; ties: file order), as in the DuckDB loader (loader/dedup.py), unless a
    committed load holds it (the distributed anti-join against history)."""
    from pyspark.sql import functions as F

    ids = spark.read.parquet(ids_dir)
    first = (ids.groupBy("message_id")
             .agg(F.min(F.struct(F.col("received_at").isNull(), "received_at", "unit", "seq")).alias("w"))
             .select("message_id", F.col("w.unit").alias("unit")))
    if history:
        first = first.join(spark.read.parquet(*history).select("message_id"), "message_id", "left_anti")
    losers = ids.select("message_id", "unit").distinct().join(first, ["message_id", "unit"], "left_anti")
    losers.write.partitionBy("unit").mode("overwrite").parquet(out)


def _write_task(shaped: Shaped, plan: _UnitPlan, config: LoadConfig, staging: Path, losers_dir: Path,
                schema_name: str, *, export: bool = True) -> _Written:
    """Executor: write one unit into a task-local DuckDB, export its tables to staging
    (unless not `export`: a dry run counts what the writer would do and keeps nothing)."""
    con = writer.connect(":memory:", memory_limit_mb=config.warehouse_memory_mb)
    try:
        writer.ensure_metadata(con, schema_name)
        for table, cols in plan.schema_before.items():
            con.execute(f"CREATE TABLE {table_ref(schema_name, table)} "
                        f"({', '.join(f'{ident(c)} {t}' for c, t in cols.items())})")
        con.execute(f"DROP SEQUENCE {META}.file_ids")
        con.execute(f"CREATE SEQUENCE {META}.file_ids START {int(plan.first_file_id)}")
        mine = losers_dir / f"unit={shaped.index}"
        if mine.is_dir():
            rows = f"read_parquet({literal(str(mine / '*.parquet'))})"
            dedup._record(con, f"(SELECT {dedup.key_sql('message_id')} AS key, message_id, -1 AS file_id, "
                               f"-1 AS load_id FROM {rows})")
        result = pipeline.LoadResult(plan.load_id, "")
        group = pipeline.CommitGroup(con, config, plan.load_id, result, writer.read_schema(con, schema_name))
        files = write_unit(group, shaped, plan.hashes)
        group.commit()
        if export:
            _export(con, schema_name, plan.final, plan.load_id, staging, shaped.index)
        return _Written(shaped.index, files, result.timer)
    finally:
        con.close()


def _export(con: duckdb.DuckDBPyConnection, schema_name: str, final: Schema, load_id: int, staging: Path,
            index: int) -> None:
    """Each table the unit wrote, cast to the load's final types, as staging Parquet."""
    local = writer.read_schema(con, schema_name)
    for table, cols in local.items():
        if table in STATE_TABLES:  # recomputed from the whole lake at commit
            continue
        if not con.execute(f"SELECT count(*) FROM {table_ref(schema_name, table)}").fetchone()[0]:
            continue
        select = ", ".join(
            f"CAST({ident(c) if c in cols else 'NULL'} AS {t}) AS {ident(c)}" for c, t in final[table].items())
        _copy(con, f"SELECT {select} FROM {table_ref(schema_name, table)}",
              staging / schema_name / table / f"part-{index:06}.parquet")
    for table in UNIT_META:
        where = f" WHERE load_id = {int(load_id)}" if table == "seen_messages" else ""
        source = f"SELECT * FROM {META}.{table}{where}"
        if con.execute(f"SELECT count(*) FROM ({source})").fetchone()[0]:
            _copy(con, source, staging / META / table / f"part-{index:06}.parquet")


def _copy(con: duckdb.DuckDBPyConnection, select: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({select}) TO {literal(str(path))} (FORMAT parquet)")


def _commit(lake: Path, staging: Path, load_id: int, loads: set[int], base: Schema, final: Schema,
            config: LoadConfig, result: pipeline.LoadResult, started: float) -> None:
    """Driver: users/accounts, name_map, widened old parts and the loads row into staging,
    then publish by renames, then the commit record (last, atomic)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        replacements = _state_tables(con, lake, staging, loads, final, config.schema)
        replacements += _widen_old_parts(con, lake, staging, loads, base, final, config.schema)
        _name_map(con, lake, staging, loads)
        writer.ensure_metadata(con, config.schema)
        con.execute(f"INSERT INTO {META}.loads (load_id, started_at, status, loader_version, arguments) "
                    "VALUES (?, now() - to_microseconds(?::BIGINT), 'running', ?, ?)",
                    [load_id, int((time.monotonic() - started) * 1e6), __version__,
                     json.dumps({"paths": [f.path for f in result.files], "engine": "spark",
                                 "force": config.force, "judging": pipeline.judging_settings(config)}, sort_keys=True)])
        result.seconds = time.monotonic() - started
        state.finish_load(con, load_id, "failed" if result.failed else "succeeded", result.summary())
        _copy(con, f"SELECT * FROM {META}.loads", staging / META / "loads" / "part.parquet")
    finally:
        con.close()
    crash_point("spark_before_publish")
    moved = 0
    for top in (config.schema, META):
        for table in sorted(p for p in (staging / top).iterdir() if p.is_dir()) if (staging / top).is_dir() else []:
            target = lake / top / table.name / f"load={load_id}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(table, target)
            moved += 1
            if moved == 1:
                crash_point("spark_mid_publish")
    for tmp, target in replacements:
        os.replace(tmp, target)
    crash_point("spark_before_commit")
    record = {"load_id": load_id, "committed_at": dt.datetime.now(dt.UTC).isoformat(), "schema": final}
    commits = lake / META / "commits"
    commits.mkdir(parents=True, exist_ok=True)
    tmp = commits / f"{load_id}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, commits / f"{load_id}.json")
    crash_point("spark_after_commit")
    shutil.rmtree(lake / "_staging", ignore_errors=True)


def _all_rows(lake: Path, staging: Path, top: str, table: str, loads: set[int]) -> list[str]:
    staged = staging / top / table
    return table_files(lake, top, table, loads) + ([str(p) for p in sorted(staged.glob("*.parquet"))]
                                                    if staged.is_dir() else [])


def _state_tables(con, lake: Path, staging: Path, loads: set[int], final: Schema,
                  schema_name: str) -> list[tuple[Path, Path]]:
    """users/accounts from every identify/group of the lake, with the writer's own rule; each
    is one file, replaced atomically at publish."""
    out = []
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema_name)}")
    for state_table, (source, key, _left_out) in STATE_TABLES.items():
        if state_table not in final or source not in final:
            continue
        files = _all_rows(lake, staging, schema_name, source, loads)
        cols = final[source]
        con.execute(f"CREATE OR REPLACE TABLE {table_ref(schema_name, source)} "
                    f"({', '.join(f'{ident(c)} {t}' for c, t in cols.items())})")
        if files:
            con.execute(f"INSERT INTO {table_ref(schema_name, source)} BY NAME SELECT * FROM "
                        f"{_read(files)}")
        con.execute(f"CREATE OR REPLACE TABLE {table_ref(schema_name, state_table)} "
                    f"({', '.join(f'{ident(c)} {t}' for c, t in final[state_table].items())})")
        con.execute("CREATE OR REPLACE TEMP TABLE touched (state VARCHAR, k VARCHAR)")
        con.execute(f"INSERT INTO touched SELECT DISTINCT {literal(state_table)}, {ident(key)} "
                    f"FROM {table_ref(schema_name, source)} WHERE {ident(key)} IS NOT NULL")
        writer.refresh_state_tables(con, schema_name, {state_table: final[state_table], source: cols},
                                    touched="touched")
        target = lake / schema_name / state_table / "part.parquet"
        tmp = staging / "replace" / schema_name / state_table / "part.parquet"
        _copy(con, f"SELECT * FROM {table_ref(schema_name, state_table)}", tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        out.append((tmp, target))
    return out


def _widen_old_parts(con, lake: Path, staging: Path, loads: set[int], base: Schema, final: Schema,
                     schema_name: str) -> list[tuple[Path, Path]]:
    """Committed parts of a table whose column this load widened (BIGINT to DOUBLE), rewritten
    with the new type (as DuckDB's ALTER COLUMN TYPE rewrites the column)."""
    out = []
    for table, cols in base.items():
        if table in STATE_TABLES:
            continue
        widened = {c for c, t in cols.items() if final[table].get(c) != t}
        if not widened:
            continue
        for i, part in enumerate(table_files(lake, schema_name, table, loads)):
            have = pq.read_schema(part).names
            select = ", ".join(f"CAST({ident(c)} AS {final[table][c]}) AS {ident(c)}" if c in widened else ident(c)
                               for c in have)
            tmp = staging / "replace" / schema_name / table / f"{i:06}.parquet"
            _copy(con, f"SELECT {select} FROM {_read([part])}", tmp)
            out.append((tmp, Path(part)))
    return out


def _name_map(con, lake: Path, staging: Path, loads: set[int]) -> None:
    """Units record their name mappings independently: keep the first of each, once (as
    state.record_names does), replacing the staged parts by one."""
    staged = staging / META / "name_map"
    if not staged.is_dir():
        return
    old = table_files(lake, META, "name_map", loads)
    new = _read([str(p) for p in sorted(staged.glob("*.parquet"))])
    keys = "kind, table_name, original, name"
    sql = f"SELECT {keys}, min(load_id) AS load_id FROM {new} GROUP BY ALL"
    if old:
        sql = (f"SELECT n.* FROM ({sql}) n ANTI JOIN {_read(old)} m "
               "ON m.kind = n.kind AND m.table_name = n.table_name AND m.original = n.original AND m.name = n.name")
    con.execute(f"CREATE OR REPLACE TEMP TABLE merged_names AS {sql}")
    shutil.rmtree(staged)
    if con.execute("SELECT count(*) FROM merged_names").fetchone()[0]:
        _copy(con, "SELECT * FROM merged_names", staged / "part.parquet")
