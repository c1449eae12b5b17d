"""Each stage on its own, as fixture tables (sqlglot's style): input -> expected output.

Naming (name -> table/column) has its own tables in test_naming.py.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from loader import dedup, load, writer
from loader.cast import cast_values
from loader.config import LoadConfig
from loader.normalize import (
    ColumnStats,
    compute_connection,
    in_line_order,
    json_kinds,
    json_value_and_type,
)
from loader.pipeline import DrySink, WarehouseSink
from loader.replay import replay
from loader.schema import infer_type, may_discard, needs_widening
from loader.spec import ColumnType, Kind
from loader.stages import STAGES, UNIT_STAGES, WAREHOUSE_STAGES, Batch, Context, lines_batch, run

UTC = dt.UTC


def unit_stages(lines: pa.Table, source_id: str | None = None, config: LoadConfig | None = None) -> Batch:
    """UNIT_STAGES (scrub to tracking plan) over fixture lines, on a compute connection."""
    con = compute_connection(256)
    try:
        return run(lines_batch(lines, source_id), UNIT_STAGES, Context(config or LoadConfig(), con))
    finally:
        con.close()

# JSON text of one value -> (value as text, JSON kind)
JSON_KINDS = [
    ('"a"', "a", Kind.VARCHAR),
    ('""', "", Kind.VARCHAR),
    ('"a\\"b\\\\c"', 'a"b\\c', Kind.VARCHAR),
    ('"\\u00e9"', "é", Kind.VARCHAR),
    ("1", "1", Kind.UBIGINT),
    ("-1", "-1", Kind.BIGINT),
    ("18446744073709551616", "18446744073709551616", Kind.UBIGINT),
    ("1.5", "1.5", Kind.DOUBLE),
    ("1e3", "1e3", Kind.DOUBLE),
    ("true", "true", Kind.BOOLEAN),
    ("false", "false", Kind.BOOLEAN),
    ("[1, 2]", "[1, 2]", Kind.ARRAY),
    ('{"a": 1}', '{"a": 1}', Kind.OBJECT),
    ("null", None, None),
]


@pytest.mark.parametrize(("json_text", "text", "kind"), JSON_KINDS)
def test_json_text_to_text_and_kind(json_text, text, kind):
    got_text, got_kind = json_kinds(pa.array([json_text]))
    assert (got_text[0].as_py(), got_kind[0].as_py()) == (text, kind)


def test_json_kinds_of_a_whole_column_equal_those_of_each_value():
    """All the values above in one array (as shaping stacks them): quotes are cut out of the
    shared data buffer, escapes decoded where they are, nulls kept; and the same again from
    an array that starts inside its buffer (a slice)."""
    texts = [j for j, _, _ in JSON_KINDS] + [None, '"\\\\"', "-2.5e3"]
    expected = [(t, k) for _, t, k in JSON_KINDS] + [(None, None), ("\\", Kind.VARCHAR),
                                                     ("-2.5e3", Kind.DOUBLE)]
    for array, want in ((pa.array(texts), expected), (pa.array(["x"] + texts).slice(1), expected),
                        (pa.array(texts[::-1]), expected[::-1])):
        got_text, got_kind = json_kinds(array)
        assert list(zip(got_text.to_pylist(), got_kind.to_pylist())) == want


# One leaf's JSON values in one table -> their type counts
TYPE_COUNTS = [
    (['"2024-03-01T10:00:00Z"', '"2024-03-01 10:00"'], {Kind.TIMESTAMP: 2}),
    (['"2024-03-01T10:00:00Z"', '"soon"'], {Kind.VARCHAR: 2}),
    (["1", "9223372036854775807", "9223372036854775808", "123456789012345678901"], {Kind.UBIGINT: 2, Kind.HUGEINT: 2}),
    (["-1", "1.5", "true", "null", "[1]", '{"a":1}'],
     {Kind.BIGINT: 1, Kind.DOUBLE: 1, Kind.BOOLEAN: 1, Kind.ARRAY: 1, Kind.OBJECT: 1}),
]


def test_type_counts_per_leaf_and_table():
    """All cases stacked as leaves 0..3, each split over two tables (even rows in `a`, odd in
    `b`): each (leaf, table) gets the counts of its own values only."""
    from loader.normalize import _type_counts

    texts, leaves, tables = [], [], []
    for leaf, (values, _) in enumerate(TYPE_COUNTS):
        for table in (0, 1):
            texts += values
            leaves += [leaf] * len(values)
            tables += [table] * len(values)
    text, kind = json_kinds(pa.array(texts))
    got = _type_counts(text, kind, np.asarray(leaves, np.int32), np.asarray(tables, np.int32), ["a", "b"])
    assert got == {leaf: {"a": counts, "b": counts} for leaf, (_, counts) in enumerate(TYPE_COUNTS)}



# JSON strings near the ISO-8601 shape (escapes included): each is one value of its own leaf
ISO_LIKE = ['"2024-03-01T10:00"', '"2024-03-01 10:00Z"', '"2024-03-01T10:00:00.123456789+05:30"',
            '"2024-03-01T10:00 "', '"2024-03-01T10:0"', '" 2024-03-01T10:00"', '"2024/03/01T10:00"',
            '"2024-03-01T10-00"', '"2024-03-01"', '"\u00e9024-03-01T10:00"', '"\\u00e9024-03-01T10:00"',
            '"2024-03-01\\u005410:00"', '""', '"' + "x" * 40 + '"', '"2024-03-01T10:00:00Z"', '"2024-03-01t10:00"']


def test_timestamp_strings_are_those_the_regex_matches():
    """_type_counts tests bytes before running the ISO regex on a string; the strings it
    counts as TIMESTAMP are exactly those the regex alone matches (escapes decoded first)."""
    import re

    from loader.normalize import _type_counts
    from loader.spec import ISO_TIMESTAMP_RE

    text, kind = json_kinds(pa.array(ISO_LIKE))
    got = _type_counts(text, kind, np.arange(len(ISO_LIKE), dtype=np.int32), np.zeros(len(ISO_LIKE), np.int32), ["t"])
    expected = {i: {"t": {"TIMESTAMP" if re.fullmatch(ISO_TIMESTAMP_RE, v, re.ASCII) else "VARCHAR": 1}}
                for i, v in enumerate(text.to_pylist())}
    assert got == expected
    assert sum("TIMESTAMP" in c["t"] for c in got.values()) == 6


# Kind counts of every value of a new column -> the column's type
KINDS_TO_TYPE = [
    ({Kind.UBIGINT: 2}, ColumnType.BIGINT),
    ({Kind.UBIGINT: 1, Kind.BIGINT: 1}, ColumnType.BIGINT),
    ({Kind.BIGINT: 1, Kind.DOUBLE: 1}, ColumnType.DOUBLE),
    ({Kind.DOUBLE: 3}, ColumnType.DOUBLE),
    ({Kind.BOOLEAN: 1}, ColumnType.BOOLEAN),
    ({Kind.TIMESTAMP: 3}, ColumnType.TIMESTAMPTZ),
    ({Kind.VARCHAR: 1}, ColumnType.VARCHAR),
    ({Kind.VARCHAR: 1, Kind.TIMESTAMP: 1}, ColumnType.VARCHAR),
    ({Kind.ARRAY: 1, Kind.OBJECT: 1}, ColumnType.JSON),
    ({Kind.BOOLEAN: 1, Kind.UBIGINT: 1}, ColumnType.VARCHAR),
    ({Kind.HUGEINT: 1}, ColumnType.VARCHAR),
    ({Kind.UBIGINT: 1, Kind.HUGEINT: 1}, ColumnType.VARCHAR),
    ({Kind.ARRAY: 1, Kind.VARCHAR: 1}, ColumnType.VARCHAR),
    ({Kind.VARCHAR: 0}, None),
    ({}, None),
]


@pytest.mark.parametrize(("types", "column_type"), KINDS_TO_TYPE)
def test_kinds_to_column_type(types, column_type):
    assert infer_type(ColumnStats(types=types)) == column_type


# (current column type, kinds arriving) -> the widened type, or None
WIDENINGS = [
    (ColumnType.BIGINT, {Kind.DOUBLE: 1}, ColumnType.DOUBLE),
    (ColumnType.BIGINT, {Kind.UBIGINT: 5}, None),
    (ColumnType.BIGINT, {Kind.VARCHAR: 1}, None),  # a discard, not a widening
    (ColumnType.DOUBLE, {Kind.VARCHAR: 1}, None),
    (ColumnType.VARCHAR, {Kind.DOUBLE: 1}, None),
]


@pytest.mark.parametrize(("current", "types", "wider"), WIDENINGS)
def test_widening(current, types, wider):
    assert needs_widening(current, ColumnStats(types=types)) == wider


# (value text, JSON kind, column type) -> stored value (None: discarded)
CASTS = [
    ("3", Kind.UBIGINT, ColumnType.BIGINT, 3),
    ("-3", Kind.BIGINT, ColumnType.BIGINT, -3),
    ("3.0", Kind.DOUBLE, ColumnType.BIGINT, 3),
    ("3.7", Kind.DOUBLE, ColumnType.BIGINT, None),
    (" 42 ", Kind.VARCHAR, ColumnType.BIGINT, 42),
    ("4.2", Kind.VARCHAR, ColumnType.BIGINT, None),
    ("true", Kind.BOOLEAN, ColumnType.BIGINT, None),
    ("18446744073709551616", Kind.UBIGINT, ColumnType.BIGINT, None),
    ("2.5", Kind.DOUBLE, ColumnType.DOUBLE, 2.5),
    ("7", Kind.UBIGINT, ColumnType.DOUBLE, 7.0),
    (" 9.5", Kind.VARCHAR, ColumnType.DOUBLE, 9.5),
    ("N/A", Kind.VARCHAR, ColumnType.DOUBLE, None),
    ("true", Kind.BOOLEAN, ColumnType.BOOLEAN, True),
    (" FALSE ", Kind.VARCHAR, ColumnType.BOOLEAN, False),
    ("yes", Kind.VARCHAR, ColumnType.BOOLEAN, None),
    ("1", Kind.UBIGINT, ColumnType.BOOLEAN, None),
    ("2024-03-01T10:00:00Z", Kind.VARCHAR, ColumnType.TIMESTAMPTZ, dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("2024-03-01 12:00:00+02:00", Kind.VARCHAR, ColumnType.TIMESTAMPTZ, dt.datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("2024-03-01", Kind.VARCHAR, ColumnType.TIMESTAMPTZ, dt.datetime(2024, 3, 1, tzinfo=UTC)),
    ("2024-13-45", Kind.VARCHAR, ColumnType.TIMESTAMPTZ, None),
    ("yesterday", Kind.VARCHAR, ColumnType.TIMESTAMPTZ, None),
    ("1709287200", Kind.UBIGINT, ColumnType.TIMESTAMPTZ, None),
    ("x", Kind.VARCHAR, ColumnType.JSON, '"x"'),
    ("[1]", Kind.ARRAY, ColumnType.JSON, "[1]"),
    ("5", Kind.UBIGINT, ColumnType.JSON, "5"),
    ("5", Kind.UBIGINT, ColumnType.VARCHAR, "5"),
    ('{"a":1}', Kind.OBJECT, ColumnType.VARCHAR, '{"a":1}'),
]


@pytest.mark.parametrize(("text", "kind", "column_type", "stored"), CASTS)
def test_value_kind_and_column_type_to_stored_value(text, kind, column_type, stored):
    # Both ways: with the batch's kinds known (the fast path) and without.
    for kinds in ({kind}, None):
        got = cast_values(pa.array([text]), pa.array([str(kind)]), column_type, kinds)
        assert got[0].as_py() == stored, kinds
    # A possible discard is announced by may_discard (over the kinds the normaliser counts:
    # integers beyond 64 bits as HUGEINT), so the writer looks for it.
    if stored is None:
        counted = Kind.HUGEINT if kind == Kind.UBIGINT and int(text) >= 2**63 else kind
        assert may_discard(column_type, ColumnStats(types={counted: 1}))


ENVELOPE = '"messageId":"m1","userId":"u1","receivedAt":"2024-03-01T10:00:10.000Z"'
# One message -> its table and standard columns (None: NULL)
ENVELOPES = [
    ('{"type":"track","event":" Signed Up ",' + ENVELOPE + ',"timestamp":"2024-03-01T09:00:00Z"}',
     "signed_up", {"id": "m1", "user_id": "u1", "event": "signed_up", "event_text": " Signed Up ",
                   "timestamp": "2024-03-01T09:00:00Z", "source_id": "src"}),
    # no timestamp: receivedAt corrected by the device clock skew (sentAt - originalTimestamp)
    ('{"type":"track","event":"E",' + ENVELOPE + ',"sentAt":"2024-03-01T10:00:05.000Z",'
     '"originalTimestamp":"2024-03-01T10:00:00.000Z"}',
     "e", {"timestamp": "2024-03-01T10:00:05.000000Z", "sent_at": "2024-03-01T10:00:05.000Z"}),
    ('{"type":"track","event":"E",' + ENVELOPE + '}', "e", {"timestamp": "2024-03-01T10:00:10.000000Z"}),
    ('{"type":"page","properties":{"name":"Home","category":"Docs"},' + ENVELOPE + ',"projectId":"p9"}',
     "pages", {"name": "Home", "category": "Docs", "source_id": "p9", "anonymous_id": None}),
    ('{"type":"screen","name":"Cart",' + ENVELOPE + '}', "screens", {"name": "Cart", "category": None}),
    ('{"type":"group","groupId":"g1",' + ENVELOPE + '}', "groups", {"group_id": "g1"}),
    ('{"type":"alias","previousId":"anon-1",' + ENVELOPE + '}', "aliases", {"previous_id": "anon-1"}),
    ('{"type":"identify","anonymousId":"a1",' + ENVELOPE + '}', "identifies", {"anonymous_id": "a1", "user_id": "u1"}),
]


def standard_slice(line: str, table: str):
    """The slice of `table` after UNIT_STAGES over one valid line (source id "src")."""
    batch = unit_stages(pa.table({"line_no": pa.array([1], pa.int64()), "raw": pa.array([line])}), "src")
    assert batch.rejections == []
    (slice_,) = [s for s in batch.slices if s.table == table]
    return slice_


@pytest.mark.parametrize(("line", "table", "standard"), ENVELOPES)
def test_envelope_to_standard_columns(line, table, standard):
    slice_ = standard_slice(line, table)
    got = {col: slice_.values[col].text[0].as_py() for col in standard}
    assert got == standard



# Standard columns from fields of every JSON kind -> (text, kind) of each column named
STANDARD_KINDS = [
    ('{"type":"identify",' + ENVELOPE.replace('"u1"', "12") + ',"anonymousId":null,"projectId":null}',
     "identifies", {"user_id": ("12", Kind.UBIGINT), "anonymous_id": (None, "NULL"), "source_id": ("src", Kind.VARCHAR)}),
    ('{"type":"identify",' + ENVELOPE + ',"projectId":{"a":1},"previousId":[1],"timestamp":null}',
     "identifies", {"source_id": ("src", Kind.VARCHAR), "timestamp": ("2024-03-01T10:00:10.000000Z", Kind.VARCHAR)}),
    ('{"type":"alias",' + ENVELOPE + ',"projectId":5,"previousId":NaN,"timestamp":1709287200}',
     "aliases", {"source_id": ("5", Kind.UBIGINT), "previous_id": ("NaN", Kind.DOUBLE), "timestamp": ("1709287200", Kind.UBIGINT)}),
    ('{"type":"group","groupId":-18446744073709551616,' + ENVELOPE + ',"sentAt":"a\\"b"}',
     "groups", {"group_id": ("-18446744073709551616", Kind.DOUBLE), "sent_at": ('a"b', Kind.VARCHAR)}),
    # pages and screens without a name of their own (absent, null, an object): properties'
    ('{"type":"page","name":null,"category":{"x":1},"properties":{"name":["Home"],"category":2.5},' + ENVELOPE + '}',
     "pages", {"name": ('["Home"]', Kind.ARRAY), "category": ("2.5", Kind.DOUBLE)}),
    ('{"type":"screen","category":"own","properties":{"category":"theirs"},' + ENVELOPE + '}',
     "screens", {"name": (None, None), "category": ("own", Kind.VARCHAR)}),
]


@pytest.mark.parametrize(("line", "table", "standard"), STANDARD_KINDS)
def test_envelope_fields_of_every_kind_to_standard_columns(line, table, standard):
    slice_ = standard_slice(line, table)
    got = {col: (slice_.values[col].text[0].as_py(), slice_.values[col].kind[0].as_py()) for col in standard}
    assert got == standard


# JSON texts of envelope fields (as validation extracts them); the expected value and type
# are DuckDB's own `->>'$'` and `json_type` of each, which standard_columns used to run
FIELD_JSON = ['"a"', '"a\\"b"', '"\\u00e9"', '""', '"null"', "1", "-1", "0", "-0", "1.5", "1E+2", "1e400",
              "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
              "99999999999999999999", "true", "false", "null", "[1]", "{}", '{"a":1}', "NaN", "Infinity",
              "-Infinity", "nan", "inf", None]


def test_envelope_field_values_and_types_are_duckdbs():
    con = duckdb.connect()
    try:
        texts = [None if v is None else con.execute("SELECT json_extract(?, '$')", [v]).fetchone()[0]
                 for v in FIELD_JSON]
        want = [tuple(con.execute("SELECT ?::JSON->>'$', json_type(?::JSON)", [t, t]).fetchone()) for t in texts]
    finally:
        con.close()
    got_text, got_type = json_value_and_type(pa.array(texts, pa.string()))
    assert list(zip(got_text.to_pylist(), got_type.to_pylist())) == want
    assert ("NaN", "DOUBLE") in want and (None, "NULL") in want  # the oracle covers the odd cases

# receivedAt values (JSON) near the timestamp shapes Segment and others send
RECEIVED_AT_VALUES = ['"2024-03-01T10:00:00.000Z"', '"2024-13-01T10:00:00.000Z"', '"2024-02-30T10:00:00.000Z"',
                      '"2024-03-01T10:00:00.000+02:00"', '" 2024-03-01T10:00:00.000Z "', '"  2024-03-01  "',
                      '"2024-03-01T10:00:00.123456789Z"', '"2024-03-01 10:00:00Z"', '"2024-03-01"',
                      '"-024-03-01T10:00:00.000Z"', '"2024-03-01T10:00:00.000z"', '"2024-03-01T10:00:00,000Z"',
                      '"soon"', "1709287200000", "null", '["2024-03-01T10:00:00.000Z"]']


def test_parsed_timestamps_are_those_of_the_iso_rule():
    """`<col>#ts`: Segment's own shape is matched by a GLOB before the regex; every value
    parses as the one rule says (a string matching ISO_DATE_OR_TIME_RE, trimmed of spaces,
    cast to TIMESTAMPTZ; NULL otherwise)."""
    from loader.spec import ISO_DATE_OR_TIME_RE

    lines = [f'{{"messageId":"m{i}","type":"track","event":"E","userId":"u","receivedAt":{v}}}'
             for i, v in enumerate(RECEIVED_AT_VALUES)]
    batch = unit_stages(pa.table({"line_no": pa.array(range(1, len(lines) + 1), pa.int64()), "raw": lines}))
    got = dict(zip(batch.envelope["message_id"].to_pylist(), batch.envelope["received_at#ts"].to_pylist()))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    expected = {f"m{i}": con.execute(
        f"SELECT CASE WHEN json_type(v) = 'VARCHAR' AND regexp_full_match(v->>'$', '{ISO_DATE_OR_TIME_RE}') "
        "THEN try_cast(trim(v->>'$') AS TIMESTAMPTZ) END FROM (SELECT ?::JSON AS v)", [v]).fetchone()[0]
        for i, v in enumerate(RECEIVED_AT_VALUES)}
    assert got == expected
    assert sum(v is not None for v in got.values()) == 7

# A message -> its reject reason
REJECTS = [
    ("not json", "malformed_json"),
    ("[1, 2]", "not_an_object"),
    ('{"type":"track","event":"E","userId":"u"}', "missing_message_id"),
    ('{"messageId":true,"type":"track","event":"E","userId":"u"}', "invalid_message_id"),
    ('{"messageId":"m","event":"E","userId":"u"}', "missing_type"),
    ('{"messageId":"m","type":"click","userId":"u"}', "unknown_type"),
    ('{"messageId":"m","type":"track","event":"  ","userId":"u"}', "missing_event"),
    ('{"messageId":"m","type":"track","event":"E"}', "missing_identity"),
    ('{"messageId":"m","type":"group","userId":"u"}', "missing_group_id"),
    # field values of every JSON kind: arrays, objects, null and blanks count as absent
    ("   ", "empty_line"),
    ('"just a string"', "not_an_object"),
    ('{"messageId":{"a":1},"type":"track","event":"E","userId":"u"}', "invalid_message_id"),
    ('{"messageId":"   ","type":"track","event":"E","userId":"u"}', "missing_message_id"),
    ('{"messageId":null,"type":"track","event":"E","userId":"u"}', "missing_message_id"),
    ('{"messageId":"' + "x" * 300 + '","type":"track","event":"E","userId":"u"}', "invalid_message_id"),
    ('{"messageId":"m","type":null,"event":"E","userId":"u"}', "missing_type"),
    ('{"messageId":"m","type":5,"userId":"u"}', "unknown_type"),
    ('{"messageId":"m","type":["track"],"event":"E","userId":"u"}', "unknown_type"),
    ('{"messageId":"m","type":"track","event":["E"],"userId":"u"}', "missing_event"),
    ('{"messageId":"m","type":"track","event":"E","userId":{"a":1},"anonymousId":" "}', "missing_identity"),
    ('{"messageId":"m","type":"group","groupId":"","userId":"u"}', "missing_group_id"),
]


@pytest.mark.parametrize(("line", "reason"), REJECTS)
def test_message_to_reject_reason(line, reason):
    lines = pa.table({"line_no": pa.array([7], pa.int64()), "raw": pa.array([line])})
    batch = unit_stages(lines)
    assert [(r.line, r.reason, r.raw) for r in batch.rejections] == [(7, reason, line.encode())]
    assert batch.slices == []


def test_envelope_texts_are_trimmed_of_spaces_only():
    """messageId and type are trimmed of spaces (DuckDB's trim), numbers count as text, and
    event_text keeps the name exactly as sent."""
    line = json.dumps({"messageId": " m\t ", "type": " track ", "event": " E\n", "userId": 42})
    batch = unit_stages(fixture_lines(line))
    assert batch.rejections == []
    (event,) = [s for s in batch.slices if s.table == "e"]
    got = {c: event.values[c].text[0].as_py() for c in ("id", "event_text", "user_id")}
    assert got == {"id": "m\t", "event_text": " E\n", "user_id": "42"}


# --- the stage tuple: tracking plan, plan_schema + cast, dedup, the dry-run sink -------------


def fixture_lines(*messages: dict | str) -> pa.Table:
    """Lines 1..n of a batch, from messages (dicts as JSON) or raw text."""
    raw = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    return pa.table({"line_no": pa.array(range(1, len(raw) + 1), pa.int64()), "raw": pa.array(raw, pa.string())})


def track(i: int, event: str = "Order Completed", **properties) -> dict:
    return {"messageId": f"m{i}", "type": "track", "event": event, "userId": f"u{i}",
            "receivedAt": "2024-03-01T10:00:00Z", "properties": properties}


def write_plan(tmp_path, on_violation: str) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"rules": {"events": [{"name": "Order Completed", "rules": {"properties": {
        "type": "object", "properties": {"currency": {"enum": ["USD", "EUR"]}}}}}]}}))
    return str(path)


# (plan's on_violation, currencies of lines 1-3) -> (lines rejected, violations, lines left in the event table)
PLAN_FILTERS = [
    ("allow", ["USD", "GBP", "EUR"], [], [2], [1, 2, 3]),
    ("block", ["USD", "GBP", "EUR"], [2], [2], [1, 3]),
    ("block", ["GBP", "GBP", "GBP"], [1, 2, 3], [1, 2, 3], []),
    ("block", ["USD", "EUR", "USD"], [], [], [1, 2, 3]),
]


@pytest.mark.parametrize(("on_violation", "currencies", "rejected", "violating", "kept"), PLAN_FILTERS)
def test_tracking_plan_stage_filters_the_batch(tmp_path, on_violation, currencies, rejected, violating, kept):
    lines = fixture_lines(*(track(i, currency=c) for i, c in enumerate(currencies, start=1)))
    batch = unit_stages(lines, config=LoadConfig(tracking_plan=write_plan(tmp_path, on_violation),
                                                 on_violation=on_violation))
    assert [(r.line, r.reason) for r in batch.rejections] == [(n, "tracking_plan_violation") for n in rejected]
    assert sorted(batch.violations["line"].to_pylist()) == violating
    assert sorted(batch.messages["line_no"].to_pylist()) == kept
    lines_of = {s.table: sorted(s.line.to_pylist()) for s in batch.slices}
    assert lines_of.get("order_completed", []) == kept
    assert lines_of.get("tracks", []) == kept
    assert batch.valid == len(kept)
    assert batch.lines is None  # raw text released once the plan has had it


# receivedAt of two copies of one messageId (lines 1, 2) -> the line that wins the in-batch dedup
IN_BATCH_COPIES = [
    ("2024-03-01T10:00:00Z", "2024-03-01T09:00:00Z", 2),  # the earliest receivedAt
    ("2024-03-01T09:00:00Z", "2024-03-01T10:00:00Z", 1),
    ("2024-03-01T10:00:00Z", "2024-03-01T10:00:00Z", 1),  # a tie: line order
    (None, "2024-03-01T10:00:00Z", 2),  # none (or not a timestamp) loses to any
    ("soon", "2024-03-01T10:00:00Z", 2),
    (None, None, 1),
]


@pytest.mark.parametrize(("first", "second", "winner"), IN_BATCH_COPIES)
def test_route_stage_keeps_the_earliest_received_copy(first, second, winner):
    copies = [{**track(1, currency=c), "receivedAt": r} for c, r in (("A", first), ("B", second))]
    batch = unit_stages(fixture_lines(*copies))
    assert batch.messages["line_no"].to_pylist() == [winner]
    (events,) = [s for s in batch.slices if s.table == "order_completed"]
    assert events.values["currency"].text.to_pylist() == ["A" if winner == 1 else "B"]
    assert (batch.valid, batch.duplicates_in_batch) == (2, 1)


def test_route_stage_tables_payloads_and_copies_across_files():
    """route (in Arrow): rejects leave, rows come out in line order whatever order validate's
    table had (here reversed, in two chunks), each call gets its table and payload root, and
    copies of an id in two files of one unit are not in-batch duplicates (each file keeps its
    own); copies within a file are (the first received wins)."""
    from loader.batch import encode_line
    from loader.envelope import route, validate

    second_file = encode_line(1, 1)
    messages = [
        (1, {**track(1, event=" Signed Up "), "properties": {"plan": "pro"}}),
        (2, {"messageId": "m2", "type": "identify", "userId": "u", "traits": {"email": "a@b"}}),
        (3, {"messageId": "m3", "type": "page", "userId": "u", "properties": {"path": "/"}}),
        (4, "not json"),
        (5, {**track(1, event="Signed Up"), "receivedAt": "2024-01-01T00:00:00Z"}),
        (second_file, {**track(1, event="Signed Up")}),
    ]
    lines = pa.table({"line_no": pa.array([n for n, _ in messages], pa.int64()),
                      "raw": [m if isinstance(m, str) else json.dumps(m) for _, m in messages]})
    con = compute_connection(256)
    try:
        checked, rejections = validate(con, lines)
        reordered = pa.concat_tables([checked.slice(3)[::-1], checked.slice(0, 3)[::-1]])
        assert reordered["line_no"].num_chunks == 2
        routed = route(con, reordered)
    finally:
        con.close()
    assert [(r.line, r.reason) for r in rejections] == [(4, "malformed_json")]
    got = routed.messages.select(["line_no", "tbl", "payload"]).to_pylist()
    assert [(r["line_no"], r["tbl"]) for r in got] == [
        (2, "identifies"), (3, "pages"), (5, "signed_up"), (second_file, "signed_up")]
    assert [json.loads(r["payload"]) for r in got][:2] == [{"email": "a@b"}, {"path": "/"}]
    assert (routed.valid, routed.duplicates) == (5, 1)  # line 1 lost to line 5 (received earlier)
    assert sorted((m.original, m.name) for m in routed.name_map) == [("Signed Up", "signed_up")]


def test_unit_stages_without_a_plan_keep_every_valid_line():
    batch = unit_stages(fixture_lines(track(1, currency="GBP"), "not json", track(1, currency="USD")))
    assert batch.stages == [s.name for s in UNIT_STAGES]
    assert set(batch.seconds) == set(batch.stages)
    assert batch.violations is None
    assert [(r.line, r.reason) for r in batch.rejections] == [(2, "malformed_json")]
    # the in-batch copy of m1 with the same receivedAt: the first line wins
    assert batch.messages["line_no"].to_pylist() == [1]
    assert (batch.valid, batch.duplicates_in_batch) == (2, 1)


def warehouse_stages(batch: Batch, sink) -> Batch:
    return run(batch, WAREHOUSE_STAGES, Context(LoadConfig(), None, sink=sink))


# (property value, the column's type in the warehouse) -> (type after plan_schema, stored value, discard reason)
CAST_STAGE = [
    (5, ColumnType.DOUBLE, ColumnType.DOUBLE, 5.0, None),
    ("7", ColumnType.BIGINT, ColumnType.BIGINT, 7, None),
    ("abc", ColumnType.BIGINT, ColumnType.BIGINT, None, "cannot cast varchar value to BIGINT"),
    (1.5, ColumnType.BIGINT, ColumnType.DOUBLE, 1.5, None),  # widened by plan_schema, then cast
    ([1, 2], ColumnType.VARCHAR, ColumnType.VARCHAR, "[1,2]", None),
    (True, ColumnType.BOOLEAN, ColumnType.BOOLEAN, True, None),
    ("2024-03-01", ColumnType.TIMESTAMPTZ, ColumnType.TIMESTAMPTZ, dt.datetime(2024, 3, 1, tzinfo=UTC), None),
    ("soon", ColumnType.TIMESTAMPTZ, ColumnType.TIMESTAMPTZ, None, "cannot cast varchar value to TIMESTAMPTZ"),
]


@pytest.mark.parametrize(("value", "column_type", "planned", "stored", "reason"), CAST_STAGE)
def test_plan_schema_and_cast_stages_store_or_discard(value, column_type, planned, stored, reason):
    batch = unit_stages(fixture_lines(track(1, amount=value)))
    sink = DrySink({"order_completed": {"amount": column_type}})
    batch = run(batch, tuple(s for s in STAGES if s.name in ("plan_schema", "cast")), Context(LoadConfig(), None, sink=sink))
    (rows,) = [r for r in batch.rows if r.slice.table == "order_completed"]
    assert sink.schema["order_completed"]["amount"] == planned
    assert rows.table["amount"].to_pylist() == [stored]
    discards = [(d["column_name"][0].as_py(), d["reason"][0].as_py()) for d in rows.discards]
    assert discards == ([] if reason is None else [("amount", reason)])


def test_dry_run_sink_plans_the_schema_and_writes_nothing():
    sink = DrySink({})
    batch = warehouse_stages(unit_stages(fixture_lines(track(1, total=2, currency="USD"), track(2, total=2.5))), sink)
    assert batch.stages == [s.name for s in STAGES]
    created = {(c.table, c.column, c.new_type) for c in batch.changes if c.change == "add_column"}
    assert {("order_completed", "total", "DOUBLE"), ("order_completed", "currency", "VARCHAR")} <= created
    assert {c.table for c in batch.changes if c.change == "create_table"} >= {"order_completed", "tracks"}
    assert sink.schema["order_completed"]["total"] == "DOUBLE"
    assert batch.counts == []  # nothing persisted, nothing counted as loaded
    assert sorted(batch.fresh["line_no"].to_pylist()) == [1, 2]


def test_dedup_stage_keeps_only_messages_new_to_the_group():
    """The same batch twice into one open group of a real warehouse: the second time every
    row is a duplicate (kept out of the insert), its discards go, its counts say so."""
    con = writer.connect(":memory:")
    try:
        writer.ensure_metadata(con, "segment")
        tx = writer.begin(con)
        pending = writer.Pending()
        schema: dict = {}
        typing = fixture_lines(track(9, amount=1))  # amount becomes a BIGINT column
        lines = fixture_lines(track(1, amount="abc"), track(2, amount=3), track(3, amount=4))
        counts = []
        for file_id, batch_lines in ((1, typing), (2, lines), (3, lines)):
            sink = WarehouseSink(tx, LoadConfig(), schema, pending,
                                 [writer.FileRef(file_id, f"f{file_id}", batch_lines.num_rows)],
                                 load_id=1, loaded_at=dt.datetime.now(UTC), change_file_id=file_id)
            batch = warehouse_stages(unit_stages(batch_lines), sink)
            counts.append([(c.loaded, c.duplicates, c.discards) for c in batch.counts])
        assert all(r.keep is not None and not pc.any(r.keep).as_py() for r in batch.rows)
        assert all(r.discards == [] for r in batch.rows)
        assert schema["order_completed"]["amount"] == "BIGINT"
        assert counts == [[(1, 0, 0)], [(3, 0, 1)], [(0, 3, 0)]]
        assert [d["file_id"].to_pylist() for d in pending.discards] == [[2]]
    finally:
        con.close()


def temp_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall())


def write_into(tx: writer.OpenGroup, schema: dict, pending: writer.Pending, file_id: int, lines: pa.Table) -> Batch:
    """WAREHOUSE_STAGES over fixture lines, as file `file_id` of the open group `tx`."""
    sink = WarehouseSink(tx, LoadConfig(), schema, pending, [writer.FileRef(file_id, f"f{file_id}", lines.num_rows)],
                         load_id=1, loaded_at=dt.datetime.now(UTC), change_file_id=file_id)
    return warehouse_stages(unit_stages(lines), sink)


def identify(i: int, user: str, **traits) -> dict:
    return {"messageId": f"i{i}", "type": "identify", "userId": user, "receivedAt": "2024-03-01T10:00:00Z",
            "traits": traits}


def test_a_commit_group_owns_its_state_and_leaves_no_temp_table():
    """A group's state (its ids, the users its identifies touch) lives in temp tables named
    after the group and handed to whatever reads them; its probe of history drops its own
    tables, and once it commits none is left. The next group starts empty: its copies of the
    committed ids are found by the probe of history, not in the group."""
    con = writer.connect(":memory:")
    try:
        writer.ensure_metadata(con, "segment")
        schema: dict = {}
        lines = fixture_lines(track(1), track(2), identify(3, "u1", plan="pro"))
        tx, pending = writer.begin(con), writer.Pending()
        first = write_into(tx, schema, pending, 1, lines)
        assert [(c.loaded, c.duplicates) for c in first.counts] == [(3, 0)]
        assert temp_tables(con) == sorted([tx.ids.table, tx.touched])
        seen, earlier = writer.settle_group(tx, "segment", pending, load_id=1, since_load=None)
        assert (seen, earlier) == ({}, {})
        assert temp_tables(con) == sorted([tx.ids.table, tx.touched])  # the probe's own are gone
        writer.refresh_state_tables(con, "segment", schema, touched=tx.touched)
        tx.commit()
        assert temp_tables(con) == []
        assert con.execute("SELECT id, plan FROM segment.users").fetchall() == [("u1", "pro")]

        again, pending = writer.begin(con), writer.Pending()
        assert again.ids.table != tx.ids.table and again.touched != tx.touched
        second = write_into(again, schema, pending, 2, lines)
        assert [(c.loaded, c.duplicates) for c in second.counts] == [(3, 0)]  # new to this group
        seen, _ = writer.settle_group(again, "segment", pending, load_id=1, since_load=None)
        assert seen[2].rows == 3  # ... and all in history
        again.commit()
        assert temp_tables(con) == []
        assert con.execute("SELECT count(*) FROM segment.tracks").fetchone() == (2,)
    finally:
        con.close()


def test_two_group_states_do_not_see_each_other():
    con = duckdb.connect()
    try:
        one, two = dedup.begin_group(con), dedup.begin_group(con)
        messages = pa.table({"line_no": pa.array([1, 2], pa.int64()), "message_id": ["m1", "m2"],
                             "received_at": pa.array([dt.datetime(2024, 3, 1, tzinfo=UTC)] * 2,
                                                     pa.timestamp("us", tz="UTC"))})
        assert dedup.fresh_in_group(one, messages, file_id=1)[0].num_rows == 2
        assert dedup.fresh_in_group(two, messages, file_id=2)[0].num_rows == 2  # one's ids are not two's
        assert dedup.fresh_in_group(one, messages, file_id=3)[0].num_rows == 0  # one still holds them
        one.close()
        assert temp_tables(con) == [two.table]
    finally:
        con.close()


def test_a_rolled_back_groups_ids_are_not_in_the_next_groups_state():
    con = writer.connect(":memory:")
    try:
        writer.ensure_metadata(con, "segment")
        messages = pa.table({"line_no": pa.array([1, 2], pa.int64()), "message_id": ["m1", "m2"],
                             "received_at": pa.array([None, None], pa.timestamp("us", tz="UTC"))})
        failed = writer.begin(con)
        assert dedup.fresh_in_files(failed.ids, messages, [1])[0].num_rows == 2
        failed.rollback()
        assert temp_tables(con) == []
        tx = writer.begin(con)
        fresh, superseded = dedup.fresh_in_files(tx.ids, messages, [2])
        assert (fresh.num_rows, superseded.num_rows) == (2, 0)
        assert dedup.probe_history(tx.ids, load_id=1).num_rows == 0  # nor in history
        tx.commit()
        assert temp_tables(con) == []
    finally:
        con.close()


def test_load_replay_and_dry_run_run_the_same_stage_tuple(tmp_path):
    """Each reports the stages its batches ran: the names of STAGES, in order."""
    names = [s.name for s in STAGES]
    archive = tmp_path / "logs" / "a.ndjson"
    archive.parent.mkdir()
    archive.write_text("\n".join(json.dumps(track(i, currency=c)) for i, c in enumerate(["USD", "GBP"], 1)) + "\n")
    db = tmp_path / "w.duckdb"
    strict = write_plan(tmp_path, "block")
    dry = load([str(archive)], LoadConfig(db_path=str(db), dry_run=True, tracking_plan=strict, on_violation="block"))
    assert dry.summary()["stages"] == names
    assert not db.exists()
    loaded = load([str(archive)], LoadConfig(db_path=str(db), tracking_plan=strict, on_violation="block",
                                             max_reject_ratio=1.0))
    assert loaded.summary()["stages"] == names
    assert (loaded.summary()["rows_loaded"], loaded.summary()["blocked"]) == (1, 1)
    replayed = replay(LoadConfig(db_path=str(db)))  # no plan now: the blocked event loads
    assert replayed.summary()["stages"] == names
    assert replayed.summary()["rows_loaded"] == 1


# --- shaping: the fast path (known shape) gives what the careful path gives ------------------


def shape_facts(batch: Batch) -> dict:
    """Everything shaping hands on, as plain values: per slice its rows, values (text, kind,
    typed), type statistics and unnamed keys; and the column name mappings."""
    def column(v) -> tuple:
        return (v.text.to_pylist(), v.kind.to_pylist(), v.typed.to_pylist() if v.typed is not None else None)

    return {
        "slices": {s.table: (s.call, s.line.to_pylist(), s.message_id.to_pylist(),
                             {c: column(v) for c, v in s.values.items()},
                             {c: (st.types, st.sources) for c, st in s.columns.items()},
                             {p: column(v) for p, v in s.unnamed.items()}) for s in batch.slices},
        "names": sorted((m.kind, m.table, m.original, m.name) for m in batch.name_map),
        "rejects": [(r.line, r.reason) for r in batch.rejections],
    }


def shaped_after(warm_up: pa.Table, lines: pa.Table) -> tuple[Batch, Batch]:
    """`lines` through UNIT_STAGES twice: after `warm_up` on the same context (its shape hints
    known: the fast path may run), and alone (no hints: the careful path runs)."""
    con = compute_connection(256)
    try:
        ctx = Context(LoadConfig(), con)
        run(lines_batch(warm_up, "src"), UNIT_STAGES, ctx)
        warm = run(lines_batch(lines, "src"), UNIT_STAGES, ctx)
        cold = run(lines_batch(lines, "src"), UNIT_STAGES, Context(LoadConfig(), con))
    finally:
        con.close()
    assert cold.paths == {"context": "careful", "payload": "careful"}
    assert shape_facts(warm) == shape_facts(cold)
    return warm, cold


def nested(depth: int) -> dict:
    value: dict | int = 1
    for i in range(depth):
        value = {f"d{i}": value}
    return value


EVERY_KIND = {
    "s": 'quote " backslash \\ newline \n tab \t', "u": "é ✓ 😀 \u0000x", "plain": "text",
    "big": 18446744073709551616, "huge": 123456789012345678901234567890, "neg": -9223372036854775808,
    "f": 1.5, "sci": 1e300, "z": -0.0, "t": True, "no": False, "n": None,
    "arr": [1, "x", None], "empty_arr": [], "empty_obj": {}, "obj": {"k": {"deep": 1}, "when": "2024-03-01"},
    "deep": nested(10), "Case": 1, "case": "two", "": "empty key", "mixed": 1,
}
# Raw JSON the json module does not write: 1.50 stays 1.50, 1e400 overflows a double, -0.
RAW_NUMBERS = '"p150":1.50,"p400":1e400,"m0":-0,"e":1E+2'
CONTEXT = {"library": {"name": "analytics.js", "version": "2.0"}, "ip": "1.2.3.4", "Ip": "case"}


def every_kind_line(i: int, event: str = "E", **props) -> str:
    message = {**track(i, event=event, **{**EVERY_KIND, **props}), "context": CONTEXT}
    text = json.dumps(message)
    return text.replace('"properties": {', '"properties": {' + RAW_NUMBERS + ",", 1)


# The kind of a leaf differing between rows, or new keys, or a known object turning scalar:
# the fast path runs and agrees with the careful one.
FAST_CASES = [
    ("the same shape", [every_kind_line(1), every_kind_line(2, "F")]),
    ("kinds conflicting across rows", [every_kind_line(1, mixed="one"), every_kind_line(2, mixed=True),
                                       every_kind_line(3, mixed=[1]), every_kind_line(4, mixed=2.5)]),
    ("new keys, new objects", [every_kind_line(1, brand_new={"inner": {"x": "y"}}, Mixed="new")]),
    ("a known object now a scalar", [every_kind_line(1, obj=5), every_kind_line(2)]),
    ("a known object now empty", [every_kind_line(1, obj={})]),
    ("a malformed line among them", [every_kind_line(1), "{not json", every_kind_line(3)]),
]


@pytest.mark.parametrize(("case", "raw"), FAST_CASES, ids=[c[0] for c in FAST_CASES])
def test_fast_path_equals_careful_path(case, raw):
    warm_up = fixture_lines(every_kind_line(1), every_kind_line(2, "F"))
    warm, _ = shaped_after(warm_up, fixture_lines(*raw))
    assert warm.paths == {"context": "fast", "payload": "fast"}, case


def test_fast_path_values_are_those_sent():
    """Spot checks on the shared result, so equality above is not equality of two wrong things."""
    warm, _ = shaped_after(fixture_lines(every_kind_line(1)), fixture_lines(every_kind_line(2)))
    (event,) = [s for s in warm.slices if s.table == "e"]
    got = {c: (event.values[c].text[0].as_py(), event.values[c].kind[0].as_py())
           for c in ("s", "u", "big", "huge", "p150", "p400", "m0", "t", "arr", "obj_k_deep", "context_library_name")}
    assert got == {
        "s": (EVERY_KIND["s"], Kind.VARCHAR), "u": (EVERY_KIND["u"], Kind.VARCHAR),
        "big": ("18446744073709551616", Kind.UBIGINT), "huge": ("123456789012345678901234567890", Kind.UBIGINT),
        # DuckDB's JSON writer re-renders numbers (today's behaviour, on both paths)
        "p150": ("1.5", Kind.DOUBLE), "p400": ("1e400", Kind.DOUBLE), "m0": ("0", Kind.UBIGINT),
        "t": ("true", Kind.BOOLEAN), "arr": ('[1,"x",null]', Kind.ARRAY), "obj_k_deep": ("1", Kind.UBIGINT),
        "context_library_name": ("analytics.js", Kind.VARCHAR),
    }
    assert event.columns["huge"].types == {Kind.HUGEINT: 1}
    assert event.columns["mixed"].types == {Kind.UBIGINT: 1}
    # keys equal but for case, and the empty key, are still told apart (extracted by pointer)
    assert {s for c in ("case", "context_ip") for s in event.columns[c].sources} == {
        "/properties/Case", "/properties/case", "/context/Ip", "/context/ip"}
    assert list(event.unnamed) == ["/properties/"]


# A leaf the hints know as a scalar now holds an object: that root falls back to the careful
# path (its keys must be found), the other root stays fast.
FALLBACKS = [
    ("payload leaf becomes an object", [every_kind_line(1, mixed={"now": "object"})],
     {"context": "fast", "payload": "careful"}),
    ("payload leaf is an object in one row only", [every_kind_line(1), every_kind_line(2, plain={"a": 1})],
     {"context": "fast", "payload": "careful"}),
    ("context leaf becomes an object", [every_kind_line(1).replace('"ip": "1.2.3.4"', '"ip": {"v4": "1.2.3.4"}')],
     {"context": "careful", "payload": "fast"}),
]


@pytest.mark.parametrize(("case", "raw", "paths"), FALLBACKS, ids=[c[0] for c in FALLBACKS])
def test_fallback_to_careful_path(case, raw, paths):
    warm_up = fixture_lines(every_kind_line(1), every_kind_line(2, "F"))
    warm, _ = shaped_after(warm_up, fixture_lines(*raw))
    assert warm.paths == paths, case


# --- shaping: the single-parse path (a plain known shape, proven by byte lengths) ----------

# EVERY_KIND without what the single-parse path cannot take: a null value (json_transform
# cannot tell it from an absent key) and keys a STRUCT cannot hold (empty, equal but for case).
PLAIN_KIND = {k: v for k, v in EVERY_KIND.items() if k not in ("n", "Case", "case", "")}
PLAIN_CONTEXT = {"library": {"name": "analytics.js", "version": "2.0"}, "ip": "1.2.3.4"}


def plain_line(i: int, event: str = "E", context: object = PLAIN_CONTEXT, drop: tuple[str, ...] = (),
               raw_props: str = RAW_NUMBERS, **props) -> str:
    """A track of PLAIN_KIND (keys in `drop` left out, `props` added or replaced) as JSON
    with spaces after ':' and ',' (validation writes the roots out minified)."""
    properties = {k: v for k, v in {**PLAIN_KIND, **props}.items() if k not in drop}
    message = {**track(i, event=event, **properties), "context": context}
    text = json.dumps(message)
    return text.replace('"properties": {', '"properties": {' + raw_props + ("," if properties else ""), 1)


def reordered_line(i: int) -> str:
    """plain_line(i) with its properties' keys in reverse order."""
    message = json.loads(plain_line(i))
    message["properties"] = dict(reversed(list(message["properties"].items())))
    return json.dumps(message)


# Lines after a warm-up of plain_line(1), plain_line(2, "F") -> the path each root takes.
# Whatever the path, the result is the careful path's (shaped_after asserts it).
SINGLE_CASES = [
    ("the same shape", [plain_line(3), plain_line(4, "F")], "single", "single"),
    ("some known keys absent", [plain_line(3, drop=("s", "obj", "deep")), plain_line(4, raw_props="")],
     "single", "single"),
    ("kinds conflicting across rows", [plain_line(3, mixed="one"), plain_line(4, mixed=True), plain_line(5, mixed=[1]),
                                       plain_line(6, mixed=2.5), plain_line(7, mixed={})], "single", "single"),
    ("keys in another order", [reordered_line(3)], "single", "single"),
    ("roots absent, empty or not objects", [plain_line(3, context="text"), plain_line(4, context={}),
                                            plain_line(5, context=[1]), plain_line(6, context=None)],
     "single", "single"),
    ("a new key", [plain_line(3, brand_new=1)], "single", "fast"),
    ("a new key in a known object", [plain_line(3, obj={"k": {"deep": 1}, "when": "x", "new": 2})], "single", "fast"),
    ("a new context key", [plain_line(3, context={**PLAIN_CONTEXT, "locale": "en"})], "fast", "single"),
    ("a known key holding null", [plain_line(3, plain=None)], "single", "fast"),
    ("a known object holding null", [plain_line(3, obj=None)], "single", "fast"),
    ("a duplicate key", [plain_line(3).replace('"plain": "text"', '"plain": "text", "plain": "again"')],
     "single", "fast"),
    ("a known object now a scalar", [plain_line(3, obj=5)], "single", "fast"),
    ("a known object now empty", [plain_line(3, obj={})], "single", "fast"),
    ("a known object holding only nulls", [plain_line(3, obj={"k": None, "when": None})], "single", "fast"),
    # A known object holding a short scalar writes fewer bytes than `{}`: a new key must not
    # make up for it (an object node with no known key is refused outright).
    ("a known object a scalar, and a new key", [plain_line(3, obj=5, a=1)], "single", "fast"),
    ("a known leaf now an object", [plain_line(3, plain={"a": 1})], "single", "careful"),
]


@pytest.mark.parametrize(("case", "raw", "context", "payload"), SINGLE_CASES, ids=[c[0] for c in SINGLE_CASES])
def test_single_parse_path_or_its_fallback_equals_careful_path(case, raw, context, payload):
    warm, _ = shaped_after(fixture_lines(plain_line(1), plain_line(2, "F")), fixture_lines(*raw))
    assert warm.paths == {"context": context, "payload": payload}, case


def test_a_failed_proof_skips_the_single_parse_path_for_a_few_batches():
    """A source whose objects often hold nulls must not pay the extraction twice in every
    batch: after a failed proof the root takes the fast path for SINGLE_BACKOFF_BATCHES
    batches, then tries again."""
    from loader.normalize import SINGLE_BACKOFF_BATCHES

    con = compute_connection(256)
    try:
        ctx = Context(LoadConfig(), con)
        lines = [plain_line(1), plain_line(2, plain=None)] + [plain_line(i) for i in range(3, 4 + SINGLE_BACKOFF_BATCHES)]
        taken = [run(lines_batch(fixture_lines(line), "src"), UNIT_STAGES, ctx).paths["payload"] for line in lines]
    finally:
        con.close()
    assert taken == ["careful", "fast"] + ["fast"] * SINGLE_BACKOFF_BATCHES + ["single"]


def test_a_proof_failed_by_new_keys_is_tried_again_at_once():
    """New keys make the proof fail once; the fast path adds them to the hints, and the next
    batch's proof (over the grown shape) is tried at once, without waiting."""
    con = compute_connection(256)
    try:
        ctx = Context(LoadConfig(), con)
        lines = [plain_line(1), plain_line(2, brand_new=1), plain_line(3, brand_new=2)]
        taken = [run(lines_batch(fixture_lines(line), "src"), UNIT_STAGES, ctx).paths["payload"] for line in lines]
    finally:
        con.close()
    assert taken == ["careful", "fast", "single"]


def test_single_parse_path_values_are_those_sent():
    """Spot checks of the single-parse path's result (equal to the careful one above)."""
    warm, _ = shaped_after(fixture_lines(plain_line(1)), fixture_lines(plain_line(2, mixed="x"), plain_line(3)))
    assert warm.paths == {"context": "single", "payload": "single"}
    (event,) = [s for s in warm.slices if s.table == "e"]
    got = {c: event.values[c].text.to_pylist() for c in ("s", "u", "p150", "p400", "m0", "e", "mixed",
                                                         "obj_k_deep", "deep_d9_d8_d7_d6_d5_d4_d3", "empty_obj",
                                                         "context_library_name")}
    assert got == {"s": [PLAIN_KIND["s"]] * 2, "u": [PLAIN_KIND["u"]] * 2, "p150": ["1.5"] * 2,
                   "p400": ["1e400"] * 2, "m0": ["0"] * 2, "e": ["100.0"] * 2, "mixed": ["x", "1"],
                   "obj_k_deep": ["1"] * 2, "deep_d9_d8_d7_d6_d5_d4_d3": ['{"d2":{"d1":{"d0":1}}}'] * 2,  # MAX_DEPTH
                   "empty_obj": [None, None], "context_library_name": ["analytics.js"] * 2}
    assert event.columns["mixed"].types == {Kind.VARCHAR: 1, Kind.UBIGINT: 1}


def test_single_parse_path_refuses_a_key_written_with_escapes():
    """A known key DuckDB writes with escapes (a quote, a control character) counts only its
    raw bytes in the proof, so the proof fails (the fast path runs) rather than pass falsely."""
    for key in ('say "hi"', "tab\there"):
        warm_up = fixture_lines(plain_line(1, **{key: 1}), plain_line(2, **{key: 2}))
        warm, _ = shaped_after(warm_up, fixture_lines(plain_line(3, **{key: 3})))
        assert warm.paths == {"context": "single", "payload": "fast"}, key


def test_first_batch_takes_the_careful_path_and_leaves_hints_for_the_fast_one():
    con = compute_connection(256)
    try:
        ctx = Context(LoadConfig(), con)
        first = run(lines_batch(fixture_lines(every_kind_line(1)), "src"), UNIT_STAGES, ctx)
        second = run(lines_batch(fixture_lines(every_kind_line(2)), "src"), UNIT_STAGES, ctx)
    finally:
        con.close()
    assert first.paths == {"context": "careful", "payload": "careful"}
    assert second.paths == {"context": "fast", "payload": "fast"}  # EVERY_KIND holds a null: not "single"


def test_query_rows_come_back_in_line_order():
    """Shaping queries have no ORDER BY (it sorted the wide rows): in_line_order sorts only
    when the scan did not keep the order, here a table registered in reverse."""
    con = compute_connection(256)
    try:
        con.register("backwards", pa.table({"line_no": pa.array([5, 3, 9, 1], pa.int64()),
                                            "x": pa.array(["e", "c", "i", "a"])}))
        got = in_line_order(con, "SELECT line_no, x FROM backwards")
    finally:
        con.close()
    assert got.to_pydict() == {"line_no": [1, 3, 5, 9], "x": ["a", "c", "e", "i"]}


def test_combine_chunks_keeps_a_single_chunk_without_a_copy():
    """pyarrow's combine_chunks copies even a single chunk (each root's whole STRUCT, every
    batch); ours hands that chunk back (same buffers) and joins several as pyarrow does."""
    from loader.normalize import combine_chunks

    single = pa.chunked_array([pa.array(["a", "bb", None])])
    kept = combine_chunks(single)
    assert kept.buffers()[2].address == single.chunk(0).buffers()[2].address
    assert kept.to_pylist() == ["a", "bb", None]
    several = pa.chunked_array([pa.array(["a"]), pa.array(["bb", None])])
    assert combine_chunks(several).to_pylist() == ["a", "bb", None]
    array = pa.array([1, 2])
    assert combine_chunks(array) is array
