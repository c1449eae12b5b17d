"""Dedup: 128-bit keys, one probe of history per commit group, the text layout's migration,
and the optional window. Fixture tables: (file, line, id, receivedAt) -> loaded or duplicate."""

import datetime as dt
import json

import duckdb
import pyarrow as pa
import pytest
from conftest import cli, event, query, run_load, write_ndjson

from loader import batch, dedup, read, writer

LOWER = "0f4f3a2c-1b2d-4c3e-8f9a-0123456789ab"
UPPER = LOWER.upper()
LOWER_BITS = int(LOWER.replace("-", ""), 16)


@pytest.mark.parametrize(("message_id", "key"), [
    (LOWER, LOWER_BITS),  # lower-case v4 (Python's str(uuid4())): nibble 4
    (UPPER, LOWER_BITS | 1 << 76),  # upper case (Apple's UUID().uuidString): nibble 5
    ("node-next-1668208232027-743be593-7789-4b74-8078-cbcc8894c586", "hashed"),
    ("ajs-next-b4a4d6ac0c4cf2f1c5a1a5e2a1f0c9d8", "hashed"),
    ("0f4f3a2c-1b2d-1c3e-8f9a-0123456789ab", "hashed"),  # version 1: not v4
    ("0f4f3a2c-1b2d-4c3e-cf9a-0123456789ab", "hashed"),  # not the RFC variant
    ("0F4F3A2C-1b2d-4c3e-8f9a-0123456789ab", "hashed"),  # mixed case
    ("{" + LOWER + "}", "hashed"),
    ("0f4f3a2c1b2d4c3e8f9a0123456789ab", "hashed"),  # no hyphens
    ("m1", "hashed"),
    ("", "hashed"),
])
def test_key_of_each_id_form(message_id, key):
    con = duckdb.connect()
    got, md5 = con.execute(f"SELECT {dedup.key_sql('$1')}, md5_number($1)", [message_id]).fetchone()
    if key == "hashed":
        assert (got >> 76) & 15 == 0 and got == md5 & ~(15 << 76)
    else:
        assert got == key


def test_history_view_gives_every_id_back_as_sent(tmp_path, db):
    ids = [LOWER, UPPER, "node-next-1-" + LOWER, "ajs-next-x", "m1", "ünïcode ✓"]
    path = write_ndjson(tmp_path / "a.ndjson", [event(i, messageId=i) for i in ids])
    result = run_load([path], db)
    assert result.files[0].rows_loaded == len(ids)
    assert sorted(r[0] for r in query(db, "SELECT message_id FROM _loader.seen_messages")) == sorted(ids)
    assert query(db, "SELECT count(*) FROM _loader.seen_keys") == [(6,)]
    assert query(db, "SELECT count(*) FROM _loader.seen_texts") == [(4,)]  # the ids that are not UUIDs


# (file, line, messageId, receivedAt) -> kept. One run: among all its copies the earliest
# receivedAt wins (ties: file, then line order), whichever batch, file or commit group holds it.
FIXTURE = [
    ("a", 1, "m1", "2024-03-01T10:00:05Z", False),
    ("a", 2, "m1", "2024-03-01T10:00:01Z", False),  # earliest in its file, but b:1 is earlier
    ("a", 3, "m2", "2024-03-01T10:00:00Z", True),  # tie: first line
    ("a", 4, "m2", "2024-03-01T10:00:00Z", False),
    ("a", 5, LOWER, "2024-03-01T10:00:00Z", True),
    ("a", 6, UPPER, "2024-03-01T10:00:00Z", True),  # another spelling: another id
    ("b", 1, "m1", "2024-03-01T09:00:00Z", True),  # a later file, but received earliest
    ("b", 2, LOWER, "2024-03-01T10:00:00Z", False),  # tie: the first file
    ("b", 3, "m3", None, False),  # no receivedAt sorts last
    ("b", 4, "m3", "2024-03-01T10:00:00Z", False),
    ("c", 1, "m3", "2024-03-01T08:00:00Z", True),
    ("c", 2, UPPER, "2024-03-01T10:00:00Z", False),
    ("c", 3, "m4", "2024-03-01T10:00:00Z", True),
]


def _write_fixture(root, rows):
    paths = {}
    for name in dict.fromkeys(r[0] for r in rows):
        lines = [event(mid, messageId=mid, receivedAt=at, properties={"at": f"{name}:{line}"})
                 for f, line, mid, at, _ in rows if f == name]
        paths[name] = write_ndjson(root / f"{name}.ndjson", lines)
    return list(paths.values())


@pytest.mark.parametrize("group_rows", [1, 5, 100_000])
def test_fixture_table_in_one_run(tmp_path, db, group_rows):
    """A transaction per file, a few files per group or one group: the same rows win."""
    result = run_load(_write_fixture(tmp_path, FIXTURE), db, commit_every_rows=group_rows)
    kept = sorted(f"{f}:{line}" for f, line, *_, keep in FIXTURE if keep)
    assert sorted(r[0] for r in query(db, 'SELECT "at" FROM segment.signed_up')) == kept
    for f, name in zip(result.files, "abc", strict=True):
        rows = [r for r in FIXTURE if r[0] == name]
        assert (f.rows_loaded, f.duplicates) == (sum(r[4] for r in rows), sum(not r[4] for r in rows))
    assert sorted(query(db, "SELECT path, rows_loaded, duplicates FROM _loader.files")) == sorted(
        (f.path, f.rows_loaded, f.duplicates) for f in result.files)
    # `tracks` holds the same winners; history holds each id once, under the winner's file
    assert query(db, "SELECT count(*) FROM segment.tracks t SEMI JOIN segment.signed_up s ON s.id = t.id "
                     "AND s.received_at = t.received_at") == [(len(kept),)]
    assert query(db, "SELECT count(*) FROM segment.tracks") == [(len(kept),)]
    winners = {mid: f"{tmp_path / f}.ndjson" for f, _, mid, _, keep in FIXTURE if keep}
    assert dict(query(db, "SELECT s.message_id, f.path FROM _loader.seen_messages s "
                          "JOIN _loader.files f USING (file_id)")) == winners


def test_first_copy_loaded_across_runs_wins(tmp_path, db):
    """Across runs the first copy loaded wins, however early a later run's copy was received."""
    first, second = _write_fixture(tmp_path / "1", FIXTURE[:6]), _write_fixture(tmp_path / "2", FIXTURE[6:])
    run_load(first, db)
    result = run_load(second, db)
    assert [(f.rows_loaded, f.duplicates) for f in result.files] == [(0, 4), (2, 1)]  # b:1 came too late
    kept = ["a:2", "a:3", "a:5", "a:6", "c:1", "c:3"]
    assert sorted(r[0] for r in query(db, 'SELECT "at" FROM segment.signed_up')) == kept
    assert query(db, "SELECT count(*), count(DISTINCT message_id) FROM _loader.seen_messages") == [(6, 6)]


@pytest.mark.parametrize("group_rows", [1, 100_000])
def test_forced_hash_collision_loses_no_row(tmp_path, db, monkeypatch, group_rows):
    """Every id that is not a UUID gets the same key, equal to a UUID's bits: only exact
    repeats of an id are duplicates, in the group and across runs."""
    monkeypatch.setattr(dedup, "HASH_SQL", f"'{LOWER}'::UUID::UHUGEINT + 0 * length({{}})")
    one = write_ndjson(tmp_path / "1.ndjson", [event(i) for i in ("a", "b", "c", "a")] + [event(LOWER, messageId=LOWER)])
    two = write_ndjson(tmp_path / "2.ndjson", [event(i) for i in ("b", "d", "e")])
    first = run_load([one, two], db, commit_every_rows=group_rows)
    assert [(f.rows_loaded, f.duplicates) for f in first.files] == [(4, 1), (2, 1)]
    three = write_ndjson(tmp_path / "3.ndjson", [event(i) for i in ("e", "f", "a", "g")])
    again = run_load([three], db)
    assert (again.files[0].rows_loaded, again.files[0].duplicates) == (2, 2)
    ids = ["ma", "mb", "mc", "md", "me", "mf", "mg"]
    assert sorted(r[0] for r in query(db, "SELECT id FROM segment.signed_up")) == sorted([*ids, LOWER])
    assert query(db, "SELECT count(DISTINCT key) FROM _loader.seen_keys") == [(2,)]  # the collision is real


def test_history_duplicates_drop_their_discards_and_violations(tmp_path, db):
    """Found in history only at the group's commit, a re-sent copy's discards and tracking
    plan violations go with it, and the manifest counts it as a duplicate."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"rules": {"events": [{"name": "Signed Up", "rules": {"properties": {
        "type": "object", "properties": {"seats": {"type": "integer"}}}}}]}}))
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(1, properties={"seats": 1})])], db)
    again = write_ndjson(tmp_path / "2.ndjson", [event(1, properties={"seats": "many"}),
                                                 event(2, properties={"seats": "lots"})])
    result = run_load([again], db, tracking_plan=str(plan))
    f = result.files[0]
    assert (f.rows_loaded, f.duplicates, f.discards, f.violations) == (1, 1, 1, 1)
    assert query(db, "SELECT message_id FROM _loader.discards") == [("m2",)]
    assert query(db, "SELECT message_id FROM _loader.violations") == [("m2",)]
    assert query(db, "SELECT rows_loaded, duplicates, discards FROM _loader.files WHERE path = ?",
                 [str(again)]) == [(1, 1, 1)]


@pytest.mark.parametrize("group_rows", [1, 100_000])
@pytest.mark.parametrize("one_batch", [True, False])
def test_earlier_received_copy_in_a_later_file_supersedes(tmp_path, db, monkeypatch, group_rows, one_batch):
    """The superseded copy leaves with everything it brought: its row, its discards and
    tracking-plan violations, its say in `users`; its file counts it as a duplicate. The same
    whether the two files share a batch, a commit group, or neither."""
    if not one_batch:
        monkeypatch.setattr(batch, "SMALL_FILE_BYTES", 0)  # every file a batch of its own
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"rules": {"identify": {"type": "object", "properties": {"traits": {
        "type": "object", "properties": {"seats": {"type": "integer"}}}}}}}))
    run_load([write_ndjson(tmp_path / "0.ndjson", [identify(0, seats=1)])], db)  # seats: BIGINT
    late = write_ndjson(tmp_path / "a.ndjson", [identify(1, plan="free", seats="many", at="10:00:05")])
    early = write_ndjson(tmp_path / "b.ndjson", [identify(1, plan="pro", seats=2, at="09:00:00")])
    result = run_load([late, early], db, commit_every_rows=group_rows, tracking_plan=str(plan))
    counts = [(f.rows_loaded, f.duplicates, f.discards, f.violations) for f in result.files]
    assert counts == [(0, 1, 0, 0), (1, 0, 0, 0)]
    assert query(db, "SELECT path, rows_loaded, duplicates, discards FROM _loader.files WHERE load_id = 2 "
                     "ORDER BY path") == [(str(late), 0, 1, 0), (str(early), 1, 0, 0)]
    assert query(db, "SELECT plan, seats FROM segment.identifies WHERE id = 'm1'") == [("pro", 2)]
    assert query(db, "SELECT plan, seats FROM segment.users WHERE id = 'u1'") == [("pro", 2)]
    assert query(db, "SELECT count(*) FROM _loader.discards") == [(0,)]
    assert query(db, "SELECT count(*) FROM _loader.violations") == [(0,)]
    assert query(db, "SELECT rows_loaded, duplicates FROM _loader.loads WHERE load_id = 2") == [(1, 1)]


def identify(i: int, *, at: str = "10:00:00", **traits) -> dict:
    return {"messageId": f"m{i}", "type": "identify", "userId": f"u{i}", "traits": traits,
            "receivedAt": f"2024-03-01T{at}Z", "timestamp": "2024-03-01T10:00:00Z"}


def tagged(mid: str, received: str, tag: str, **fields) -> dict:
    return event(0, messageId=mid, receivedAt=received, properties={"tag": tag}, **fields)


def test_received_at_is_read_alike_within_and_across_batches(tmp_path, monkeypatch):
    """`2024-03-01 08:00:00 UTC` is no ISO-8601 timestamp (no receivedAt, sorts last) in the
    in-batch rank as in the group and history checks, so batch boundaries change no winner."""
    pad = {"pad": "x" * 600}
    lines = [tagged("m1", "2024-03-01 08:00:00 UTC", "first", context=pad)]
    lines += [tagged(f"f{i}", "2024-03-01T10:00:00Z", "f", context=pad) for i in range(6)]
    lines += [tagged("m1", "2024-03-01T10:00:00Z", "last", context=pad)]
    path = write_ndjson(tmp_path / "a.ndjson", lines)
    run_load([path], tmp_path / "one.duckdb")
    monkeypatch.setattr(read, "READ_CHUNK_BYTES", 1000)
    monkeypatch.setattr(batch, "SMALL_FILE_BYTES", 0)
    streamed = run_load([path], tmp_path / "streamed.duckdb", batch_bytes=2000)
    assert sum(f.lines for f in streamed.files) == len(lines)
    q = "SELECT tag FROM segment.signed_up WHERE id = 'm1'"
    assert query(tmp_path / "one.duckdb", q) == query(tmp_path / "streamed.duckdb", q) == [("last",)]


def test_the_in_batch_winner_is_the_earliest_as_the_group_reads_it(tmp_path, db):
    a = write_ndjson(tmp_path / "a.ndjson", [tagged("m1", "2024-03-01 08:00:00 UTC", "a1"),
                                             tagged("m1", "2024-03-01T09:00:00Z", "a2")])
    b = write_ndjson(tmp_path / "b.ndjson", [tagged("m1", "2024-03-01T09:30:00Z", "b")])
    run_load([a, b], db)
    assert query(db, "SELECT tag FROM segment.signed_up") == [("a2",)]


def _to_text_layout(db):
    """Rewrite a warehouse's history as the loader wrote it before 128-bit keys."""
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE _loader.old AS SELECT * FROM _loader.seen_messages")
    con.execute("DROP VIEW _loader.seen_messages")
    con.execute("DROP TABLE _loader.seen_keys")
    con.execute("DROP TABLE _loader.seen_texts")
    con.execute("CREATE TABLE _loader.seen_messages (message_id VARCHAR, file_id BIGINT, load_id BIGINT)")
    con.execute("INSERT INTO _loader.seen_messages SELECT * FROM _loader.old")
    con.execute("DROP TABLE _loader.old")
    con.close()


def test_text_layout_is_converted_on_first_connect(tmp_path, db, monkeypatch):
    ids = [LOWER, UPPER, "node-next-1-" + LOWER, "m1", "m2"]
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(i, messageId=i) for i in ids])], db)
    before = sorted(query(db, "SELECT * FROM _loader.seen_messages"))
    _to_text_layout(db)
    assert query(db, "SELECT table_type FROM information_schema.tables WHERE table_name = 'seen_messages'") == [
        ("BASE TABLE",)]

    # A conversion that fails half-way (here: hashing raises) leaves the text layout as it was.
    monkeypatch.setattr(dedup, "HASH_SQL", "error('hash failed: ' || {})")
    con = writer.connect(str(db))
    with pytest.raises(duckdb.Error, match="hash failed"):
        writer.ensure_metadata(con, "segment")
    con.close()
    assert sorted(query(db, "SELECT * FROM _loader.seen_messages")) == before
    monkeypatch.undo()

    second = write_ndjson(tmp_path / "2.ndjson", [event(i, messageId=i) for i in [*ids[::2], "m3"]])
    result = run_load([second], db)
    assert (result.files[0].rows_loaded, result.files[0].duplicates) == (1, 3)
    after = sorted(query(db, "SELECT * FROM _loader.seen_messages"))
    assert [r for r in after if r[0] != "m3"] == before and len(after) == len(before) + 1
    assert query(db, "SELECT count(*) FROM _loader.seen_keys") == [(6,)]
    con = writer.connect(str(db))  # the second connect finds nothing to convert
    writer.ensure_metadata(con, "segment")
    con.close()
    assert sorted(query(db, "SELECT * FROM _loader.seen_messages")) == after


def test_dedup_window_counts_only_recent_runs(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(1), event(2)])], db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE _loader.loads SET started_at = started_at - INTERVAL 10 DAY")
    con.close()
    run_load([write_ndjson(tmp_path / "2.ndjson", [event(3)])], db)
    resent = write_ndjson(tmp_path / "3.ndjson", [event(1), event(3), event(4)])

    windowed = run_load([resent], db, dedup_window_days=7)  # m1 is older than the window
    assert (windowed.files[0].rows_loaded, windowed.files[0].duplicates) == (2, 1)
    exact = run_load([resent], db, force=True)  # no window: every id ever loaded counts
    assert (exact.files[0].rows_loaded, exact.files[0].duplicates) == (0, 3)
    assert query(db, "SELECT count(*) FROM segment.signed_up WHERE id = 'm1'") == [(2,)]


def test_dedup_window_option(tmp_path, db):
    path = write_ndjson(tmp_path / "a.ndjson", [event(1)])
    assert cli("load", str(path), "--db", str(db), "--dedup-window", "0").returncode == 2
    ok = cli("load", str(path), "--db", str(db), "--dedup-window", "30", "--json")
    assert ok.returncode == 0 and '"rows_loaded": 1' in ok.stdout


def test_history_keeps_the_winning_copys_received_at(tmp_path, db):
    """Each history row holds its copy's receivedAt (NULL: none); when an earlier-received
    copy supersedes one of the run's, the row names the winner's file and receivedAt."""
    late = write_ndjson(tmp_path / "a.ndjson", [tagged(LOWER, "2024-03-01T10:00:05Z", "late"),
                                                tagged("ajs-1", "2024-03-01T10:00:05Z", "late"),
                                                tagged("none", None, "x")])
    early = write_ndjson(tmp_path / "b.ndjson", [tagged(LOWER, "2024-03-01T09:00:00Z", "early"),
                                                 tagged("ajs-1", "2024-03-01T09:00:00Z", "early")])
    run_load([late, early], db, commit_every_rows=1)  # two groups: the second supersedes
    assert query(db, "SELECT tag FROM segment.signed_up ORDER BY id") == [("early",), ("early",), ("x",)]
    b = query(db, "SELECT file_id FROM _loader.files WHERE path = ?", [str(early)])[0][0]
    a = query(db, "SELECT file_id FROM _loader.files WHERE path = ?", [str(late)])[0][0]
    def at(table, message_id):
        return query(db, f"SELECT file_id, received_at::VARCHAR FROM {table}, (SELECT ?::VARCHAR AS m) "
                         f"WHERE key = {dedup.key_sql('m')}", [message_id])
    assert at(dedup.SEEN_KEYS, LOWER) == [(b, "2024-03-01 09:00:00+00")]
    assert at(dedup.SEEN_TEXTS, "ajs-1") == [(b, "2024-03-01 09:00:00+00")]
    assert at(dedup.SEEN_TEXTS, "none") == [(a, None)]


def test_history_of_an_older_layout_gets_received_at_and_unknown_copies_are_looked_up(tmp_path, db):
    """Key tables written before receivedAt was kept get the column (NULL: unknown) on the next
    connect; a run continuing an interrupted run whose history rows have no receivedAt still
    lets an earlier-received copy win (its copy is looked up in the event tables)."""
    late = write_ndjson(tmp_path / "a.ndjson", [tagged(LOWER, "2024-03-01T10:00:05Z", "late"),
                                                tagged("ajs-1", "2024-03-01T10:00:05Z", "late")])
    run_load([late], db)
    con = duckdb.connect(str(db))  # killed before its end, by a loader without the column
    con.execute("UPDATE _loader.loads SET status = 'running', finished_at = NULL")
    for table in (dedup.SEEN_KEYS, dedup.SEEN_TEXTS):
        con.execute(f"ALTER TABLE {table} DROP COLUMN received_at")
    con.close()
    early = write_ndjson(tmp_path / "b.ndjson", [tagged(LOWER, "2024-03-01T09:00:00Z", "early"),
                                                 tagged("ajs-1", "2024-03-01T09:00:00Z", "early")])
    result = run_load([late, early], db)  # the continuation: the first file is skipped
    assert [(f.status, f.rows_loaded, f.duplicates) for f in result.files] == [("skipped", 0, 0), ("loaded", 2, 0)]
    assert query(db, "SELECT tag FROM segment.signed_up") == [("early",), ("early",)]
    assert query(db, "SELECT rows_loaded, duplicates FROM _loader.files ORDER BY file_id") == [(0, 2), (2, 0)]
    assert query(db, f"SELECT count(*), count(received_at) FROM {dedup.SEEN_KEYS}") == [(2, 2)]  # the winners'


def test_only_hits_history_says_may_supersede_are_looked_up(tmp_path, db):
    """`writer._superseding` reads history's receivedAt of the run's copy: a hit received
    after it is no candidate, whatever the event table holds; an unknown one is looked up."""
    run_load([write_ndjson(tmp_path / "a.ndjson", [tagged("m1", "2024-03-01T10:00:00Z", "a")])], db)
    ts = pa.timestamp("us", tz="UTC")
    def hit(run_received_at):
        return pa.table({"file_id": [9], "line": [1], "message_id": ["m1"],
                         "received_at": pa.array([dt.datetime(2024, 3, 1, 9, tzinfo=dt.UTC)], ts),
                         "run_file_id": [1], "run_received_at": pa.array([run_received_at], ts)})
    con = writer.connect(str(db))
    try:
        # history (here: stated) says the run's copy came at 08:00, before this 09:00 copy
        assert writer._superseding(con, "segment", hit(dt.datetime(2024, 3, 1, 8, tzinfo=dt.UTC)), (1,)).num_rows == 0
        # unknown: the event table's 10:00 decides
        found = writer._superseding(con, "segment", hit(None), (1,))
        assert found.select(["message_id", "tbl"]).to_pylist() == [{"message_id": "m1", "tbl": "signed_up"}]
    finally:
        con.close()
