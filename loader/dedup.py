"""Exactly-once rows: messageId is the key, with no time window unless the user asks for one.

Among the copies of a message in one commit group (its files' batches, as they arrive) the
earliest receivedAt wins (ties: file, then line order): a later batch's earlier copy
supersedes the one the group already holds, which moves to its file's duplicates at the
commit. Against history (earlier groups and runs) the first copy loaded wins. The group is
checked against history ONCE, at its commit, in the same transaction as the insert: the cost
of history is paid per group, not per batch or file.

History is one 128-bit key per loaded message (`_loader.seen_keys`), compact and cheap to
scan. The key's 13th hex digit (a UUID's version nibble) says what it is:

- 4: a lower-case version-4 UUID (as Python's `str(uuid4())` prints one): its 128 bits;
- 5: the same in upper case (as Apple's `UUID().uuidString` prints one): its bits with the
  nibble set to 5, so the two spellings stay two different ids, as they are as text;
- 0: any other id (analytics.js sends `ajs-next-<md5 hex>`, analytics-node
  `node-next-<ms>-<uuid>`): a 124-bit hash of the text. Its text is kept in
  `_loader.seen_texts` and a key hit counts only when the text is equal too, so two
  different ids are never duplicates of each other, even when their hashes collide.

`_loader.seen_messages` is a view giving every loaded id back as text, with file and load.

Both tables also keep the loaded copy's receivedAt (`received_at`, as the `received_at` column
reads it; NULL when it had none, or for rows recorded before the column existed): among a
run's copies the earliest receivedAt wins, and the probe sees from history alone which of the
group's hits may supersede this run's copy, so only those are looked up in the event tables.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loader.batch import FILE_SHIFT, file_index, plain_lines
from loader.normalize import combine_chunks
from loader.spec import ISO_DATE_OR_TIME_RE
from loader.sql import int_list

# Over validated messages (loader/envelope.py: columns message_id, line_no and the envelope
# field "receivedAt" as JSON text). In a batch of several small files (loader/batch.py) this
# ranks within each file only; the group picks the earliest copy among them after the
# tracking plan (fresh_in_group), as loading the files one by one would (a copy blocked in
# one file does not make the next one a duplicate).
# receivedAt as every dedup decision reads it: the parse of the `received_at` column
# (envelope.standard_columns' `received_at#ts`), so a batch boundary never changes a winner.
RECEIVED_AT = (
    f"CASE WHEN json_type(\"receivedAt\") = 'VARCHAR' AND regexp_full_match(\"receivedAt\"->>'$', "
    f"'{ISO_DATE_OR_TIME_RE}') THEN try_cast(trim(\"receivedAt\"->>'$') AS TIMESTAMPTZ) END"
)
IN_BATCH_RANK = (
    f"row_number() OVER (PARTITION BY message_id, line_no >> {FILE_SHIFT} "
    f"ORDER BY {RECEIVED_AT} NULLS LAST, line_no)"
)

SEEN_KEYS = "_loader.seen_keys"
SEEN_TEXTS = "_loader.seen_texts"
SEEN_VIEW = "_loader.seen_messages"

# The hash of an id that is not a UUID, as SQL over `{}` (a VARCHAR); any 128-bit value
# will do, since hits are confirmed on the text. Tests swap it to force collisions.
HASH_SQL = "md5_number({})"

_NIBBLE = "(({k} >> 76) & 15::UHUGEINT)"
_LOWER_V4 = "'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}'"
_UPPER_V4 = "'[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}'"

KEY_DDL = f"""
CREATE TABLE IF NOT EXISTS {SEEN_KEYS} (key UHUGEINT, file_id BIGINT, load_id BIGINT, received_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS {SEEN_TEXTS} (key UHUGEINT, message_id VARCHAR, file_id BIGINT, load_id BIGINT,
                                         received_at TIMESTAMPTZ);
-- key tables of warehouses loaded before receivedAt was kept: their rows' is unknown (NULL)
ALTER TABLE {SEEN_KEYS} ADD COLUMN IF NOT EXISTS received_at TIMESTAMPTZ;
ALTER TABLE {SEEN_TEXTS} ADD COLUMN IF NOT EXISTS received_at TIMESTAMPTZ;
CREATE OR REPLACE VIEW {SEEN_VIEW} AS
    SELECT CASE {_NIBBLE.format(k="key")} WHEN 4 THEN key::UUID::VARCHAR
                ELSE upper((key & ~(1::UHUGEINT << 76))::UUID::VARCHAR) END AS message_id,
           file_id, load_id
    FROM {SEEN_KEYS} WHERE {_NIBBLE.format(k="key")} <> 0
    UNION ALL
    SELECT message_id, file_id, load_id FROM {SEEN_TEXTS};
"""


def key_sql(column: str) -> str:
    """The 128-bit key of the message id in `column` (see the module docstring)."""
    as_bits = f"{column}::UUID::UHUGEINT"
    hashed = HASH_SQL.format(column)
    return (
        f"CASE WHEN regexp_full_match({column}, {_LOWER_V4}) THEN {as_bits} "
        f"WHEN regexp_full_match({column}, {_UPPER_V4}) THEN {as_bits} | (1::UHUGEINT << 76) "
        f"ELSE {hashed}::UHUGEINT & ~(15::UHUGEINT << 76) END"
    )


def is_hashed_sql(key: str) -> str:
    return f"{_NIBBLE.format(k=key)} = 0"


def ensure_history(con: duckdb.DuckDBPyConnection) -> None:
    """Create the key tables, converting a warehouse that still holds the text layout
    (`seen_messages`, a table of VARCHAR ids). Run it inside the transaction that creates
    the metadata: a crash leaves either the old layout or the new one, and a second call
    finds nothing to do."""
    old = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '_loader' "
        "AND table_name = 'seen_messages' AND table_type = 'BASE TABLE'"
    ).fetchone()[0]
    if old:
        con.execute(f"ALTER TABLE {SEEN_VIEW} RENAME TO seen_messages_text")
    con.execute(KEY_DDL)
    if old:
        # In load order, so that a dedup window's `load_id >=` skips whole row groups.
        _record(con, f"(SELECT {key_sql('message_id')} AS key, message_id, file_id, load_id "
                     "FROM _loader.seen_messages_text ORDER BY load_id, file_id)")
        con.execute("DROP TABLE _loader.seen_messages_text")


def _record(con: duckdb.DuckDBPyConnection, keyed: str, *, received_at: bool = False) -> None:
    """Add to history the rows of `keyed` (key, message_id, file_id, load_id, and received_at
    when `received_at`; else it is left NULL: unknown)."""
    extra = ", received_at" if received_at else ""
    con.execute(f"INSERT INTO {SEEN_KEYS} BY NAME SELECT key, file_id, load_id{extra} FROM {keyed}")
    con.execute(f"INSERT INTO {SEEN_TEXTS} BY NAME SELECT key, message_id, file_id, load_id{extra} FROM {keyed} "
                f"WHERE {is_hashed_sql('key')}")


_group_numbers = itertools.count(1)


@dataclass
class GroupState:
    """The ids one open commit group holds (message_id, file_id, line, received_at), in a
    temp table of the warehouse connection that this object owns: its name is unique per
    group, and only functions handed this object read or write it (`fresh_in_group`,
    `probe_history`). Made by `begin_group` inside the group's transaction; `close` drops it
    before COMMIT (a ROLLBACK drops it with the transaction), so no group leaves a table behind
    and no group sees another's ids. The ids stay in DuckDB because the probe of history is
    a join there."""

    con: duckdb.DuckDBPyConnection
    name: str  # unique per group: its temp tables' names start with it
    closed: bool = False

    @property
    def table(self) -> str:
        return self.scratch("ids")

    def scratch(self, what: str) -> str:
        """The name of one of this group's temp tables (the probe drops its own where it
        makes them)."""
        return f"{self.name}_{what}"

    def close(self) -> None:
        """Drop the group's table (in its transaction, before COMMIT). Idempotent."""
        if not self.closed:
            self.closed = True
            self.con.execute(f"DROP TABLE IF EXISTS {self.table}")


def begin_group(con: duckdb.DuckDBPyConnection) -> GroupState:
    """The state of a new commit group: an empty temp table of its own."""
    group = GroupState(con, f"commit_group_{next(_group_numbers)}")
    con.execute(f"CREATE TEMP TABLE {group.table} "
                "(message_id VARCHAR, file_id BIGINT, line BIGINT, received_at TIMESTAMPTZ)")
    return group


# The copy of a message that wins among several: the earliest receivedAt (none: last), then
# the earliest file and line (a unit's line numbers carry the file's index in their high bits).
EARLIEST_FIRST = "received_at NULLS LAST, line_no"


def fresh_in_group(group: GroupState, messages: pa.Table, *,
                   file_id: int | None = None) -> tuple[pa.Table, pa.Table]:
    """Split the batch's messages (line_no, message_id, received_at) against the open `group`:
    returns the messages that win (new to the group, or earlier than the group's copy: they
    join the group) and the (file_id, line) of the group's copies they supersede (those rows
    become duplicates of their files at the commit). History is checked once, at the
    group's commit. A batch of several small files gives each row's `file_id` and `line` in
    the file as columns instead of `file_id`; among its own copies of a message the earliest
    wins (EARLIEST_FIRST)."""
    con, table = group.con, group.table
    con.register("batch_messages", messages)
    if file_id is None:
        batch = (f"(SELECT * FROM batch_messages QUALIFY row_number() OVER "
                 f"(PARTITION BY message_id ORDER BY {EARLIEST_FIRST}) = 1)")
        rows = "message_id, file_id, line, received_at"
        columns = "m.line_no, m.message_id, m.received_at, m.file_id, m.line"
    else:
        batch = "batch_messages"  # ids are unique: the in-batch dedup (envelope.route) ran
        rows = f"message_id, {int(file_id)}, line_no, received_at"
        columns = "m.line_no, m.message_id, m.received_at"
    # A group's copy stays unless this one was received strictly earlier: the group's copy
    # comes from an earlier file or line, so it wins a tie.
    winners = con.sql(
        f"SELECT {columns}, g.file_id AS superseded_file_id, g.line AS superseded_line "
        f"FROM {batch} m LEFT JOIN {table} g ON g.message_id = m.message_id "
        "WHERE g.message_id IS NULL OR m.received_at < g.received_at "
        "OR (g.received_at IS NULL AND m.received_at IS NOT NULL)"
    ).to_arrow_table()
    con.unregister("batch_messages")
    superseded = pa.table({"file_id": winners["superseded_file_id"], "line": winners["superseded_line"]})
    superseded = superseded.filter(pc.is_valid(superseded["file_id"]))
    fresh = winners.drop_columns(["superseded_file_id", "superseded_line"])
    con.register("fresh_messages", fresh)
    if superseded.num_rows:
        con.execute(f"DELETE FROM {table} WHERE message_id IN (SELECT message_id FROM fresh_messages)")
    con.execute(f"INSERT INTO {table} SELECT {rows} FROM fresh_messages")
    con.unregister("fresh_messages")
    return fresh, superseded


def fresh_in_files(group: GroupState, messages: pa.Table,
                   file_ids: list[int]) -> tuple[pa.Table, pa.Table]:
    """`fresh_in_group` for a batch whose line numbers carry the index of their file in
    `file_ids` (loader/batch.py); most batches have one file."""
    if len(file_ids) == 1:
        return fresh_in_group(group, messages, file_id=file_ids[0])
    lines = messages["line_no"]
    ids = np.asarray(file_ids, dtype=np.int64)
    return fresh_in_group(group, messages.append_column("file_id", pa.array(ids[file_index(lines)]))
                          .append_column("line", plain_lines(lines)))


def line_mask(lines: pa.ChunkedArray, fresh_lines: pa.ChunkedArray):
    """A function from a slice's line numbers to "is fresh" flags: one lookup table per
    batch rather than a hash set per slice (line numbers of one file's batch are a dense
    range; a unit of several files falls back to a hash lookup)."""
    low = pc.min(lines).as_py() or 0
    high = pc.max(lines).as_py() or 0
    if high - low > 4 * len(lines) + 1024:  # sparse: batch envelopes (http_batch.py), units of files (batch.py)
        fresh = combine_chunks(fresh_lines) if len(fresh_lines) else pa.array([], pa.int64())
        return lambda slice_lines: pc.is_in(combine_chunks(slice_lines), value_set=fresh)
    flags = np.zeros(high - low + 1, dtype=bool)
    if len(fresh_lines):
        flags[fresh_lines.to_numpy() - low] = True

    def keep(slice_lines) -> pa.Array:
        return pa.array(flags[combine_chunks(slice_lines).to_numpy(zero_copy_only=False) - low])

    return keep


def window_start(con: duckdb.DuckDBPyConnection, days: float | None) -> int | None:
    """The first load id inside a dedup window of `days` (None: no window, all history)."""
    if days is None:
        return None
    first = con.execute(
        "SELECT min(load_id) FROM _loader.loads WHERE started_at >= now() - to_microseconds(?::BIGINT)",
        [int(days * 86_400_000_000)],
    ).fetchone()[0]
    return first if first is not None else 1 << 62


def probe_history(group: GroupState, *, load_id: int, since_load: int | None = None,
                  run_loads: tuple[int, ...] = ()) -> pa.Table:
    """One probe of the whole `group` against history (loads >= `since_load` when a window
    is set): returns the group's messages loaded before (file_id, line, message_id,
    received_at), with `run_file_id`, the file of history's copy when THIS run loaded it
    (`load_id`, or one of the interrupted `run_loads` it continues), else NULL, and that
    copy's receivedAt as history holds it (`run_received_at`): among a run's copies the
    earliest receivedAt wins, which the writer settles (`writer.settle_group`).
    Records the group's other messages as loaded by `load_id`. Only the key hits of hashed
    ids read their texts. Its intermediate tables (the group's keys and hits, named after
    the group) are dropped before it returns, also when it fails."""
    con = group.con
    keys, hits_table, texts, confirmed = (group.scratch(w) for w in ("keys", "hits", "text_hits", "confirmed"))
    window = "" if since_load is None else f" WHERE load_id >= {int(since_load)}"
    try:
        # Materialised once: the keys are read by the probe, the record and the run's lookup.
        con.execute(f"""
            CREATE TEMP TABLE {keys} AS
            SELECT {key_sql('message_id')} AS key, message_id, file_id, line, received_at FROM {group.table}""")
        con.execute(f"""
            CREATE TEMP TABLE {hits_table} AS
            SELECT g.* FROM {keys} g SEMI JOIN (SELECT key FROM {SEEN_KEYS}{window}) s ON s.key = g.key""")
        if con.execute(f"SELECT count(*) FROM {hits_table} WHERE {is_hashed_sql('key')}").fetchone()[0]:
            # In two steps, so that only the candidates' texts are read (3x faster at 10M texts):
            # the row ids of the texts with a hit key (a scan of the key column), then those rows.
            con.execute(f"""
                CREATE TEMP TABLE {texts} AS
                SELECT h.file_id, h.line, h.message_id, s.rid FROM {hits_table} h
                JOIN (SELECT rowid AS rid, key FROM {SEEN_TEXTS}{window}) s ON s.key = h.key""")
            con.execute(f"""
                CREATE TEMP TABLE {confirmed} AS
                SELECT * FROM {hits_table} WHERE NOT {is_hashed_sql('key')}
                UNION ALL
                SELECT g.* FROM {hits_table} g SEMI JOIN (
                    SELECT c.file_id, c.line FROM {texts} c JOIN (
                        SELECT t.rowid AS rid, t.message_id FROM {SEEN_TEXTS} t
                        SEMI JOIN {texts} c ON t.rowid = c.rid) t
                    ON t.rid = c.rid AND t.message_id = c.message_id) x
                ON x.file_id = g.file_id AND x.line = g.line""")
            hits_table = confirmed
        _record(con, f"(SELECT g.key, g.message_id, g.file_id, {int(load_id)} AS load_id, g.received_at "
                     f"FROM {keys} g ANTI JOIN {hits_table} h ON h.file_id = g.file_id AND h.line = g.line)",
                received_at=True)
        hits = con.sql(f"SELECT file_id, line, message_id, received_at FROM {hits_table}").to_arrow_table()
        if hits.num_rows:
            # Where history's copy is this run's (its loads' rows, at the end of the key table).
            loads = int_list((load_id, *run_loads))
            run_copies = con.sql(f"""
                SELECT h.file_id, h.line, s.file_id AS run_file_id, s.received_at AS run_received_at
                FROM {hits_table} h
                JOIN (SELECT key, file_id, received_at FROM {SEEN_KEYS} WHERE load_id IN ({loads})) s ON s.key = h.key
                WHERE NOT {is_hashed_sql('h.key')}
                UNION ALL
                SELECT h.file_id, h.line, s.file_id, s.received_at FROM {hits_table} h
                JOIN (SELECT key, message_id, file_id, received_at FROM {SEEN_TEXTS} WHERE load_id IN ({loads})) s
                  ON s.key = h.key AND s.message_id = h.message_id""").to_arrow_table()
            return hits.join(run_copies, ["file_id", "line"], join_type="left outer")
        return hits.append_column("run_file_id", pa.array([], pa.int64())).append_column(
            "run_received_at", pa.array([], pa.timestamp("us", tz="UTC")))
    finally:
        try:
            for table in (keys, group.scratch("hits"), texts, confirmed):
                con.execute(f"DROP TABLE IF EXISTS {table}")
        except duckdb.TransactionException:
            pass  # the probe failed and aborted the transaction: its ROLLBACK drops them


def move_history(con: duckdb.DuckDBPyConnection, moved: pa.Table, *, load_id: int,
                 run_loads: tuple[int, ...]) -> None:
    """History's rows of superseded copies (message_id, run_file_id: the copy's file) now
    name the superseding copy's file (file_id), its receivedAt and this load. A hashed key's twin in the
    same file (a 124-bit collision) would move too: harmless, its text decides hits. (Keys
    are recomputed here: a UHUGEINT does not survive Arrow, which has no 128-bit integer.)"""
    loads = int_list((load_id, *run_loads))
    con.register("moved_history", moved)
    try:
        for table in (SEEN_KEYS, SEEN_TEXTS):
            texts = " AND t.message_id = m.message_id" if table == SEEN_TEXTS else ""
            con.execute(f"""
                UPDATE {table} t SET file_id = m.file_id, load_id = {int(load_id)}, received_at = m.received_at
                FROM moved_history m
                WHERE t.key = {key_sql('m.message_id')} AND t.file_id = m.run_file_id
                  AND t.load_id IN ({loads}){texts}""")
    finally:
        con.unregister("moved_history")
