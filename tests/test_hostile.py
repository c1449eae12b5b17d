"""Named hostile inputs: the loader never crashes and accounts for every line."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import event, query, run_load, write_ndjson


def load_one(tmp_path, db, lines, **options):
    path = write_ndjson(tmp_path / "hostile.ndjson", lines)
    result = run_load([path], db, max_reject_ratio=1.0, **options)
    (f,) = result.files
    assert f.status == "loaded", f.reason
    assert f.lines == f.rows_loaded + f.duplicates + f.rejects == len(lines)
    return f


def test_ten_megabyte_line_is_rejected_as_oversized(tmp_path, db):
    f = load_one(tmp_path, db, [event(1), event(2, properties={"blob": "x" * 10_000_000})])
    assert (f.rows_loaded, f.rejects) == (1, 1)
    assert query(db, "SELECT reason, octet_length(raw) > 10000000 FROM _loader.rejects") == [("oversized", True)]


def test_ten_megabyte_line_loads_when_allowed(tmp_path, db):
    f = load_one(tmp_path, db, [event(2, properties={"blob": "x" * 10_000_000})], max_event_bytes=20_000_000)
    assert f.rows_loaded == 1
    assert query(db, "SELECT length(blob) FROM segment.signed_up") == [(10_000_000,)]


def test_thousand_levels_of_nesting_are_kept_as_json_past_the_depth_limit(tmp_path, db):
    deep = '{"n":' * 1000 + '{"leaf":1}' + "}" * 1000  # too deep for Python's json module
    line = json.dumps(event(1, properties={"deep": 0})).replace('"deep": 0', f'"deep": {deep}')
    f = load_one(tmp_path, db, [line])
    if f.rows_loaded:  # parsed: the part below depth 8 is one JSON column
        (col,) = [r[0] for r in query(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'signed_up' AND column_name LIKE 'deep%'")]
        assert col == "deep_n_n_n_n_n_n_n"
        assert query(db, f"SELECT json_valid({col}::VARCHAR) FROM segment.signed_up") == [(True,)]
    else:  # or refused by the JSON parser as too deep: then it is a reject, not a crash
        assert query(db, "SELECT reason FROM _loader.rejects") == [("malformed_json",)]


def test_ten_thousand_distinct_keys_in_one_event(tmp_path, db):
    props = {f"key_{i}": i for i in range(10_000)}
    f = load_one(tmp_path, db, [event(1, properties=props), event(2)], max_event_bytes=1 << 20)
    assert f.rows_loaded == 2
    assert query(db, "SELECT key_0, key_9999 FROM segment.signed_up WHERE id = 'm1'") == [(0, 9999)]


def test_numbers_beyond_64_bits_are_never_rounded(tmp_path, db):
    big = "123456789012345678901234567890"
    line = json.dumps(event(1, properties={"n": 1})).replace('"n": 1', f'"n": {big}')
    load_one(tmp_path, db, [line])
    assert query(db, "SELECT n, data_type FROM segment.signed_up, information_schema.columns "
                     "WHERE table_name = 'signed_up' AND column_name = 'n'") == [(big, "VARCHAR")]


def test_nan_and_infinity(tmp_path, db):
    lines = [json.dumps(event(i, properties={"x": 1.5})).replace("1.5", lit)
             for i, lit in enumerate(["NaN", "Infinity", "-Infinity", "2.5"], start=1)]
    f = load_one(tmp_path, db, lines)
    # JSON has no NaN: either they load as DOUBLE specials or they are rejected, never lost
    loaded = dict(query(db, "SELECT id, x::VARCHAR FROM segment.signed_up"))
    assert loaded["m4"] == "2.5"
    assert f.rows_loaded + f.rejects == 4


def test_duplicate_keys_in_one_object_keep_one_value(tmp_path, db):
    load_one(tmp_path, db, ['{"messageId":"m1","type":"track","event":"E","userId":"u","properties":{"a":1,"a":2}}'])
    assert query(db, "SELECT a FROM segment.e") in ([(1,)], [(2,)])


def test_names_with_sql_quotes_backticks_newlines_and_emoji(tmp_path, db):
    names = ['"; DROP TABLE tracks;--', "it's `quoted`", "line\nbreak", "🎉 Party 🎉", "Ünïcödé Évent", "tracks"]
    keys = {'a"b': 1, "c'd": 2, "e`f": 3, "g\nh": 4, "😀": 5, "tracks": 6}
    load_one(tmp_path, db, [event(i, event=n, properties=keys) for i, n in enumerate(names)])
    assert query(db, "SELECT count(*) FROM segment.tracks")[0][0] == len(names)
    texts = {r[0] for r in query(db, "SELECT event_text FROM segment.tracks")}
    assert texts == set(names)
    assert query(db, "SELECT a_b, c_d, e_f, g_h, tracks FROM segment.drop_table_tracks") == [(1, 2, 3, 4, 6)]
    assert query(db, "SELECT count(*) FROM segment._tracks")[0][0] == 1


def test_parquet_with_an_unexpected_schema(tmp_path, db):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), path)
    result = run_load([path], db)
    (f,) = result.files
    assert f.status == "failed" and "2 of 2 lines rejected" in f.reason
    result = run_load([path], db, max_reject_ratio=1.0)
    assert result.files[0].rejects == 2
    assert query(db, "SELECT DISTINCT reason FROM _loader.rejects") == [("missing_message_id",)]
