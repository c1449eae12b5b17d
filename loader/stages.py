"""The load as one ordered tuple of stages, each a function `Batch -> Batch`.

    source (files, or replay's rejects) -> scrub -> validate -> route -> shape -> tracking_plan
        -> plan_schema -> cast -> dedup -> write (a Sink: the warehouse, or nothing for a dry run)

`STAGES` is that tuple; load (`pipeline.py`), replay (`replay.py`) and the dry run all run it
through `run`. A `Batch` carries everything a stage needs and produces as named, typed fields;
no stage reads what another left in a database by name. The open commit group's state (the
ids it holds, the users / accounts its identifies / groups touch) is a `writer.OpenGroup`
that the sink is given: made by `writer.begin`, passed to every function that reads or writes
it, ended by its COMMIT or ROLLBACK. Its temp tables are named after the group and dropped
with it.

The first five stages (`UNIT_STAGES`) need no warehouse: `run_unit_stages` runs them over one
unit of input files (a file, or several small ones read as one batch), on a compute
connection of its own, so they can run anywhere (reader threads here, Spark tasks elsewhere).
The last four (`WAREHOUSE_STAGES`) plan the schema, cast, dedup and write against a `Sink`.
Load's reader threads, commit groups and spool wrap the tuple; they do not re-state it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from loader import envelope, normalize, protocols
from loader.batch import Unit, encode_line, encode_lines
from loader.cast import cast_slice
from loader.dedup import line_mask
from loader.http_batch import expand_batches
from loader.normalize import NameMapping, TableSlice, compute_connection, parquet_to_lines
from loader.pii import scrub as scrub_pii
from loader.read import InputFile, Rejection, iter_ndjson_batches, iter_parquet_batches
from loader.schema import Schema, SchemaChange, plan_schema_by_file
from loader.timing import StageTimer, maybe

if TYPE_CHECKING:
    from loader.config import LoadConfig
    from loader.writer import BatchCounts


@dataclass
class CastRows:
    """One slice cast to its table's column types (`cast`), and which rows stay (`dedup`)."""

    slice: TableSlice
    table: pa.Table  # the slice's columns that have a warehouse type, cast to it
    discards: list[pa.Table]  # values no column could take (line numbers as in the batch)
    keep: pa.Array | None = None  # dedup: rows new to the open group (None: every row)


@dataclass
class Batch:
    """One batch of lines on its way through STAGES. Each stage fills its fields; fields no
    later stage needs are released (set to None) to bound memory while batches queue.

    Line numbers carry the file's index in its unit (loader/batch.py): one int64 column
    serves a batch of one file and a batch of many small files alike."""

    # source
    lines: pa.Table | None  # line_no, raw (after `scrub`: PII removed); released after tracking_plan
    rejections: list[Rejection]  # every rejected line so far, in line order, with its raw bytes
    lines_read: int  # lines the batch stands for, rejected ones included
    source_id: str | None = None  # fallback for messages without projectId
    unit: Unit | None = None  # the files the lines came from (None: replay's rejected lines)
    lines_per_file: list[int] = field(default_factory=list)  # per file of `unit`, when read as one batch
    # validate: every line's envelope fields as named columns (JSON text) and its `reason`
    checked: pa.Table | None = None
    # route: the valid messages that won the in-batch dedup, with table and payload (line order)
    routed: pa.Table | None = None
    valid: int = 0  # lines that became messages (before the in-batch dedup)
    duplicates_in_batch: int = 0
    name_map: list[NameMapping] = field(default_factory=list)
    # shape: standard columns (grouped by table), one slice per table, and the winners' ids
    envelope: pa.Table | None = None
    slices: list[TableSlice] = field(default_factory=list)
    messages: pa.Table | None = None  # line_no, message_id, received_at (the dedup's order)
    paths: dict[str, str] = field(default_factory=dict)  # root (context, payload) -> SINGLE, FAST or CAREFUL
    # tracking_plan: every violation (VIOLATION_SCHEMA); blocked events moved to `rejections`
    violations: pa.Table | None = None
    # plan_schema, cast, dedup, write
    changes: list[SchemaChange] = field(default_factory=list)
    rows: list[CastRows] = field(default_factory=list)
    fresh: pa.Table | None = None  # messages new to the open group (line_no, message_id, ...)
    counts: list[BatchCounts] = field(default_factory=list)  # per file
    stages: list[str] = field(default_factory=list)  # names of the stages run, in order
    seconds: dict[str, float] = field(default_factory=dict)  # per stage name, for this batch

    @property
    def files(self) -> int:
        """How many files the batch's lines come from (a unit's files)."""
        return len(self.unit.files) if self.unit is not None else 1


class Sink(Protocol):
    """Where the warehouse stages send a batch: the warehouse, or nothing (dry run)."""

    schema: Schema  # the warehouse's tables and column types, as planned so far

    def fresh(self, batch: Batch) -> pa.Table:
        """The batch's messages (line_no, message_id, ...) that no earlier batch of the open
        group holds (history is probed once, when the group commits)."""
        ...

    def write(self, batch: Batch) -> list[BatchCounts]:
        """Persist the batch (DDL, rows, rejects, discards, violations, names); return the
        counts (writer.BatchCounts) of each of its files."""
        ...


@dataclass
class Context:
    """What the stages share that is not the batch: settings, a compute connection (never
    the warehouse), shape hints kept between batches, the stage timer, and the sink."""

    config: LoadConfig
    con: duckdb.DuckDBPyConnection
    hints: dict = field(default_factory=dict)
    timer: StageTimer | None = None
    sink: Sink | None = None


# --- the stages -----------------------------------------------------------------------------


def scrub(batch: Batch, ctx: Context) -> Batch:
    """PII leaves the lines (and the raw bytes of rejects) before any other stage sees them."""
    lines, rejections = scrub_pii(ctx.con, ctx.config.pii_policy, batch.lines, batch.rejections)
    return replace(batch, lines=lines, rejections=rejections)


def validate(batch: Batch, ctx: Context) -> Batch:
    """One parse per line: a message, or a reject with its reason (loader/envelope.py)."""
    checked, rejections = envelope.validate(ctx.con, batch.lines)
    merged = sorted(batch.rejections + rejections, key=lambda r: r.line) if batch.rejections else rejections
    return replace(batch, checked=checked, rejections=merged)


def route(batch: Batch, ctx: Context) -> Batch:
    """Each message's table; in-batch copies of a messageId left out (earliest receivedAt)."""
    routed = envelope.route(ctx.con, batch.checked)
    return replace(batch, checked=None, routed=routed.messages, valid=routed.valid,
                   duplicates_in_batch=routed.duplicates, name_map=batch.name_map + routed.name_map)


def shape(batch: Batch, ctx: Context) -> Batch:
    """Standard columns, flattened fields and their type statistics, one slice per table."""
    standard = envelope.standard_columns(ctx.con, batch.routed, batch.source_id or ctx.config.source_id)
    name_map = list(batch.name_map)
    paths: dict[str, str] = {}
    env, slices = normalize.shape(ctx.con, batch.routed, standard, name_map, ctx.hints, paths)
    messages = pa.table({"line_no": env["line_no"], "message_id": env["message_id"],
                         "received_at": env["received_at#ts"]})
    return replace(batch, routed=None, envelope=env, slices=slices, messages=messages, name_map=name_map,
                   paths=paths)


def tracking_plan(batch: Batch, ctx: Context) -> Batch:
    """With a plan: record violations; events it blocks leave the batch as rejects."""
    plan = ctx.config.compiled_plan
    checked = batch if plan is None else protocols.check_batch(ctx.con, plan, batch)
    return replace(checked, lines=None)  # raw text is no longer needed: rejects hold theirs


def plan_schema(batch: Batch, ctx: Context) -> Batch:
    """Schema changes the batch needs (as loading its files one by one would make them),
    applied to the sink's in-memory schema; the sink's `write` runs the DDL."""
    return replace(batch, changes=plan_schema_by_file(ctx.sink.schema, batch, batch.files))


def cast(batch: Batch, ctx: Context) -> Batch:
    """Every slice's values cast to its columns' types; values that do not fit are discards."""
    schema = ctx.sink.schema
    rows = []
    for slice_ in batch.slices:
        table, discards = cast_slice(schema, slice_)
        rows.append(CastRows(slice_, table, discards))
    return replace(batch, rows=rows)


def dedup(batch: Batch, ctx: Context) -> Batch:
    """Only messages new to the open commit group stay (the group's probe of history, at its
    commit, finds those loaded by earlier runs); their discards and violations stay with them,
    and blocked events' violations stay too (they are rejects, not loaded copies)."""
    fresh = ctx.sink.fresh(batch)
    fresh_lines = fresh["line_no"]
    if len(fresh_lines) == len(batch.messages):
        return replace(batch, fresh=fresh)  # the usual case: nothing was seen in the group
    is_fresh = line_mask(batch.messages["line_no"], fresh_lines)
    fresh_set = normalize.combine_chunks(fresh_lines) if len(fresh_lines) else pa.array([], pa.int64())
    rows = []
    for r in batch.rows:
        keep = is_fresh(r.slice.line)
        keep = None if pc.all(keep).as_py() else keep
        discards = [d.filter(pc.is_in(d["line"], value_set=fresh_set)) for d in r.discards]
        rows.append(replace(r, keep=keep, discards=[d for d in discards if d.num_rows]))
    violations = batch.violations
    if violations is not None and violations.num_rows:
        violations = violations.filter(pc.or_(pc.equal(violations["action"], "block"),
                                              pc.is_in(violations["line"], value_set=fresh_set)))
    return replace(batch, rows=rows, fresh=fresh, violations=violations)


def write(batch: Batch, ctx: Context) -> Batch:
    """Persist through the sink; the counts of each file come back."""
    return replace(batch, counts=ctx.sink.write(batch))


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Batch, Context], Batch]
    timer: str  # the timing.STAGES figure its seconds count in (stage_seconds)


STAGES: tuple[Stage, ...] = (
    Stage("scrub", scrub, "read"),
    Stage("validate", validate, "parse"),
    Stage("route", route, "shape"),
    Stage("shape", shape, "shape"),
    Stage("tracking_plan", tracking_plan, "shape"),
    Stage("plan_schema", plan_schema, "write"),
    Stage("cast", cast, "write"),
    Stage("dedup", dedup, "dedup"),
    Stage("write", write, "write"),
)
UNIT_STAGES = STAGES[:5]  # no warehouse: run per unit of files, anywhere
WAREHOUSE_STAGES = STAGES[5:]  # against a Sink


def run(batch: Batch, stages: tuple[Stage, ...], ctx: Context) -> Batch:
    """The one driver: each stage in order, its name recorded in `batch.stages` and its
    seconds in `batch.seconds` and in the load's timer (under `stage.timer`)."""
    for stage in stages:
        started = time.perf_counter()
        with maybe(ctx.timer, stage.timer):
            batch = stage.run(batch, ctx)
        batch.stages.append(stage.name)
        batch.seconds[stage.name] = batch.seconds.get(stage.name, 0.0) + time.perf_counter() - started
    return batch


# --- sources and the per-unit part -----------------------------------------------------------


def file_stretches(file: InputFile, config: LoadConfig, con: duckdb.DuckDBPyConnection) -> Iterator[Batch]:
    """A file as source batches (lines not yet scrubbed), a stretch of about
    `config.batch_bytes` at a time; batch envelopes (loader/http_batch.py) are expanded."""
    if file.format == "parquet":
        first = 1
        for record_batch in iter_parquet_batches(file.path, batch_rows=100_000):
            lines = parquet_to_lines(con, record_batch, first)
            first += record_batch.num_rows
            yield Batch(lines, [], record_batch.num_rows, file.source_id)
        return
    for raw in iter_ndjson_batches(file.path, batch_bytes=config.batch_bytes, max_line_bytes=config.max_event_bytes):
        lines, rejections, added = expand_batches(raw.lines, max_event_bytes=config.max_event_bytes)
        rejections = sorted(raw.rejections + rejections, key=lambda r: r.line)
        yield Batch(lines, rejections, raw.lines_read + added, file.source_id)


def file_batches(file: InputFile, ctx: Context) -> Iterator[Batch]:
    """One file's batches through UNIT_STAGES (the file is its own unit)."""
    stretches = file_stretches(file, ctx.config, ctx.con)
    for batch in (stretches if ctx.timer is None else ctx.timer.timed("read", stretches)):
        yield run(replace(batch, unit=Unit((file,))), UNIT_STAGES, ctx)


def unit_batch(unit: Unit, ctx: Context) -> Batch:
    """Several small files as ONE batch through UNIT_STAGES: each file's line numbers carry
    its index in the unit; `lines_per_file` keeps each file's count."""
    tables, rejections, per_file = [], [], []
    for i, file in enumerate(unit.files):
        n = 0
        stretches = file_stretches(file, ctx.config, ctx.con)
        for part in (stretches if ctx.timer is None else ctx.timer.timed("read", stretches)):
            column = part.lines.schema.get_field_index("line_no")
            tables.append(part.lines.set_column(column, "line_no", encode_lines(part.lines["line_no"], i)))
            rejections += [replace(r, line=encode_line(r.line, i)) for r in part.rejections]
            n += part.lines_read
        per_file.append(n)
    batch = Batch(pa.concat_tables(tables), rejections, sum(per_file), unit.files[0].source_id, unit, per_file)
    return run(batch, UNIT_STAGES, ctx)


def run_unit_stages(unit: Unit, config: LoadConfig, con: duckdb.DuckDBPyConnection | None = None,
                    hints: dict | None = None, timer: StageTimer | None = None) -> Iterator[Batch]:
    """UNIT_STAGES over one unit of input files, with no warehouse: the part of a load that
    can run anywhere (a reader thread, a Spark task). Yields the unit's batches, shaped and
    checked against the tracking plan, ready for WAREHOUSE_STAGES: one batch for a unit of
    several small files (`batch.lines_per_file` per file), a file's stretches of about
    `config.batch_bytes` otherwise. `con`: a compute connection (one of its own when None);
    `hints`: shape hints to keep between calls (a stable shape is then cheaper to find).

    Each batch holds `slices` (one per warehouse table: its standard columns and flattened
    fields as text + JSON kind, with type statistics), `messages` (line_no, message_id of
    the in-batch winners), `rejections`, `violations`, `name_map` and counts; schema planning
    (`plan_schema`) and everything after it need the warehouse's schema and are separate."""
    own = con is None
    ctx = Context(config, con if con is not None else compute_connection(config.reader_memory_mb),
                  hints if hints is not None else {}, timer)
    try:
        if unit.combined:
            yield unit_batch(unit, ctx)
        else:
            yield from file_batches(unit.files[0], ctx)
    finally:
        if own:
            ctx.con.close()


def lines_batch(lines: pa.Table, source_id: str | None) -> Batch:
    """A source batch of lines (line_no, raw) already in hand (replay's rejected lines)."""
    return Batch(lines, [], lines.num_rows, source_id)
