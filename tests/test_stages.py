"""Each stage on its own, as fixture tables (sqlglot's style): input -> expected output.

Naming (name -> table/column) has its own tables in test_naming.py.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from loader.cast import cast_values
from loader.config import LoadConfig
from loader.normalize import ColumnStats, compute_connection, json_kinds
from loader.schema import infer_type, may_discard, needs_widening
from loader.spec import ColumnType, Kind
from loader.stages import UNIT_STAGES, Batch, Context, lines_batch, run

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


@pytest.mark.parametrize(("line", "table", "standard"), ENVELOPES)
def test_envelope_to_standard_columns(line, table, standard):
    lines = pa.table({"line_no": pa.array([1], pa.int64()), "raw": pa.array([line])})
    batch = unit_stages(lines, "src")
    assert batch.rejections == []
    (slice_,) = [s for s in batch.slices if s.table == table]
    got = {col: slice_.values[col].text[0].as_py() for col in standard}
    assert got == standard


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
]


@pytest.mark.parametrize(("line", "reason"), REJECTS)
def test_message_to_reject_reason(line, reason):
    lines = pa.table({"line_no": pa.array([7], pa.int64()), "raw": pa.array([line])})
    batch = unit_stages(lines)
    assert [(r.line, r.reason, r.raw) for r in batch.rejections] == [(7, reason, line.encode())]
    assert batch.slices == []
