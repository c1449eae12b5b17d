"""End-to-end behaviour of loads against real DuckDB files."""

import json
import random
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli, event, query, run_load, table_snapshot, write_ndjson

from loader import LoadConfig, load
from loader.errors import DatabaseLockedError


def archive(tmp_path, name="logs"):
    """A small multi-file archive in Segment's S3 layout, with cross-file duplicates."""
    root = tmp_path / name / "segment-logs" / "web" / "1709251200000"
    files = [
        write_ndjson(root / "01.gz", [event(1), event(2), event(3, event="Order Completed",
                     properties={"order_id": "o1", "total": 10, "currency": "USD"})]),
        write_ndjson(root / "02.gz", [event(3, event="Order Completed",
                     properties={"order_id": "o1", "total": 10, "currency": "USD"}),
                     event(4, type="identify", traits={"email": "a@x.io", "plan": "free"}),
                     event(5, event="Order Completed", properties={"order_id": "o2", "total": 12.5})]),
        write_ndjson(root / "03.gz", [event(6, type="page", anonymousId="anon-1", userId=None,
                     name="Home", properties={"url": "https://x.io/"}),
                     event(7, type="identify", userId="u4", traits={"plan": "pro"},
                           timestamp="2024-03-02T10:00:00.000Z"),
                     event(8, type="page", anonymousId="anon-1", userId=None, name="Pricing"),
                     event(9, properties={"plan": "team"}),
                     "not json at all"]),
    ]
    return files


def test_load_builds_segment_tables(tmp_path, db):
    result = run_load(archive(tmp_path), db)
    assert result.summary()["files_loaded"] == 3
    assert {r[0] for r in query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'segment'")} == {
        "tracks", "signed_up", "order_completed", "identifies", "users", "pages"}
    assert query(db, "SELECT count(*) FROM segment.tracks")[0][0] == 5
    assert query(db, "SELECT id, order_id, total, event, event_text, source_id FROM segment.order_completed ORDER BY id") == [
        ("m3", "o1", 10.0, "order_completed", "Order Completed", "web"),
        ("m5", "o2", 12.5, "order_completed", "Order Completed", "web"),
    ]
    # the type came from every value of the batch that created it (10 and 12.5 -> DOUBLE)
    assert query(db, "SELECT data_type FROM information_schema.columns WHERE table_name = 'order_completed' AND column_name = 'total'") == [("DOUBLE",)]
    # users: latest non-null value per trait, by event time
    assert query(db, "SELECT id, email, plan FROM segment.users") == [("u4", "a@x.io", "pro")]
    assert query(db, "SELECT name, url, anonymous_id FROM segment.pages ORDER BY id") == [
        ("Home", "https://x.io/", "anon-1"), ("Pricing", None, "anon-1")]


def test_conservation_per_file(tmp_path, db):
    result = run_load(archive(tmp_path), db)
    for f in result.files:
        assert f.lines == f.rows_loaded + f.duplicates + f.rejects
    assert [(f.rows_loaded, f.duplicates, f.rejects) for f in result.files] == [(3, 0, 0), (2, 1, 0), (4, 0, 1)]


def test_rerun_loads_nothing_and_says_so(tmp_path, db):
    files = archive(tmp_path)
    run_load(files, db)
    before = table_snapshot(db)
    again = run_load(files, db)
    assert again.summary()["files_skipped"] == 3 and again.summary()["rows_loaded"] == 0
    assert table_snapshot(db) == before
    proc = cli("load", str(tmp_path / "logs"), "--db", str(db))
    assert proc.returncode == 0 and "nothing to load" in proc.stdout


def test_force_reloads_but_rows_still_dedup(tmp_path, db):
    files = archive(tmp_path)
    run_load(files, db)
    before = table_snapshot(db)
    forced = run_load(files, db, force=True)
    assert forced.summary()["files_loaded"] == 3
    assert forced.summary()["rows_loaded"] == 0
    assert forced.summary()["duplicates"] == 10
    assert table_snapshot(db) == before


def test_changed_file_is_loaded_again_and_dedups(tmp_path, db):
    path = write_ndjson(tmp_path / "a.ndjson", [event(1), event(2)])
    run_load([path], db)
    write_ndjson(path, [event(1), event(2), event(3)])
    result = run_load([path], db)
    assert (result.files[0].rows_loaded, result.files[0].duplicates) == (1, 2)
    assert query(db, "SELECT count(*) FROM segment.signed_up")[0][0] == 3


def test_rows_seen_before_are_neither_loaded_nor_discarded(tmp_path, db):
    """A batch that mixes new messages with ones an earlier file loaded: only the new ones
    become rows, and a bad value in a re-sent copy is not reported as a discard (the copy
    is a counted duplicate, not a load)."""
    first = write_ndjson(tmp_path / "1.ndjson", [event(i, properties={"seats": i}) for i in range(1, 4)])
    resent = [event(2, properties={"seats": "many"}), event(3, properties={"seats": 3})]
    fresh = [event(4, properties={"seats": 40}), event(5, properties={"seats": "lots"})]
    second = write_ndjson(tmp_path / "2.ndjson", [resent[0], fresh[0], resent[1], fresh[1]])
    result = run_load([first, second], db, commit_every_rows=1)
    assert [(f.rows_loaded, f.duplicates, f.discards) for f in result.files] == [(3, 0, 0), (2, 2, 1)]
    assert query(db, "SELECT id, seats FROM segment.signed_up ORDER BY id") == [
        ("m1", 1), ("m2", 2), ("m3", 3), ("m4", 40), ("m5", None)]
    assert query(db, "SELECT id FROM segment.tracks ORDER BY id") == [("m1",), ("m2",), ("m3",), ("m4",), ("m5",)]
    assert query(db, "SELECT message_id, line, raw_value FROM _loader.discards") == [("m5", 4, "lots")]


def test_split_invariance(tmp_path):
    files = archive(tmp_path)
    all_at_once = tmp_path / "all.duckdb"
    run_load(files, all_at_once)
    one_by_one = tmp_path / "one.duckdb"
    for f in files:
        run_load([f], one_by_one)
    shuffled = tmp_path / "shuffled.duckdb"
    order = files[:]
    random.Random(3).shuffle(order)
    run_load(order, shuffled)
    assert table_snapshot(all_at_once) == table_snapshot(one_by_one) == table_snapshot(shuffled)


def test_bigint_widens_to_double_and_is_recorded(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(1, properties={"price": 3}), event(2, properties={"price": 4})])], db)
    run_load([write_ndjson(tmp_path / "2.ndjson", [event(3, properties={"price": 3.7})])], db)
    assert query(db, "SELECT data_type FROM information_schema.columns WHERE table_name = 'signed_up' AND column_name = 'price'") == [("DOUBLE",)]
    assert query(db, "SELECT id, price FROM segment.signed_up ORDER BY id") == [("m1", 3.0), ("m2", 4.0), ("m3", 3.7)]
    assert query(db, "SELECT change, old_type, new_type FROM _loader.schema_changes WHERE table_name = 'signed_up' AND column_name = 'price' ORDER BY load_id") == [
        ("add_column", None, "BIGINT"), ("widen", "BIGINT", "DOUBLE")]


def test_uncastable_values_become_null_plus_a_discard(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(1, properties={"price": 9.5, "seen": "2024-01-01T00:00:00Z"})])], db)
    run_load([write_ndjson(tmp_path / "2.ndjson", [
        event(2, properties={"price": "19.99", "seen": "yesterday"}),
        event(3, properties={"price": "N/A", "seen": "2024-02-01T00:00:00Z"}),
    ])], db)
    assert query(db, "SELECT id, price, seen::VARCHAR FROM segment.signed_up ORDER BY id") == [
        ("m1", 9.5, "2024-01-01 00:00:00+00"), ("m2", 19.99, None), ("m3", None, "2024-02-01 00:00:00+00")]
    assert query(db, "SELECT table_name, column_name, message_id, raw_value, column_type, reason FROM _loader.discards ORDER BY message_id") == [
        ("signed_up", "seen", "m2", "yesterday", "TIMESTAMPTZ", "cannot cast varchar value to TIMESTAMPTZ"),
        ("signed_up", "price", "m3", "N/A", "DOUBLE", "cannot cast varchar value to DOUBLE"),
    ]


def test_new_column_type_uses_every_value_of_the_batch(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [
        event(1, properties={"a": 1, "b": 1, "c": "x", "d": True, "e": [1, 2], "f": "2024-01-01T00:00:00Z"}),
        event(2, properties={"a": 2, "b": 2.5, "c": 3, "d": False, "e": [], "f": "2024-01-02T00:00:00.5+02:00"}),
    ])], db)
    types = dict(query(db, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'signed_up' AND column_name IN ('a','b','c','d','e','f')"))
    assert types == {"a": "BIGINT", "b": "DOUBLE", "c": "VARCHAR", "d": "BOOLEAN", "e": "JSON", "f": "TIMESTAMP WITH TIME ZONE"}
    assert query(db, "SELECT c FROM segment.signed_up ORDER BY id") == [("x",), ("3",)]


def test_flattening_collisions_and_reserved_keys(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(1, properties={
        "address": {"zipCode": "123", "geo": {"lat": 1.5}}, "orderId": "camel", "order_id": "snake",
        "user_id": "spoofed", "event": "spoofed", "products": [{"sku": "a"}],
    }, context={"userAgent": "UA", "page": {"url": "https://x"}})])], db)
    row = query(db, "SELECT address_zip_code, address_geo_lat, order_id, _user_id, _event, user_id, event, products, context_user_agent, context_page_url FROM segment.signed_up")[0]
    assert row == ("123", 1.5, "snake", "spoofed", "spoofed", "u1", "signed_up", '[{"sku":"a"}]', "UA", "https://x")
    mapped = dict(query(db, "SELECT original, name FROM _loader.name_map WHERE table_name = 'signed_up'"))
    assert mapped["/properties/orderId"] == mapped["/properties/order_id"] == "order_id"
    assert mapped["/properties/user_id"] == "_user_id"


def test_timestamp_is_corrected_for_clock_skew_when_missing(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [
        event(1, timestamp=None, receivedAt="2024-03-01T10:00:10.000Z", sentAt="2024-03-01T09:00:05.000Z",
              originalTimestamp="2024-03-01T09:00:00.000Z"),
        event(2, timestamp=None, receivedAt="2024-03-01T10:00:10.000Z"),
        event(3, timestamp="2024-01-01T00:00:00.000Z"),
    ])], db)
    assert query(db, "SELECT id, timestamp::VARCHAR FROM segment.signed_up ORDER BY id") == [
        ("m1", "2024-03-01 10:00:05+00"), ("m2", "2024-03-01 10:00:10+00"), ("m3", "2024-01-01 00:00:00+00")]


def test_odd_event_names_get_safe_distinct_tables(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [
        event(1, event="users"), event(2, event="select"), event(3, event="$$$"),
        event(4, event='"; DROP TABLE tracks;--'), event(5, event="Order Completed"), event(6, event="order_completed"),
    ])], db)
    tables = {r[0] for r in query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'segment'")}
    assert {"_users", "_select", "drop_table_tracks", "order_completed", "tracks"} <= tables
    assert query(db, "SELECT count(*) FROM segment.tracks")[0][0] == 6
    assert sorted(query(db, "SELECT event_text FROM segment.order_completed")) == [("Order Completed",), ("order_completed",)]
    assert "users" not in tables  # the event named "users" did not write into the users table
    assert query(db, "SELECT event, event_text FROM segment._users") == [("_users", "users")]


def test_event_text_keeps_the_name_exactly_as_sent(tmp_path, db):
    """Routing trims (both land in signed_up); event_text tells the two spellings apart."""
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(1, event=" Signed Up "), event(2, event="Signed Up")])], db)
    assert query(db, "SELECT id, event, event_text FROM segment.signed_up ORDER BY id") == [
        ("m1", "signed_up", " Signed Up "), ("m2", "signed_up", "Signed Up")]
    assert query(db, "SELECT event_text FROM segment.tracks ORDER BY id") == [(" Signed Up ",), ("Signed Up",)]


def test_stage_timings_in_the_result_and_in_the_loads_table(tmp_path, db):
    result = run_load([write_ndjson(tmp_path / "1.ndjson", [event(i) for i in range(50)])], db)
    stages = result.summary()["stage_seconds"]
    assert list(stages) == ["read", "parse", "shape", "dedup", "write", "commit"]
    assert all(s >= 0 for s in stages.values()) and stages["parse"] > 0 and stages["write"] > 0
    (stored,) = query(db, "SELECT stage_seconds FROM _loader.loads")[0]
    assert json.loads(stored) == stages


def test_reject_ratio_fails_the_file_loudly_and_loads_nothing_from_it(tmp_path, db):
    good = write_ndjson(tmp_path / "good.ndjson", [event(1), event(2)])
    bad = write_ndjson(tmp_path / "bad.ndjson", [event(3), "garbage", "more garbage"])
    proc = cli("load", str(good), str(bad), "--db", str(db), "--max-reject-ratio", "0.5")
    assert proc.returncode == 1
    assert "bad.ndjson" in proc.stderr and "2 of 3 lines rejected" in proc.stderr and "line 2: malformed_json" in proc.stderr
    assert query(db, "SELECT id FROM segment.signed_up ORDER BY id") == [("m1",), ("m2",)]
    assert query(db, "SELECT status FROM _loader.files ORDER BY path") == [("failed",), ("loaded",)]
    # once the threshold allows it, a re-run loads the file that failed
    proc = cli("load", str(good), str(bad), "--db", str(db), "--max-reject-ratio", "0.9")
    assert proc.returncode == 0
    assert query(db, "SELECT count(*) FROM segment.signed_up")[0][0] == 3


def test_unreadable_file_fails_with_a_clear_message(tmp_path, db):
    """/proc/self/mem opens but every read at offset 0 fails (EIO), even for root, who
    would read a chmod 000 file anyway."""
    good = write_ndjson(tmp_path / "good.ndjson", [event(1)])
    proc = cli("load", str(good), "/proc/self/mem", "--db", str(db))
    assert proc.returncode == 1
    assert "cannot read /proc/" in proc.stderr and "/mem: Input/output error" in proc.stderr
    rows = query(db, "SELECT path, status, error FROM _loader.files ORDER BY status")
    assert rows[0][:2] == ("/proc/" + rows[0][0].split("/")[2] + "/mem", "failed")
    assert "Input/output error" in rows[0][2]
    assert rows[1][:2] == (str(good.resolve()), "loaded")


def hold_database(db, seconds=60):
    """Another process that holds the DuckDB file open for writing, as a load or dbt would."""
    import subprocess
    import sys
    import time

    ready = db.with_suffix(".held")
    proc = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, pathlib, time\n"
        f"con = duckdb.connect({str(db)!r})\n"
        f"pathlib.Path({str(ready)!r}).write_text('x')\n"
        f"time.sleep({seconds})\n")])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.05)
    return proc


def test_second_writer_fails_fast_with_exit_code_3(tmp_path, db):
    import time

    path = write_ndjson(tmp_path / "a.ndjson", [event(1)])
    run_load([path], db)
    holder = hold_database(db)
    try:
        started = time.monotonic()
        result = cli("load", str(path), "--db", str(db), "--force")
        assert time.monotonic() - started < 20
        assert result.returncode == 3
        assert f"PID {holder.pid}" in result.stderr and "retry later" in result.stderr
        with pytest.raises(DatabaseLockedError):
            load([str(path)], LoadConfig(db_path=str(db)))
    finally:
        holder.kill()
        holder.wait()
    # the first writer's data is intact and a load works again once it has gone
    assert cli("load", str(path), "--db", str(db)).returncode == 0
    assert query(db, "SELECT count(*) FROM segment.signed_up")[0][0] == 1


def test_loaders_on_different_databases_run_side_by_side(tmp_path):
    import subprocess
    import sys

    paths = [write_ndjson(tmp_path / f"{i}.ndjson", [event(f"{i}-{j}") for j in range(50)]) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "loader", "load", str(p), "--db", str(tmp_path / f"{i}.duckdb")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i, p in enumerate(paths)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    for i in range(2):
        assert query(tmp_path / f"{i}.duckdb", "SELECT count(*) FROM segment.signed_up")[0][0] == 50


def test_dry_run_writes_nothing_and_shows_changes(tmp_path, db):
    files = archive(tmp_path)
    proc = cli("load", *map(str, files), "--db", str(db), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "create table" in proc.stdout and "order_completed" in proc.stdout
    assert not db.exists()


def test_status_and_json_output(tmp_path, db):
    files = archive(tmp_path)
    proc = cli("load", *map(str, files), "--db", str(db), "--json")
    summary = json.loads(proc.stdout)
    assert summary["files_loaded"] == 3 and summary["rows_loaded"] == 9 and summary["rejects"] == 1
    status = json.loads(cli("status", "--db", str(db), "--json").stdout)
    assert status["files"][0]["rows_loaded"] == 9
    assert status["rejects_by_reason"] == [{"reason": "malformed_json", "rejects": 1}]
    text = cli("status", "--db", str(db)).stdout
    assert "Rejects by reason" in text and "malformed_json" in text


def test_parquet_rows_with_structs_and_json_strings(tmp_path, db):
    table = pa.table({
        "messageId": ["p1", "p2", None],
        "type": ["track", "identify", "track"],
        "event": ["Order Completed", None, "X"],
        "userId": ["u1", "u2", "u3"],
        "receivedAt": ["2024-03-01T10:00:00Z"] * 3,
        "properties": [json.dumps({"total": 5, "products": [{"sku": "a"}]}), None, "{}"],
        "traits": [None, json.dumps({"email": "p@x.io"}), None],
        "context": pa.array([{"ip": "1.1.1.1"}, {"ip": "2.2.2.2"}, {"ip": None}]),
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    result = run_load([path], db, max_reject_ratio=1.0, source_id="lake")
    assert (result.files[0].rows_loaded, result.files[0].rejects) == (2, 1)
    assert query(db, "SELECT total, products, context_ip, source_id FROM segment.order_completed") == [
        (5, '[{"sku":"a"}]', "1.1.1.1", "lake")]
    assert query(db, "SELECT email FROM segment.identifies") == [("p@x.io",)]
    assert query(db, "SELECT line, reason FROM _loader.rejects") == [(3, "missing_message_id")]


def test_projectid_wins_over_path_for_source_id(tmp_path, db):
    root = tmp_path / "segment-logs" / "from_path" / "1709251200000"
    run_load([write_ndjson(root / "a.gz", [event(1), event(2, projectId="from_message")])], db)
    assert query(db, "SELECT id, source_id FROM segment.signed_up ORDER BY id") == [("m1", "from_path"), ("m2", "from_message")]


def test_python_api_result(tmp_path, db):
    result = load([str(p) for p in archive(tmp_path)], LoadConfig(db_path=str(db)))
    s = result.summary()
    assert s["lines"] == s["rows_loaded"] + s["duplicates"] + s["rejects"] == 11
    assert result.load_id == 1
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    assert table_snapshot(copy) == table_snapshot(db)


def test_keys_that_cannot_name_a_column_are_discarded_not_lost(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", [event(1, properties={"$$": 5, "": "empty", "ok": 1})])], db)
    assert query(db, "SELECT ok FROM segment.signed_up") == [(1,)]
    assert sorted(query(db, "SELECT column_name, raw_value, reason FROM _loader.discards")) == [
        ("/properties/", "empty", "the key has no ASCII letter or digit to name a column"),
        ("/properties/$$", "5", "the key has no ASCII letter or digit to name a column"),
    ]


def test_names_of_a_rolled_back_file_are_recorded_by_the_next_file_that_uses_them(tmp_path, db):
    """A batch writes only the name mappings the group does not hold yet; a long file that
    fails rolls its mappings back, so the next file with the same names records them again."""
    noise = random.Random(3)
    root = tmp_path / "logs"
    good = [event(i, event="Plan Chosen", properties={"planName": "pro", "pad": noise.randbytes(48).hex()})
            for i in range(600)]
    failing = write_ndjson(root / "01.gz", good + ["{not json"] * 400)  # 40% rejected: the file fails
    later = write_ndjson(root / "02.ndjson", [event(1000 + i, event="Plan Chosen", properties={"planName": "team"})
                                              for i in range(3)])
    result = run_load([failing, later], db, batch_bytes=2_000)
    assert [f.status for f in result.files] == ["failed", "loaded"]
    assert query(db, "SELECT kind, original, name FROM _loader.name_map WHERE table_name = 'plan_chosen' "
                     "AND original = '/properties/planName'") == [("column", "/properties/planName", "plan_name")]
    assert query(db, "SELECT plan_name, count(*) FROM segment.plan_chosen GROUP BY ALL") == [("team", 3)]
