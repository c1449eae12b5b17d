"""Shaping: turn routed messages (loader/envelope.py) into Segment-shaped rows per table.

All per-row work runs in DuckDB (an in-memory connection of its own, never the warehouse):
key discovery, `_` flattening and extraction. Python only sees distinct names and paths.
Values leave this stage as JSON text, with per-column statistics of the JSON types seen, so
the schema stage can type new columns from every value of the batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loader.naming import column_name
from loader.spec import (
    ALL_STANDARD,
    COMMON_COLUMNS,
    EXTRA_COLUMNS,
    ISO_TIMESTAMP_RE,
    PAYLOAD_ROOT,
    RESERVED_FOR,
    TIMESTAMP_COLUMNS,
    TRACKS_TABLE,
    TRAITS_ROOT,
    Kind,
)

MAX_DEPTH = 8  # objects nested deeper than this are kept whole, as JSON
MAX_STRUCT_LEAVES = 500  # wider roots are extracted as a list (see _flatten)
MAX_KNOWN_PATHS = 20_000  # shape hints kept between batches (see _flatten)
# After a failed single-parse proof, a root skips the single path for this many of the reader's
# batches, unless the fast path found new keys meanwhile: a source whose objects often hold
# nulls would otherwise pay the extraction twice (the proof's, then the fast path's) per batch.
SINGLE_BACKOFF_BATCHES = 4

# A leaf's column name depends only on its path and table kind: named once, not every batch.
_column_name = functools.lru_cache(maxsize=1 << 16)(column_name)


@dataclass
class ColumnStats:
    """What arrived for one column in one batch: JSON type -> count, where strings that are
    all ISO-8601 timestamps count as TIMESTAMP and integers beyond 64 bits as HUGEINT."""

    types: dict[str, int] = field(default_factory=dict)
    sources: tuple[str, ...] = ()  # JSON pointers the column was flattened from


@dataclass
class Values:
    """One column of a slice: each value as text (JSON strings unquoted, arrays and objects
    as JSON text) and its JSON type (BIGINT, UBIGINT, DOUBLE, VARCHAR, BOOLEAN, ARRAY...)."""

    text: pa.Array
    kind: pa.Array
    typed: pa.Array | None = None  # already cast (the standard timestamps, parsed by DuckDB)


@dataclass
class TableSlice:
    table: str
    call: str  # track (an event table), tracks, identify, page, screen, group, alias
    line: pa.Array  # line numbers in the file
    message_id: pa.Array
    values: dict[str, Values]  # standard columns first, then flattened fields
    columns: dict[str, ColumnStats]  # statistics of the flattened fields
    unnamed: dict[str, Values] = field(default_factory=dict)  # keys with no letter or digit

    @property
    def num_rows(self) -> int:
        return len(self.line)


@dataclass
class NameMapping:
    kind: str  # "table" or "column"
    table: str
    original: str
    name: str


@functools.lru_cache(maxsize=1 << 16)  # the same few hundred paths come back every batch
def pointer(path: tuple[str, ...]) -> str:
    """JSON pointer for a key path: unambiguous for keys holding '.', '"', '/' or '~'."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in path)


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


def compute_connection(memory_limit_mb: int = 512) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for shaping batches (a batch is a few tens of MB; it spills past
    the limit rather than grow)."""
    con = duckdb.connect(config={"memory_limit": f"{memory_limit_mb}MB"})
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    return con


def parquet_to_lines(con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch, first_line: int) -> pa.Table:
    """Render Parquet rows as the JSON text of Segment messages. Columns that hold JSON as
    strings (`properties`, `context`...) are embedded as objects, not as quoted strings."""
    con.register("parquet_batch", batch)
    parts = []
    for name, typ in zip(batch.schema.names, batch.schema.types):
        quoted = '"' + name.replace('"', '""') + '"'
        key = "'" + name.replace("'", "''") + "'"
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            value = (
                f"CASE WHEN json_valid({quoted}) AND left(ltrim({quoted}), 1) IN ('{{', '[') "
                f"THEN json({quoted}) ELSE to_json({quoted}) END"
            )
        else:
            value = f"to_json({quoted})"
        parts.append(f"{key}, {value}")
    body = ", ".join(parts) if parts else "'_', NULL"
    table = con.sql(
        f"SELECT {first_line} - 1 + row_number() OVER () AS line_no, "
        f"json_object({body})::VARCHAR AS raw FROM parquet_batch"
    ).to_arrow_table()
    con.unregister("parquet_batch")
    return table.read_all() if hasattr(table, "read_all") else table


# The name `_flatten` reads the routed messages under (registered by `shape` for its duration).
MESSAGES_VIEW = "msgs"


def shape(
    con: duckdb.DuckDBPyConnection,
    messages: pa.Table,
    envelope: pa.Table,
    name_map: list[NameMapping],
    shape_hints: dict | None = None,
    paths: dict[str, str] | None = None,
) -> tuple[pa.Table, list[TableSlice]]:
    """Shape routed messages (loader/envelope.py `route`, line order) into one slice per
    table. `envelope` holds their standard columns (`standard_columns`, same order); it is
    returned grouped by table (in line order within), so each table's standard columns are a
    zero-copy slice of it. Column name mappings are added to `name_map`. `shape_hints`, kept
    by the caller between batches, makes a stable shape cheap to find. `paths`, when given,
    gets each root's path: SINGLE, FAST or CAREFUL (see `_shape_root`)."""
    order = pc.sort_indices(envelope, [("tbl", "ascending"), ("line_no", "ascending")])
    env = envelope.take(order)
    hints = shape_hints if shape_hints is not None else {}
    runs = _runs(env["tbl"])
    con.register(MESSAGES_VIEW, messages)
    try:
        roots = [_shape_root(con, root, order, hints, runs, paths, messages[root]) for root in ("context", "payload")]
    finally:
        con.unregister(MESSAGES_VIEW)
    slices: list[TableSlice] = []
    for tbl, (start, length) in runs.items():
        call = env["call"][start].as_py()
        root_name = PAYLOAD_ROOT.get(call, TRAITS_ROOT)
        slices.append(_slice(env, runs, tbl, call, roots, name_map, root_name))
    track_slices = [s for s in slices if s.call == "track"]
    if track_slices:
        slices.append(_tracks_slice(track_slices))
    return env, slices


def _as_table(result) -> pa.Table:
    return result.read_all() if hasattr(result, "read_all") else result


def in_line_order(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """The rows of `sql` (which selects a unique `line_no`) in line order. DuckDB's ORDER BY
    sorts the wide rows (a third of a shaping query's cost); a parallel scan of an Arrow
    table mostly keeps its order, so the rows are sorted here only when they need it."""
    return by_line(_as_table(con.sql(sql).to_arrow_table()))


def by_line(table: pa.Table) -> pa.Table:
    """The table sorted by its unique `line_no`, when it is not already."""
    line = combine_chunks(table["line_no"]).to_numpy(zero_copy_only=False)
    if len(line) > 1 and not bool(np.all(line[1:] > line[:-1])):
        table = table.take(pa.array(np.argsort(line, kind="stable")))
    return table


def _runs(column: pa.ChunkedArray) -> dict[str, tuple[int, int]]:
    """Start and length of each value's run in a sorted column."""
    values = combine_chunks(column)
    n = len(values)
    if n == 0:
        return {}
    changes = pc.not_equal(values.slice(1), values.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate(([0], np.flatnonzero(changes) + 1))
    lengths = np.diff(np.concatenate((starts, [n])))
    names = values.take(pa.array(starts)).to_pylist()
    return {name: (int(start), int(length)) for name, start, length in zip(names, starts, lengths)}


@dataclass
class FlatRoot:
    """The leaves found under one root object (`context`, or `payload`: properties or
    traits), with their values for every row of `msgs` (in its order).

    Leaves come from one `json_transform` into a STRUCT whose leaves are JSON; paths it
    cannot express (empty keys, keys equal but for case, a key that is an object in some rows
    and a scalar in others) are extracted with `json_extract` into a list instead."""

    root: str
    tables: dict[str, set[tuple[str, ...]]]  # table -> leaf paths seen in its rows
    struct: pa.ChunkedArray | None
    extra: pa.ChunkedArray | None  # list<string> of JSON, for the awkward paths
    extra_position: dict[tuple[str, ...], int]
    containers: set[tuple[str, ...]]  # paths that hold objects whose keys became columns
    order: pa.Array  # the envelope's permutation (rows grouped by table)
    # Leaves the fast path took from the hints without asking (see _flatten): `_prepare`
    # checks that none of them holds an object this batch.
    assumed: frozenset[tuple[str, ...]] = frozenset()
    _cache: dict = field(default_factory=dict)
    _segments: dict = field(default_factory=dict)  # (path, table) -> (offset, length)

    def leaf(self, path: tuple[str, ...], table: str, runs: dict[str, tuple[int, int]]) -> tuple[pa.Array, pa.Array, dict]:
        """A leaf's values in one table's rows as (text, kind), and their type counts. All
        leaves of the root are prepared together, in a handful of vectorised calls, over only
        the rows of the tables where each leaf occurs (most payload leaves belong to one
        event), not over the whole batch."""
        if not self._cache:
            self._prepare(runs)
        text, kind, counts = self._cache[path]
        offset, length = self._segments[(path, table)]
        return text.slice(offset, length), kind.slice(offset, length), counts.get(table, {})

    def _prepare(self, runs: dict[str, tuple[int, int]]) -> None:
        paths = sorted(self.extra_position) + sorted(self._struct_paths())
        if not paths:
            return
        tables_of: dict[tuple[str, ...], list[str]] = {}
        for table in sorted(self.tables):
            for path in self.tables[table]:
                tables_of.setdefault(path, []).append(table)
        order = self.order.to_numpy()
        table_names = sorted(runs)
        table_code = {t: i for i, t in enumerate(table_names)}
        raws, seg_leaf, seg_table, seg_len = [], [], [], []
        extra = combine_chunks(self.extra) if self.extra is not None else None
        struct = combine_chunks(self.struct) if self.struct is not None else None
        for i, path in enumerate(paths):
            if path in self.extra_position:
                raw = pc.list_element(extra, self.extra_position[path])
            else:
                raw = struct
                for key in path:
                    raw = raw.field(key)
            picks, offset = [], 0
            for table in tables_of.get(path, ()):
                start, length = runs[table]
                picks.append(order[start:start + length])
                self._segments[(path, table)] = (offset, length)
                offset += length
                seg_leaf.append(i)
                seg_table.append(table_code[table])
                seg_len.append(length)
            raws.append(raw.take(pa.array(np.concatenate(picks) if picks else np.empty(0, np.int64))))
        text, codes = _json_text_and_codes(pa.concat_arrays(raws))
        lengths = np.asarray(seg_len, dtype=np.int64)
        leaf_codes = np.repeat(np.asarray(seg_leaf, dtype=np.int32), lengths)
        objects_at = np.flatnonzero(codes == _OBJECT)
        if len(objects_at):
            empty = pc.equal(text.take(pa.array(objects_at)), "{}").to_numpy(zero_copy_only=False)
            if self.assumed:
                # A leaf taken from the hints that holds a non-empty object (above MAX_DEPTH)
                # in some row is a container this batch: the careful path must find its keys.
                is_assumed = np.asarray([p in self.assumed and len(p) < MAX_DEPTH for p in paths], dtype=bool)
                if (is_assumed[leaf_codes[objects_at]] & ~empty).any():
                    raise ShapeChanged(self.root)
            # An object at a leaf was flattened into its own columns when the path is also a
            # container; otherwise it lies past MAX_DEPTH and is the value itself, as JSON. An
            # empty object is no value at all.
            is_container = np.asarray([p in self.containers for p in paths], dtype=bool)
            drop_at = objects_at[is_container[leaf_codes[objects_at]] | empty]
            if len(drop_at):
                codes[drop_at] = _NULL
                drop = np.zeros(len(codes), bool)
                drop[drop_at] = True
                text = pc.if_else(pa.array(drop), None, text)
        kind = _kind_names(codes)
        counts = _type_counts(text, kind, leaf_codes, np.repeat(np.asarray(seg_table, dtype=np.int32), lengths),
                              table_names, codes)
        position = 0
        per_leaf = np.zeros(len(paths), np.int64)
        np.add.at(per_leaf, np.asarray(seg_leaf, dtype=np.int64), lengths)
        for i, path in enumerate(paths):
            n = int(per_leaf[i])
            self._cache[path] = (text.slice(position, n), kind.slice(position, n), counts.get(i, {}))
            position += n

    def _struct_paths(self) -> list[tuple[str, ...]]:
        paths = {p for leaves in self.tables.values() for p in leaves}
        return [p for p in paths if p not in self.extra_position]


class ShapeChanged(Exception):
    """A leaf the fast path took from the hints holds an object: redo the root carefully."""


SINGLE = "single"
FAST = "fast"
CAREFUL = "careful"


def _shape_root(con: duckdb.DuckDBPyConnection, root: str, order: pa.Array, hints: dict,
                runs: dict[str, tuple[int, int]], paths: dict[str, str] | None,
                root_text: pa.ChunkedArray) -> FlatRoot:
    """One root's leaves by the ONE dispatch between the three ways of finding them:

    - SINGLE, once earlier batches left hints of a plain shape (`_single_plan`): no key
      discovery at all. The known leaves are extracted in one `json_transform` (the only
      parse of the root after validation), and `_single_parse` proves from the extracted
      values' byte lengths that each object held no key beyond them; the census (which
      table's rows hold which leaf) comes from the values themselves.
    - FAST, when that proof fails (a new key, a null, a duplicate key...) or the hints are
      not plain: `json_keys` is asked only at the known objects (a handful of paths), and
      their known leaf keys are taken as leaves without asking each one.
    - CAREFUL otherwise (a reader's first batch): `json_keys` at every known path.

    On SINGLE and FAST, `_prepare` checks that no leaf taken from the hints holds a
    non-empty object (ShapeChanged: the root goes CAREFUL). All give the same FlatRoot;
    the path taken is recorded in `paths[root]`."""
    known = hints.setdefault(root, set())
    known_objects = hints.get(root + "#objects")
    taken = None
    if known_objects is not None:
        try:
            flat = _single_parse(con, root, order, hints, runs, root_text)
            taken = SINGLE
            if flat is None:
                flat, taken = _flatten(con, root, order, known, known_objects), FAST
            flat._prepare(runs)
        except ShapeChanged:
            taken = None
    if taken is None:
        objects: set[tuple[str, ...]] = set()
        flat = _flatten(con, root, order, known, objects_found=objects)
        if len(known) < MAX_KNOWN_PATHS:
            hints[root + "#objects"] = objects | (known_objects or set())
        taken = CAREFUL
    if paths is not None:
        paths[root] = taken
    return flat


@dataclass(frozen=True)
class _SinglePlan:
    """The known shape of a root as one `json_transform` and the byte-length proof over it."""

    spec: str  # the STRUCT of JSON leaves, as json_transform's structure argument
    tree: dict  # key -> (bytes of the key as written, quotes and colon included; subtree or None for a leaf)


def _single_plan(hints: dict, root: str) -> _SinglePlan | None:
    """The SINGLE path's plan for the hints of `root` (cached while they do not change), or
    None when the known shape is not plain: a key a STRUCT cannot hold (`_awkward_paths`), a
    path known both as a leaf and as an object, an object with no known key, too many leaves."""
    known, objects = hints[root], hints[root + "#objects"]
    cached = hints.get(root + "#single")
    if cached is not None and cached[0] == (len(known), len(objects)):  # the hints only grow
        return cached[1]
    plan = None
    leaves = known - objects
    parents = {p[:d] for p in known for d in range(1, len(p))}
    if not known:
        plan = _SinglePlan("", {})  # no key seen yet: the proof is that no object has one
    elif (leaves and len(leaves) <= MAX_STRUCT_LEAVES and len(known) < MAX_KNOWN_PATHS and objects <= known
            and parents == objects and not _awkward_paths(known)):
        tree: dict = {}
        for path in sorted(known, key=len):
            node = tree
            for key in path[:-1]:
                node = node[key][1]
            # A key as DuckDB writes it: quoted, then a colon. Its raw UTF-8 length is a lower
            # bound (an escaped character only adds bytes), so a key written longer makes the
            # proof fail, never pass falsely.
            node[path[-1]] = (len(path[-1].encode("utf-8")) + 3, None if path in leaves else {})
        structure: dict = {}
        for path in sorted(leaves):
            node = structure
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = "JSON"
        plan = _SinglePlan(_json_dumps(structure).replace("'", "''"), tree)
    hints[root + "#single"] = ((len(known), len(objects)), plan)
    return plan


def _validity(array: pa.Array) -> np.ndarray:
    """An array's validity bitmap as numpy booleans (one unpack, no Arrow boolean array)."""
    bits = np.frombuffer(array.buffers()[0], np.uint8)
    return np.unpackbits(bits, count=array.offset + len(array), bitorder="little")[array.offset:].view(bool)


class _Unproven(Exception):
    """The SINGLE path's proof failed for this batch."""


def _single_parse(con: duckdb.DuckDBPyConnection, root: str, order: pa.Array, hints: dict,
                  runs: dict[str, tuple[int, int]], root_text: pa.ChunkedArray) -> FlatRoot | None:
    """The SINGLE path: every known leaf of `root` in one `json_transform`, and the proof
    that no row's objects hold anything else. None when the proof fails (the root then
    waits SINGLE_BACKOFF_BATCHES batches before it tries again, or until the hints grow),
    when it waits, or when there is no plain plan: the caller takes the FAST path.

    The proof: validation wrote each root object out as minified JSON (`{"k":v,...}`), and
    json_transform writes each leaf value the same way, so an object whose keys are all known
    is exactly 2 + the sum over its present keys of (key + 1 + value) + one comma between
    keys, bytes long. Anything else in it (an unknown key, a known key holding null, which
    json_transform cannot tell from an absent one, a duplicate key) makes it longer; an
    object node holding a scalar, an array, `{}` or only nulls has no present key, which is
    refused. So equal lengths in every row prove the census exact: a leaf is in a table's
    columns when a row of that table holds it."""
    plan = _single_plan(hints, root)
    shape_now = (len(hints[root]), len(hints[root + "#objects"]))
    waiting, shape_then = hints.get(root + "#single_wait", (0, shape_now))
    if plan is None or (waiting and shape_then == shape_now):  # new keys since: try at once
        hints[root + "#single_wait"] = (max(waiting - 1, 0), shape_then)
        return None
    offsets, data, valid = _string_parts(root_text)
    sizes = np.diff(offsets).astype(np.int64)
    n = len(sizes)
    first = np.zeros(n, np.uint8)
    nonempty = valid & (sizes > 0)
    first[nonempty] = data[offsets[:-1][nonempty]]
    is_object = first == ord("{")
    if not plan.tree:  # no known key: proven when every object is {} (nothing to extract)
        if (sizes[is_object] != 2).any():
            hints[root + "#single_wait"] = (SINGLE_BACKOFF_BATCHES, shape_now)
            return None
        return FlatRoot(root, {}, None, None, {}, set(), order)
    result = in_line_order(con, f"SELECT line_no, json_transform({root}, '{plan.spec}') AS s FROM {MESSAGES_VIEW}")
    struct = combine_chunks(result["s"])
    leaves: list[tuple[str, ...]] = []
    held_by_leaf: list[np.ndarray] = []
    objects: set[tuple[str, ...]] = set()

    def node_bytes(array: pa.StructArray, tree: dict, path: tuple[str, ...], here: np.ndarray):
        """Each row's bytes of the object at `path` as its known keys would write it, and
        how many of them it holds (`here`: the rows holding the object)."""
        total = np.full(n, 2, np.int64)  # the braces
        keys = np.zeros(n, np.int64)
        for key, (key_bytes, sub) in tree.items():
            child = array.field(key)
            if child.null_count == len(child):
                continue
            held = here if child.null_count == 0 else here & _validity(child)
            if sub is None:
                offsets = np.frombuffer(child.buffers()[1], np.int32, len(child) + 1, child.offset * 4)
                value = (offsets[1:] - offsets[:-1]).astype(np.int64)
                leaves.append(path + (key,))
                held_by_leaf.append(held)
            else:
                value, inner = node_bytes(child, sub, path + (key,), held)
                if (held & (inner == 0)).any():
                    raise _Unproven  # an object node holding no known key: a scalar, [], {}, nulls
                if held.any():
                    objects.add(path + (key,))
            total += (key_bytes + value) * held
            keys += held
        return total + np.maximum(keys - 1, 0), keys

    try:
        here = _validity(struct) if struct.null_count else np.ones(n, bool)
        expected, keys = node_bytes(struct, plan.tree, (), here)
        if (keys[~is_object] > 0).any() or (expected[is_object] != sizes[is_object]).any():
            raise _Unproven
    except _Unproven:
        hints[root + "#single_wait"] = (SINGLE_BACKOFF_BATCHES, shape_now)
        return None
    # The census: a leaf is a column of the tables whose rows hold it (rows grouped by table).
    table_names = sorted(runs, key=lambda t: runs[t][0])
    tables: dict[str, set[tuple[str, ...]]] = {}
    if leaves:
        starts = np.asarray([runs[t][0] for t in table_names], np.int64)
        in_table = np.logical_or.reduceat(np.stack(held_by_leaf)[:, order.to_numpy()], starts, axis=1)
        for leaf, table in zip(*np.nonzero(in_table)):
            tables.setdefault(table_names[table], set()).add(leaves[leaf])
    assumed = frozenset(p for found in tables.values() for p in found)
    return FlatRoot(root, tables, result["s"], None, {}, objects, order, assumed)


def _flatten(con: duckdb.DuckDBPyConnection, root: str, order: pa.Array,
             known: set[tuple[str, ...]] | None = None,
             known_objects: set[tuple[str, ...]] | None = None,
             objects_found: set[tuple[str, ...]] | None = None) -> FlatRoot:
    """Discover every leaf path under `root`: `json_keys` at a path is NULL when absent, []
    for a scalar, array or empty object, and the keys of a non-empty object. Paths `known`
    from earlier batches are asked in the first pass, so a stable shape costs one parse;
    each pass after that only follows keys not seen before. Then one parse extracts every
    leaf.

    With `known_objects` (the fast path, see `_shape_root`) only those are asked in the first
    pass: a key under them that is a known leaf is taken as a leaf of the tables whose rows
    hold it (FlatRoot.assumed) rather than asked. `objects_found` receives the objects seen."""
    known = known if known is not None else set()
    tables: dict[str, set[tuple[str, ...]]] = {}
    objects: set[tuple[str, ...]] = objects_found if objects_found is not None else set()
    scalars: set[tuple[str, ...]] = set()
    assumed: set[tuple[str, ...]] = set()
    asked: set[tuple[str, ...]] = set()
    leaves_known = known - known_objects if known_objects is not None else set()
    frontier = sorted({()} | (known_objects if known_objects is not None else known))
    while frontier:
        asked.update(frontier)
        ptrs = [pointer(p) for p in frontier]
        # Rows of a table mostly share their key lists: unnesting only the distinct ones
        # halves the cost of the aggregation (context, 16 MB batch: 0.025 -> 0.017 CPU s).
        rows = con.execute(
            f"""
            SELECT tbl, i, bool_or(len(ks) = 0) AS leafy, list_distinct(flatten(list(ks))) AS sub
            FROM (SELECT tbl, unnest(k) AS ks, unnest(range({len(ptrs)})) AS i
                  FROM (SELECT DISTINCT tbl, json_keys({root}, {_sql_list(ptrs)}) AS k
                        FROM msgs WHERE left({root}, 1) = '{{'))
            WHERE ks IS NOT NULL
            GROUP BY ALL
            """
        ).fetchall()
        next_frontier: set[tuple[str, ...]] = set()
        for tbl, i, leafy, sub in rows:
            path = frontier[i]  # () is the root object itself
            deep = len(path) >= MAX_DEPTH
            if sub and path and not deep:
                objects.add(path)
            if sub and not deep:
                for child in (path + (k,) for k in sub):
                    if child in asked:
                        continue
                    if child in leaves_known:  # fast path: a leaf, proven by _prepare
                        assumed.add(child)
                        scalars.add(child)
                        tables.setdefault(tbl, set()).add(child)
                    else:
                        next_frontier.add(child)
            if path and (leafy or (sub and deep)):
                scalars.add(path)
                tables.setdefault(tbl, set()).add(path)
        frontier = sorted(next_frontier)
    if len(known) < MAX_KNOWN_PATHS:
        known.update(objects | scalars)

    awkward = (scalars & objects) | (_awkward_paths(objects | scalars) & scalars)
    if len(scalars) > MAX_STRUCT_LEAVES:
        # A STRUCT this wide costs a vector per field: extract a list by JSON pointer instead.
        awkward = set(scalars)
    structure: dict = {}
    for path in sorted(scalars - awkward):
        node = structure
        for key in path[:-1]:
            node = node.setdefault(key, {})
        if isinstance(node, dict):
            node.setdefault(path[-1], "JSON")
    struct = extra = None
    extra_position = {p: i for i, p in enumerate(sorted(awkward))}
    select = []
    if structure:
        spec = _json_dumps(structure).replace("'", "''")
        select.append(f"json_transform({root}, '{spec}') AS s")
    if awkward:
        select.append(f"json_extract({root}, {_sql_list([pointer(p) for p in sorted(awkward)])}) AS x")
    if select:
        result = in_line_order(con, f"SELECT line_no, {', '.join(select)} FROM msgs")
        struct = result["s"] if structure else None
        extra = result["x"] if awkward else None
    return FlatRoot(root, tables, struct, extra, extra_position, objects, order, frozenset(assumed))


def _awkward_paths(paths: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Paths a DuckDB STRUCT cannot hold: an empty key, a NUL character, or a key equal to a
    sibling's but for case. Such paths are extracted by JSON pointer instead."""
    siblings: dict[tuple[tuple[str, ...], str], set[str]] = {}
    for path in paths:
        for depth in range(len(path)):
            siblings.setdefault((path[:depth], path[depth].lower()), set()).add(path[depth])
    clashing = {key for key, spellings in siblings.items() if len(spellings) > 1}
    return {
        path for path in paths
        if any(k == "" or "\x00" in k for k in path)
        or any((path[:d], path[d].lower()) in clashing for d in range(len(path)))
    }


def _json_dumps(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


# Kinds by code (json_kinds, _type_counts): the first byte of a JSON value decides most.
_KIND_NAMES = [Kind.VARCHAR, Kind.BOOLEAN, Kind.ARRAY, Kind.OBJECT, Kind.DOUBLE, Kind.BIGINT, Kind.UBIGINT]
_KIND_ARRAY = pa.array([str(k) for k in _KIND_NAMES], pa.string())
_VARCHAR, _BOOLEAN, _ARRAY, _OBJECT, _DOUBLE, _BIGINT, _UBIGINT = range(len(_KIND_NAMES))
_NULL = -1
_FIRST_BYTE_KIND = np.full(256, _UBIGINT, np.int8)  # digits, and anything else that is no JSON start
for _byte, _code in ((b'"', _VARCHAR), (b"t", _BOOLEAN), (b"f", _BOOLEAN), (b"[", _ARRAY), (b"{", _OBJECT),
                     (b"n", _NULL), (b"-", _BIGINT)):
    _FIRST_BYTE_KIND[_byte[0]] = _code


def _string_parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A string array's offsets (n + 1), data bytes and validity, as numpy views (no copy)."""
    array = combine_chunks(array)
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    n = len(array)
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32, n + 1, array.offset * 4) if offsets_buf else np.zeros(n + 1, np.int32)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else np.ones(n, bool)
    return offsets, data, valid


def kind_codes(json_text: pa.Array) -> np.ndarray:
    """Each JSON text's kind as a code into _KIND_NAMES (_NULL for null and JSON null), from
    its first byte; a number is DOUBLE when it has a fraction or an exponent."""
    offsets, data, valid = _string_parts(json_text)
    starts, ends = offsets[:-1], offsets[1:]
    present = valid & (ends > starts)
    first = np.zeros(len(starts), np.uint8)  # an empty text counts as a number, as before
    first[present] = data[starts[present]]
    codes = _FIRST_BYTE_KIND[first]
    codes[~valid] = _NULL
    numbers = np.flatnonzero(valid & ((codes == _UBIGINT) | (codes == _BIGINT)))
    if len(numbers):  # numbers are short: the regex runs over them only
        subset = combine_chunks(json_text).take(pa.array(numbers))
        fractional = pc.match_substring_regex(subset, r"[.eE]").to_numpy(zero_copy_only=False)
        codes[numbers[fractional]] = _DOUBLE
    return codes


def json_kinds(json_text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Split JSON texts into the value as text (strings unquoted) and its JSON type."""
    text, codes = _json_text_and_codes(json_text)
    return text, _kind_names(codes)


_INT64_MIN, _UINT64_MAX = "-9223372036854775808", "18446744073709551615"


def json_value_and_type(json_text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """What DuckDB's `->>'$'` and `json_type` give for JSON texts DuckDB wrote (the envelope
    fields validation extracted), without parsing them again: json_kinds, except that JSON
    null has the type NULL, and that DuckDB types DOUBLE what reads as an integer by its
    first byte but is not a 64-bit one (NaN, Infinity, nan: its reader takes them; integers
    beyond 64 bits)."""
    json_text = combine_chunks(json_text)
    text, codes = _json_text_and_codes(json_text)
    _, _, valid = _string_parts(json_text)
    null_literal = pc.fill_null(pc.equal(json_text, "null"), False).to_numpy(zero_copy_only=False)
    not_a_number = np.flatnonzero(valid & (codes == _NULL) & ~null_literal)  # nan, by its first byte
    if len(not_a_number):
        mask = np.zeros(len(codes), bool)
        mask[not_a_number] = True
        text = pc.if_else(pa.array(mask), json_text, text)
        codes[not_a_number] = _DOUBLE
    integers = np.flatnonzero((codes == _UBIGINT) | (codes == _BIGINT))
    if len(integers):
        subset = json_text.take(pa.array(integers))
        plain = pc.match_substring_regex(subset, r"^-?[0-9]+$").to_numpy(zero_copy_only=False)
        size = pc.utf8_length(subset).to_numpy(zero_copy_only=False)
        negative = codes[integers] == _BIGINT
        limit = pc.if_else(pa.array(negative), _INT64_MIN, _UINT64_MAX)
        beyond = (size > 20) | ((size == 20) & pc.greater(subset, limit).to_numpy(zero_copy_only=False))
        codes[integers[~plain | beyond]] = _DOUBLE
    kind = _kind_names(codes)
    if null_literal.any():
        kind = pc.if_else(pa.array(null_literal), "NULL", kind)
    return text, kind


def scalar_texts(json_text: pa.Array) -> pa.Array:
    """Scalars as sent (a string unquoted, a number or boolean as its JSON text); NULL for
    null, arrays and objects. From JSON text already extracted, without parsing it again."""
    text, codes = _json_text_and_codes(json_text)
    return pc.if_else(pa.array((codes == _ARRAY) | (codes == _OBJECT)), None, text)


def _kind_names(codes: np.ndarray) -> pa.Array:
    return _KIND_ARRAY.take(pa.array(codes, pa.int8(), mask=codes == _NULL))


def _json_text_and_codes(json_text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """json_kinds with the kinds as codes: the quotes of strings are cut out of the data
    buffer in one numpy pass (no per-value work), escapes are decoded for the few that have one."""
    json_text = combine_chunks(json_text)
    codes = kind_codes(json_text)
    offsets, data, _ = _string_parts(json_text)
    n = len(codes)
    is_string = codes == _VARCHAR
    keep = np.ones(len(data), bool)
    keep[offsets[:-1][is_string]] = False
    keep[offsets[1:][is_string] - 1] = False
    removed = np.concatenate(([0], np.cumsum(is_string, dtype=np.int64) * 2))
    new_offsets = (offsets.astype(np.int64) - offsets[0] - removed).astype(np.int32)
    new_data = data[offsets[0]:offsets[-1]][keep[offsets[0]:offsets[-1]]]
    is_null = codes == _NULL
    validity = pa.py_buffer(np.packbits(~is_null, bitorder="little")) if is_null.any() else None
    text = pa.StringArray.from_buffers(n, pa.py_buffer(new_offsets), pa.py_buffer(new_data), validity)
    backslashes = np.flatnonzero(data[offsets[0]:offsets[-1]] == ord("\\")) + offsets[0]
    if len(backslashes):
        holders = np.unique(np.searchsorted(offsets, backslashes, side="right") - 1)
        holders = holders[is_string[holders]]
        if len(holders):
            # Rare: strings with escapes (quotes, backslashes, control characters) are decoded
            # one by one; everything else stayed vectorised.
            import json

            escaped = np.zeros(n, bool)
            escaped[holders] = True
            decoded = pa.array([json.loads(v) for v in json_text.take(pa.array(holders)).to_pylist()], pa.string())
            text = pc.replace_with_mask(text, pa.array(escaped), decoded)
    return text, codes


def _slice(
    env: pa.Table,
    runs: dict[str, tuple[int, int]],
    tbl: str,
    call: str,
    roots: list[FlatRoot],
    name_map: list[NameMapping],
    payload_root: str,
) -> TableSlice:
    """One table's rows: standard columns, then flattened fields by column name."""
    values: dict[str, Values] = {}
    start, length = runs[tbl]
    picked = env.slice(start, length)
    for col in COMMON_COLUMNS + EXTRA_COLUMNS[call]:
        if col == "id":
            values[col] = Values(picked["message_id"], _const(length, Kind.VARCHAR))
        elif col == "event":
            values[col] = Values(picked["tbl"], _const(length, Kind.VARCHAR))
        elif col == "event_text":
            values[col] = Values(picked["event_text"], _const(length, Kind.VARCHAR))
        else:
            typed = picked[f"{col}#ts"] if col in TIMESTAMP_COLUMNS else None
            values[col] = Values(picked[col], picked[f"{col}#kind"], typed)

    sources: dict[str, list[tuple[FlatRoot, tuple[str, ...], str]]] = {}
    unnamed: dict[str, Values] = {}
    for flat in roots:
        label = "context" if flat.root == "context" else payload_root
        for path in sorted(flat.tables.get(tbl, ())):
            name = _column_name(path, context=flat.root == "context", standard=RESERVED_FOR[call])
            if name is not None:
                sources.setdefault(name, []).append((flat, path, pointer((label,) + path)))
            else:  # no column can be named after it: its values go to the discards
                text, kind, _ = flat.leaf(path, tbl, runs)
                unnamed[pointer((label,) + path)] = Values(text, kind)
    stats: dict[str, ColumnStats] = {}
    for col in sorted(sources):
        # Keys that collide after snake_case share a column; the byte-wise last key wins
        # (RudderStack's rule), so the result does not depend on key order in the JSON.
        merged_text = merged_kind = None
        col_stats = ColumnStats(sources=tuple(ptr for _, _, ptr in sources[col]))
        for flat, path, _ in sorted(sources[col], key=lambda s: s[2], reverse=True):
            text, kind, counts = flat.leaf(path, tbl, runs)
            merged_text = text if merged_text is None else pc.coalesce(merged_text, text)
            merged_kind = kind if merged_kind is None else pc.coalesce(merged_kind, kind)
            for k, n in counts.items():
                col_stats.types[k] = col_stats.types.get(k, 0) + n
        values[col] = Values(merged_text, merged_kind)
        stats[col] = col_stats
        name_map.extend(NameMapping("column", tbl, ptr, col) for _, _, ptr in sources[col])
    return TableSlice(tbl, call, picked["line_no"], picked["message_id"], values, stats, unnamed)


def combine_chunks(array) -> pa.Array:
    """One contiguous Array (a ChunkedArray's chunks joined; an Array as it is). A single
    chunk is returned as it is: pyarrow's combine_chunks copies even then (a 12 MB column:
    15 ms), and DuckDB hands most results over as one chunk."""
    if not isinstance(array, pa.ChunkedArray):
        return array
    if array.num_chunks == 1:
        return array.chunk(0)
    return array.combine_chunks()


def _type_counts(text: pa.Array, kind: pa.Array, leaf_codes: np.ndarray, table_codes: np.ndarray,
                 tables: list[str], codes: np.ndarray | None = None) -> dict[int, dict[str, dict[str, int]]]:
    """For leaf values stacked one after another (`leaf_codes` and `table_codes` say whose
    each is): per leaf and table, the JSON types of every value; strings that are all
    ISO-8601 timestamps count as TIMESTAMP, integers beyond 64 bits as HUGEINT. `codes`:
    the kinds as json_kinds' codes, when the caller has them (else read from `kind`).

    Counted with numpy over one integer key per value (leaf, table, kind); the regexes run
    over the strings and the integers only."""
    if codes is None:
        codes = pc.fill_null(pc.index_in(kind, _KIND_ARRAY), _NULL).to_numpy(zero_copy_only=False).astype(np.int8)
    present = np.flatnonzero(codes != _NULL)
    if not len(present):
        return {}
    n_kinds, n_tables = len(_KIND_NAMES), max(len(tables), 1)
    group = (leaf_codes.astype(np.int64) * n_tables + table_codes) * n_kinds
    keys = group[present] + codes[present]
    unique, counts = np.unique(keys, return_counts=True)

    text = combine_chunks(text)

    def flagged(kind_code: int, test, shaped=None) -> dict[int, int]:
        rows = np.flatnonzero(codes == kind_code)
        if shaped is not None and len(rows):
            rows = rows[shaped(rows)]
        if not len(rows):
            return {}
        hit = test(text.take(pa.array(rows))).to_numpy(zero_copy_only=False)
        hit_keys, hit_counts = np.unique(group[rows[hit]] + kind_code, return_counts=True)
        return dict(zip(hit_keys.tolist(), hit_counts.tolist()))

    def iso_shaped(rows: np.ndarray) -> np.ndarray:
        """Strings that can match ISO_TIMESTAMP_RE (16 characters or more, "-" at 4 and 7,
        ":" at 13): a byte test, so the regex (a fifth of shaping's Arrow time) runs only on
        those. Any match starts with 16 ASCII characters, so bytes are characters there."""
        offsets, data, _ = _string_parts(text)
        starts = offsets[rows].astype(np.int64)
        shaped = (offsets[rows + 1] - starts) >= 16
        at = starts[shaped]
        shaped[shaped] = (data[at + 4] == 45) & (data[at + 7] == 45) & (data[at + 13] == 58)
        return shaped

    iso = flagged(_VARCHAR, lambda t: pc.match_substring_regex(t, "^" + ISO_TIMESTAMP_RE + "$"), iso_shaped)
    huge = flagged(_UBIGINT, lambda t: pc.or_(pc.greater(pc.utf8_length(t), 19), pc.and_(
        pc.equal(pc.utf8_length(t), 19), pc.greater(t, "9223372036854775807"))))
    out: dict[int, dict[str, dict[str, int]]] = {}
    for key, n in zip(unique.tolist(), counts.tolist()):
        code = key % n_kinds
        leaf, table = divmod(key // n_kinds, n_tables)
        per_table = out.setdefault(leaf, {}).setdefault(tables[table], {})
        kind_name = str(_KIND_NAMES[code])
        if code == _VARCHAR and iso.get(key) == n:
            kind_name = str(Kind.TIMESTAMP)
        elif code == _UBIGINT and huge.get(key):
            per_table[str(Kind.HUGEINT)] = huge[key]
            n -= huge[key]
        if n:
            per_table[kind_name] = n
    return out


def _tracks_slice(track_slices: list[TableSlice]) -> TableSlice:
    """`tracks`: every track, with the standard and context columns only."""
    names: dict[str, None] = {}  # ordered set
    for s in track_slices:
        names.update((c, None) for c in s.values if c in ALL_STANDARD or c.startswith("context_"))
    values: dict[str, Values] = {}
    stats: dict[str, ColumnStats] = {}
    for col in names:
        texts, kinds = [], []
        for s in track_slices:
            v = s.values.get(col)
            n = s.num_rows
            texts.append(combine_chunks(v.text) if v else pa.nulls(n, pa.string()))
            kinds.append(combine_chunks(v.kind) if v else pa.nulls(n, pa.string()))
        typed = None
        if col in TIMESTAMP_COLUMNS:
            typed = pa.concat_arrays([combine_chunks(s.values[col].typed) for s in track_slices])
        values[col] = Values(pa.concat_arrays(texts), pa.concat_arrays(kinds), typed)
        merged = ColumnStats(sources=())
        for s in track_slices:
            for k, n in (s.columns[col].types.items() if col in s.columns else ()):
                merged.types[k] = merged.types.get(k, 0) + n
        if col not in ALL_STANDARD:
            stats[col] = merged
    line = pa.concat_arrays([combine_chunks(s.line) for s in track_slices])
    message_id = pa.concat_arrays([combine_chunks(s.message_id) for s in track_slices])
    return TableSlice(TRACKS_TABLE, TRACKS_TABLE, line, message_id, values, stats)


def _const(n: int, value: str) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)
