"""Normalising: turn a batch of raw lines into Segment-shaped rows per warehouse table.

All per-row work runs in DuckDB (an in-memory connection of its own, never the warehouse):
validation, routing to tables, key discovery, `_` flattening and extraction. Python only sees
distinct names and paths. Values leave this stage as JSON text, with per-column statistics of
the JSON types seen, so the schema stage can type new columns from every value of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from loader.dedup import IN_BATCH_RANK
from loader.naming import column_name, event_table_name
from loader.read import Rejection

MAX_DEPTH = 8  # objects nested deeper than this are kept whole, as JSON
CALL_TABLES = {
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
CALL_TYPES = ("track", *CALL_TABLES)
PAYLOAD_ROOT = {"track": "properties", "page": "properties", "screen": "properties"}
COMMON_COLUMNS = (
    "id",
    "anonymous_id",
    "user_id",
    "received_at",
    "sent_at",
    "original_timestamp",
    "timestamp",
    "source_id",
)
EXTRA_COLUMNS = {
    "track": ("event", "event_text"),
    "page": ("name", "category"),
    "screen": ("name", "category"),
    "group": ("group_id",),
    "alias": ("previous_id",),
    "identify": (),
}
LOADER_COLUMNS = ("uuid_ts", "load_id")  # stamped by the writer
ALL_STANDARD = frozenset(
    COMMON_COLUMNS + LOADER_COLUMNS + tuple(c for cols in EXTRA_COLUMNS.values() for c in cols)
)
ENVELOPE = (
    "messageId",
    "type",
    "event",
    "userId",
    "anonymousId",
    "receivedAt",
    "sentAt",
    "originalTimestamp",
    "timestamp",
    "projectId",
    "groupId",
    "previousId",
    "name",
    "category",
)
ISO_TIMESTAMP_RE = (
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)?"
)
MAX_MESSAGE_ID_LENGTH = 100  # Segment's documented limit


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


@dataclass
class TableSlice:
    table: str
    call: str  # track (an event table), tracks, identify, page, screen, group, alias
    line: pa.Array  # line numbers in the file
    message_id: pa.Array
    values: dict[str, Values]  # standard columns first, then flattened fields
    columns: dict[str, ColumnStats]  # statistics of the flattened fields

    @property
    def num_rows(self) -> int:
        return len(self.line)


@dataclass
class NameMapping:
    kind: str  # "table" or "column"
    table: str
    original: str
    name: str


@dataclass
class NormalizedBatch:
    slices: list[TableSlice]
    messages: pa.Table  # line_no, message_id of the rows that won the in-batch dedup
    rejections: list[Rejection]
    name_map: list[NameMapping]
    lines_read: int
    valid: int  # lines that became messages (before dedup)
    duplicates_in_batch: int


def pointer(path: tuple[str, ...]) -> str:
    """JSON pointer for a key path: unambiguous for keys holding '.', '"', '/' or '~'."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in path)


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


def compute_connection() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
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
    table = con.execute(
        f"SELECT {first_line} - 1 + row_number() OVER () AS line_no, "
        f"json_object({body})::VARCHAR AS raw FROM parquet_batch"
    ).to_arrow_table()
    con.unregister("parquet_batch")
    return table.read_all() if hasattr(table, "read_all") else table


def normalize(
    con: duckdb.DuckDBPyConnection,
    lines: pa.Table,
    *,
    source_id: str | None,
    prior_rejections: list[Rejection],
    lines_read: int,
) -> NormalizedBatch:
    """Validate and shape one batch. `con` is a compute connection, not the warehouse."""
    con.register("raw_lines", lines)
    envelope = ", ".join(f"'/{k}'" for k in ENVELOPE)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE parsed AS
        SELECT line_no, raw, kind,
               CASE WHEN kind = 'OBJECT' THEN json_extract(raw, [{envelope}]) END AS e
        FROM (SELECT line_no, raw,
                     CASE WHEN json_valid(raw) THEN json_type(raw) END AS kind
              FROM raw_lines)
        """
    )
    # Envelope values as text; `e[i]` follows ENVELOPE's order (1-based).
    idx = {k: i + 1 for i, k in enumerate(ENVELOPE)}

    def text(key: str) -> str:
        return f"nullif(trim(CASE WHEN json_type(e[{idx[key]}]) IN ('OBJECT', 'ARRAY', 'NULL') THEN NULL ELSE e[{idx[key]}]->>'$' END), '')"

    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE checked AS
        SELECT line_no, raw, e,
               {text('messageId')} AS message_id,
               e[{idx['type']}]->>'$' AS call,
               {text('event')} AS event_name,
               CASE
                 WHEN kind IS NULL THEN 'malformed_json'
                 WHEN kind <> 'OBJECT' THEN 'not_an_object'
                 WHEN json_type(e[{idx['messageId']}]) IN ('OBJECT', 'ARRAY', 'BOOLEAN')
                   THEN 'invalid_message_id'
                 WHEN {text('messageId')} IS NULL THEN 'missing_message_id'
                 WHEN length({text('messageId')}) > {MAX_MESSAGE_ID_LENGTH}
                   THEN 'invalid_message_id'
                 WHEN e[{idx['type']}] IS NULL OR json_type(e[{idx['type']}]) = 'NULL'
                   THEN 'missing_type'
                 WHEN coalesce(e[{idx['type']}]->>'$' NOT IN {tuple(CALL_TYPES)}, true)
                   THEN 'unknown_type'
                 WHEN e[{idx['type']}]->>'$' = 'track' AND {text('event')} IS NULL
                   THEN 'missing_event'
                 WHEN {text('userId')} IS NULL AND {text('anonymousId')} IS NULL
                   THEN 'missing_identity'
                 WHEN e[{idx['type']}]->>'$' = 'group' AND {text('groupId')} IS NULL
                   THEN 'missing_group_id'
               END AS reason
        FROM parsed
        """
    )
    rejections = list(prior_rejections)
    for line_no, raw, reason in con.execute(
        "SELECT line_no, raw, reason FROM checked WHERE reason IS NOT NULL ORDER BY line_no"
    ).fetchall():
        rejections.append(Rejection(line_no, raw.encode("utf-8"), reason, _REASON_TEXT[reason]))

    # Route to tables. Event names are few: name them in Python, join them back.
    events = [r[0] for r in con.execute(
        "SELECT DISTINCT event_name FROM checked WHERE reason IS NULL AND call = 'track'"
    ).fetchall()]
    name_map = [NameMapping("table", "tracks", ev, event_table_name(ev)) for ev in events]
    con.register(
        "event_tables",
        pa.table({"event_name": pa.array(events, pa.string()),
                  "tbl": pa.array([m.name for m in name_map], pa.string())}),
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE msgs AS
        SELECT c.line_no, c.raw, c.e, c.message_id, c.call, c.event_name,
               coalesce(t.tbl, CASE c.call {' '.join(f"WHEN '{k}' THEN '{v}'" for k, v in CALL_TABLES.items())} END) AS tbl,
               try_cast(e[{idx['receivedAt']}]->>'$' AS TIMESTAMPTZ) AS received_ts,
               {IN_BATCH_RANK} AS dedup_rank
        FROM checked c LEFT JOIN event_tables t ON c.call = 'track' AND t.event_name = c.event_name
        WHERE c.reason IS NULL
        """
    )
    con.unregister("event_tables")
    valid, duplicates = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE dedup_rank > 1) FROM msgs"
    ).fetchall()[0]
    con.execute("DELETE FROM msgs WHERE dedup_rank > 1")

    context = _flatten(con, "context", calls=CALL_TYPES)
    payloads = {
        "properties": _flatten(con, "properties", calls=("track", "page", "screen")),
        "traits": _flatten(con, "traits", calls=("identify", "group", "alias")),
    }
    env = _envelope(con, idx, source_id)
    tables = sorted(set(zip(env["call"].to_pylist(), env["tbl"].to_pylist())))
    slices: list[TableSlice] = []
    track_rows = pc.equal(env["call"], "track")
    for call, tbl in tables:
        rows = pc.indices_nonzero(pc.equal(env["tbl"], tbl))
        payload = payloads[PAYLOAD_ROOT.get(call, "traits")]
        slices.append(_slice(env, rows, tbl, call, [context, payload], name_map))
    if any(call == "track" for call, _ in tables):
        rows = pc.indices_nonzero(track_rows)
        slices.append(_slice(env, rows, "tracks", "tracks", [context], None))
    messages = pa.table({"line_no": env["line_no"], "message_id": env["message_id"]})
    con.unregister("raw_lines")
    return NormalizedBatch(
        slices=slices,
        messages=messages,
        rejections=rejections,
        name_map=name_map,
        lines_read=lines_read,
        valid=valid,
        duplicates_in_batch=duplicates,
    )


_REASON_TEXT = {
    "malformed_json": "the line is not valid JSON",
    "not_an_object": "the line is JSON but not an object",
    "invalid_message_id": f"messageId is not a string of at most {MAX_MESSAGE_ID_LENGTH} characters",
    "missing_message_id": "messageId is missing or empty",
    "missing_type": "type is missing",
    "unknown_type": f"type is not one of {', '.join(CALL_TYPES)}",
    "missing_event": "a track call without an event name",
    "missing_identity": "neither userId nor anonymousId is set",
    "missing_group_id": "a group call without groupId",
}


def _as_table(result) -> pa.Table:
    return result.read_all() if hasattr(result, "read_all") else result


def _envelope(con: duckdb.DuckDBPyConnection, idx: dict[str, int], source_id: str | None) -> pa.Table:
    """Standard columns of every message (rows in line order), as text plus JSON type."""

    def value(key: str) -> str:
        return f"e[{idx[key]}]"

    ts = {k: f"try_cast({value(k)}->>'$' AS TIMESTAMPTZ)" for k in ("receivedAt", "sentAt", "originalTimestamp")}
    # Keep the archive's timestamp; else correct the device clock by the send/receive gap.
    computed = (
        f"strftime(coalesce({ts['receivedAt']} - ({ts['sentAt']} - {ts['originalTimestamp']}), "
        f"{ts['receivedAt']}), '%Y-%m-%dT%H:%M:%S.%fZ')"
    )
    has_timestamp = f"coalesce(json_type({value('timestamp')}), 'NULL') <> 'NULL'"
    fallback = "NULL" if source_id is None else "'" + source_id.replace("'", "''") + "'"
    has_project = f"json_type({value('projectId')}) NOT IN ('NULL', 'OBJECT', 'ARRAY')"
    columns = {
        "anonymous_id": (value("anonymousId"), None),
        "user_id": (value("userId"), None),
        "received_at": (value("receivedAt"), None),
        "sent_at": (value("sentAt"), None),
        "original_timestamp": (value("originalTimestamp"), None),
        "timestamp": (
            f"CASE WHEN {has_timestamp} THEN {value('timestamp')}->>'$' ELSE {computed} END",
            f"CASE WHEN {has_timestamp} THEN json_type({value('timestamp')}) ELSE 'VARCHAR' END",
        ),
        "source_id": (
            f"coalesce(CASE WHEN {has_project} THEN {value('projectId')}->>'$' END, {fallback})",
            f"CASE WHEN {has_project} THEN json_type({value('projectId')}) WHEN {fallback} IS NOT NULL THEN 'VARCHAR' END",
        ),
        "name": (value("name"), None),
        "category": (value("category"), None),
        "group_id": (value("groupId"), None),
        "previous_id": (value("previousId"), None),
    }
    select = ["line_no", "message_id", "call", "tbl", "event_name"]
    for col, (expr, kind) in columns.items():
        if kind is None:
            expr, kind = f"{expr}->>'$'", f"json_type({expr})"
        select.append(f"{expr} AS \"{col}\"")
        select.append(f"{kind} AS \"{col}#kind\"")
    return _as_table(con.execute(f"SELECT {', '.join(select)} FROM msgs ORDER BY line_no").to_arrow_table())


@dataclass
class FlatRoot:
    """Leaf paths found under one root object (`context`, `properties` or `traits`): per
    table, each path's JSON type counts; and every row's leaf values (lists `s` text and `k`
    JSON type, position i for path i), rows aligned with the envelope."""

    root: str
    leaves: dict[str, dict[tuple[str, ...], dict[str, int]]]
    position: dict[tuple[str, ...], int]
    values: pa.Table | None  # columns s, k (lists), one row per message in line order


def _flatten(con: duckdb.DuckDBPyConnection, root: str, *, calls: tuple[str, ...]) -> FlatRoot:
    """Discover every leaf path under `root` for each table, level by level (one parse for the
    keys and one for their JSON types per level), then extract all leaves in a single parse."""
    where = "call IN (" + ", ".join(f"'{c}'" for c in calls) + ")"
    base = (root,)
    frontier: list[tuple[str, ...]] = [()]
    leaves: dict[str, dict[tuple[str, ...], dict[str, int]]] = {}  # table -> path -> type counts
    depth = 0
    while frontier:
        depth += 1
        ptrs = [pointer(base + p) for p in frontier]
        keys = con.execute(
            f"""
            SELECT DISTINCT i, unnest(ks) AS k FROM (
              SELECT unnest(json_keys(raw, {_sql_list(ptrs)})) AS ks,
                     unnest(range({len(ptrs)})) AS i
              FROM msgs WHERE {where})
            WHERE ks IS NOT NULL
            """
        ).fetchall()
        if not keys:
            break
        child_list = sorted({frontier[i] + (k,) for i, k in keys})
        child_ptrs = [pointer(base + p) for p in child_list]
        kinds = con.execute(
            f"""
            SELECT tbl, i, t, count(*) FROM (
              SELECT tbl, unnest(json_type(raw, {_sql_list(child_ptrs)})) AS t,
                     unnest(range({len(child_ptrs)})) AS i
              FROM msgs WHERE {where})
            WHERE t IS NOT NULL AND t <> 'NULL'
            GROUP BY ALL
            """
        ).fetchall()
        next_frontier: set[tuple[str, ...]] = set()
        for tbl, i, t, n in kinds:
            path = child_list[i]
            if t == "OBJECT" and depth < MAX_DEPTH:
                next_frontier.add(path)
            else:
                leaves.setdefault(tbl, {}).setdefault(path, {})[t] = n
        frontier = sorted(next_frontier)

    all_paths = sorted({p for paths in leaves.values() for p in paths})
    position = {p: i for i, p in enumerate(all_paths)}
    values = None
    if all_paths:
        ptr_list = _sql_list([pointer(base + p) for p in all_paths])
        values = _as_table(con.execute(
            f"""
            SELECT CASE WHEN {where} THEN list_transform(v, lambda x: x->>'$') END AS s,
                   CASE WHEN {where} THEN list_transform(v, lambda x: json_type(x)) END AS k
            FROM (SELECT line_no, call, json_extract(raw, {ptr_list}) AS v FROM msgs)
            ORDER BY line_no
            """
        ).to_arrow_table())
        _refine_types(values, leaves, position, con)
    return FlatRoot(root, {tbl: dict(sorted(paths.items())) for tbl, paths in leaves.items()}, position, values)


def _refine_types(values: pa.Table, leaves: dict, position: dict, con) -> None:
    """Split two kinds out of the JSON types, looking at every value: strings that are all
    ISO-8601 timestamps (TIMESTAMP) and integers beyond 64 bits (HUGEINT)."""
    candidates = sorted({position[p] for paths in leaves.values() for p, kinds in paths.items()
                         if "VARCHAR" in kinds or "UBIGINT" in kinds})
    if not candidates:
        return
    con.register("flat_values", values)
    idx = [i + 1 for i in candidates]
    rows = con.execute(
        f"""
        SELECT tbl, i,
               count(*) FILTER (WHERE k = 'VARCHAR') AS strings,
               count(*) FILTER (WHERE k = 'VARCHAR' AND length(s) BETWEEN 16 AND 40
                                AND substr(s, 5, 1) = '-'
                                AND regexp_full_match(s, '{ISO_TIMESTAMP_RE}')) AS iso,
               count(*) FILTER (WHERE k = 'UBIGINT' AND try_cast(s AS BIGINT) IS NULL) AS huge
        FROM (SELECT m.tbl, unnest(list_select(f.s, {idx})) AS s, unnest(list_select(f.k, {idx})) AS k,
                     unnest({candidates}) AS i
              FROM (SELECT *, row_number() OVER () AS r FROM flat_values) f
              JOIN (SELECT tbl, row_number() OVER (ORDER BY line_no) AS r FROM msgs) m USING (r))
        WHERE k IS NOT NULL
        GROUP BY ALL
        """
    ).fetchall()
    con.unregister("flat_values")
    by_pos = {i: p for p, i in position.items()}
    for tbl, i, strings, iso, huge in rows:
        kinds = leaves.get(tbl, {}).get(by_pos[i])
        if kinds is None:
            continue
        if strings and iso == strings:
            kinds["TIMESTAMP"] = kinds.pop("VARCHAR")
        if huge:
            kinds["UBIGINT"] -= huge
            kinds["HUGEINT"] = huge
            if not kinds["UBIGINT"]:
                del kinds["UBIGINT"]


def _slice(
    env: pa.Table,
    rows: pa.Array,
    tbl: str,
    call: str,
    roots: list[FlatRoot],
    name_map: list[NameMapping] | None,
) -> TableSlice:
    """One table's share of the batch: standard columns, then flattened fields by column name.
    `call == "tracks"` is the `tracks` table: every track, no properties."""
    std_call = "track" if call == "tracks" else call
    values: dict[str, Values] = {}
    picked = env.take(rows)
    for col in COMMON_COLUMNS + EXTRA_COLUMNS[std_call]:
        if col == "id":
            values[col] = Values(picked["message_id"], _const(len(rows), "VARCHAR"))
        elif col == "event":
            values[col] = Values(picked["tbl"], _const(len(rows), "VARCHAR"))
        elif col == "event_text":
            values[col] = Values(picked["event_name"], _const(len(rows), "VARCHAR"))
        else:
            values[col] = Values(picked[col], picked[f"{col}#kind"])

    sources: dict[str, list[tuple[FlatRoot, tuple[str, ...], str]]] = {}
    for flat in roots:
        tables = _tables_of(flat, picked) if call == "tracks" else [tbl]
        paths = sorted({p for t in tables for p in flat.leaves.get(t, {})})
        for path in paths:
            name = column_name(path, context=flat.root == "context", standard=ALL_STANDARD)
            if name is not None:
                sources.setdefault(name, []).append((flat, path, pointer((flat.root,) + path)))
    stats: dict[str, ColumnStats] = {}
    taken: dict[str, tuple[pa.Array, pa.Array]] = {}
    for col in sorted(sources):
        # Keys that collide after snake_case share a column; the byte-wise last key wins
        # (RudderStack's rule), so the result does not depend on key order in the JSON.
        merged_text = merged_kind = None
        col_stats = ColumnStats(sources=tuple(ptr for _, _, ptr in sources[col]))
        for flat, path, _ in sorted(sources[col], key=lambda s: s[2], reverse=True):
            if flat.root not in taken:
                taken[flat.root] = (flat.values["s"].take(rows), flat.values["k"].take(rows))
            s_list, k_list = taken[flat.root]
            kind = pc.list_element(k_list, flat.position[path])
            keep = pc.invert(pc.fill_null(pc.is_in(kind, _NOT_A_VALUE), True))
            text = pc.if_else(keep, pc.list_element(s_list, flat.position[path]), None)
            kind = pc.if_else(keep, kind, None)
            merged_text = text if merged_text is None else pc.coalesce(merged_text, text)
            merged_kind = kind if merged_kind is None else pc.coalesce(merged_kind, kind)
            for t in (_tables_of(flat, picked) if call == "tracks" else [tbl]):
                for k, n in flat.leaves.get(t, {}).get(path, {}).items():
                    col_stats.types[k] = col_stats.types.get(k, 0) + n
        values[col] = Values(merged_text, merged_kind)
        stats[col] = col_stats
        if name_map is not None:
            name_map.extend(NameMapping("column", tbl, ptr, col) for _, _, ptr in sources[col])
    target = "tracks" if call == "tracks" else tbl
    return TableSlice(target, call, picked["line_no"], picked["message_id"], values, stats)


_NOT_A_VALUE = pa.array(["NULL", "OBJECT"])


def _const(n: int, value: str) -> pa.Array:
    return pa.array([value] * n, pa.string()) if n else pa.array([], pa.string())


def _tables_of(flat: FlatRoot, picked: pa.Table) -> list[str]:
    return sorted(set(picked["tbl"].to_pylist()) & set(flat.leaves))
