"""The bundled archive (sample_data/, see its README for the story) through the loader."""

import shutil

import pytest
from conftest import SAMPLE, cli, query, run_load, table_snapshot

BAD_FILE = "src_web/1714953600000/1714982400000.21dc9a9a.gz"
ARCHIVE = SAMPLE / "segment-logs"  # sample_data/ also holds the example tracking plan and PII config


@pytest.fixture(params=["local", "s3"])
def archive(request):
    """The archive on local disk, and the same files in a bucket on a local S3 server."""
    return ARCHIVE if request.param == "local" else request.getfixturevalue("sample_bucket")


def test_sample_archive_loads_with_every_line_accounted_for(db, archive):
    result = run_load([archive], db)
    s = result.summary()
    assert s["files_loaded"] == 18 and s["files_failed"] == 0
    assert (s["lines"], s["rows_loaded"], s["duplicates"], s["rejects"]) == (260, 252, 2, 6)
    for f in result.files:
        assert f.lines == f.rows_loaded + f.duplicates + f.rejects
    rejects = query(db, "SELECT path, line, reason FROM _loader.rejects ORDER BY line")
    assert {p.split("segment-logs/")[1] for p, _, _ in rejects} == {BAD_FILE}
    assert [r for _, _, r in rejects] == [
        "malformed_json", "not_an_object", "missing_message_id", "unknown_type", "missing_event", "missing_identity"]


def test_sample_archive_tables_names_and_types(db, archive):
    run_load([archive], db)
    tables = {r[0] for r in query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'segment'")}
    assert {"tracks", "identifies", "users", "pages", "screens", "groups", "accounts", "aliases",
            "order_completed", "order_refunded", "order_cancelled", "product_viewed", "product_added",
            "checkout_started", "_users", "_select", "_2fa_enabled", "confetti_shown"} <= tables
    # `Order Completed` and `order_completed` share a table; event_text tells them apart
    assert sorted(query(db, "SELECT DISTINCT event_text FROM segment.order_completed")) == [
        ("Order Completed",), ("order_completed",)]
    # the 110-character name is cut with a hash, and mapped back
    (long_table,) = [t for t in tables if t.startswith("clicked_the_very_long")]
    assert len(long_table) == 63
    assert query(db, "SELECT count(*) FROM _loader.name_map WHERE kind = 'table' AND name = ?", [long_table]) == [(1,)]
    # type drift: rating 4/5 then "N/A" -> BIGINT plus one discard with the raw value
    assert query(db, "SELECT table_name, column_name, raw_value, column_type FROM _loader.discards") == [
        ("product_viewed", "rating", "N/A", "BIGINT")]
    # the refund amount sent as a string is cast losslessly into the DOUBLE column
    assert (12.5,) in query(db, "SELECT total FROM segment.order_refunded")
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM segment.tracks")[0] == (37, 37)


def test_sample_users_hold_latest_non_null_traits(db, archive):
    run_load([archive], db)
    alice = query(db, "SELECT email, plan, first_name, favorite_color, context_traits_phone FROM segment.users WHERE id = 'usr_alice'")
    assert alice == [("alice@example.com", "pro", "Alice", "blue", "+1-555-0100")]
    assert query(db, "SELECT count(*) FROM segment.users")[0][0] == 10
    assert query(db, "SELECT count(*) FROM segment.accounts")[0][0] == 2


def test_sample_rerun_is_a_no_op_and_split_invariant(tmp_path, db):
    run_load([ARCHIVE], db)
    proc = cli("load", str(ARCHIVE), "--db", str(db))
    assert proc.returncode == 0 and "nothing to load: all 18 file(s)" in proc.stdout
    by_day = tmp_path / "by_day.duckdb"
    for day in ["1714953600000", "1715040000000", "1715126400000"]:
        run_load(sorted(SAMPLE.glob(f"segment-logs/*/{day}/*.gz")), by_day)
    # per-day loads visit files in another order than one load of everything (sources first),
    # but the archive's duplicates are exact copies, so the tables are the same
    assert table_snapshot(by_day) == table_snapshot(db)
    copy = tmp_path / "copy" / "segment-logs"
    shutil.copytree(ARCHIVE, copy)
    assert run_load([copy], db).summary()["files_skipped"] == 18  # same content elsewhere: skipped
