"""Each bad-input pathology is a named fixture file with its expected outcome.

Every line ends as exactly one of: a loaded row, a counted duplicate, or a reject (raw
bytes, file, line, reason).
"""

import pytest
from conftest import PATHOLOGIES, query, run_load

# file -> (rows loaded, duplicates, {line: reason})
EXPECTED = {
    "malformed_json.ndjson": (2, 0, {2: "malformed_json"}),
    "not_an_object.ndjson": (2, 0, {2: "not_an_object", 3: "not_an_object", 4: "not_an_object"}),
    "missing_message_id.ndjson": (1, 0, {2: "missing_message_id", 3: "missing_message_id"}),
    "unknown_type.ndjson": (1, 0, {2: "unknown_type", 3: "missing_type"}),
    "track_without_event.ndjson": (1, 0, {2: "missing_event", 3: "missing_event"}),
    "no_identity.ndjson": (1, 0, {2: "missing_identity", 3: "missing_identity"}),
    "blank_lines.ndjson": (2, 0, {2: "empty_line", 3: "empty_line"}),
    "crlf_no_trailing_newline.ndjson": (3, 0, {}),
    "duplicates_in_file.ndjson": (2, 2, {}),
    "oversized_line.ndjson": (2, 0, {2: "oversized"}),
    "invalid_utf8.ndjson": (2, 0, {2: "invalid_utf8"}),
    "nul_byte.ndjson": (1, 0, {2: "malformed_json"}),  # a raw control character in a string
    "not_gzip_despite_name.ndjson.gz": (5, 0, {}),
    "gzip_without_gz_name.ndjson": (5, 0, {}),
    "concatenated_members.ndjson.gz": (5, 0, {}),
    "zero_bytes.ndjson": (0, 0, {}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pathology_outcome_and_conservation(name, db):
    rows, duplicates, rejects = EXPECTED[name]
    result = run_load([PATHOLOGIES / name], db, max_reject_ratio=1.0)
    (f,) = result.files
    assert f.status == "loaded", f.reason
    assert (f.rows_loaded, f.duplicates) == (rows, duplicates)
    got = dict(query(db, "SELECT line, reason FROM _loader.rejects ORDER BY line"))
    assert got == rejects
    assert f.lines == f.rows_loaded + f.duplicates + f.rejects
    assert query(db, "SELECT count(*) FROM _loader.seen_messages")[0][0] == rows
    manifest = query(db, "SELECT lines, rows_loaded, duplicates, rejects FROM _loader.files")
    assert manifest == [(f.lines, rows, duplicates, len(rejects))]


def test_rejects_keep_raw_bytes_file_and_reason(db):
    run_load([PATHOLOGIES / "invalid_utf8.ndjson"], db, max_reject_ratio=1.0)
    (path, line, reason, raw), = query(db, "SELECT path, line, reason, raw FROM _loader.rejects")
    assert path.endswith("invalid_utf8.ndjson") and line == 2 and reason == "invalid_utf8"
    assert raw == b'{"messageId":"m2","type":"track","event":"X","userId":"\xff\xfe"}'


@pytest.mark.parametrize("name", ["truncated.ndjson.gz", "corrupt.ndjson.gz"])
def test_broken_gzip_keeps_earlier_lines_and_records_the_fault(name, db):
    result = run_load([PATHOLOGIES / name], db, max_reject_ratio=1.0)
    (f,) = result.files
    assert f.status == "loaded" and f.rows_loaded > 50
    faults = query(db, "SELECT line, detail FROM _loader.rejects WHERE reason = 'gzip_fault'")
    assert len(faults) == 1 and faults[0][0] == f.lines
    assert f.lines == f.rows_loaded + f.duplicates + f.rejects


def test_in_file_duplicates_keep_the_earliest_received_copy(db):
    run_load([PATHOLOGIES / "duplicates_in_file.ndjson"], db)
    rows = query(db, 'SELECT id, plan FROM segment.signed_up ORDER BY id')
    assert rows == [("m1", "early"), ("m2", "pro")]
