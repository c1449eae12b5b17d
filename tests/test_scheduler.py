"""What a scheduler and an on-call person see (issue 11): exit codes, one clear line per
failure, each problem reported once and cleared when fixed. Real `python -m loader`
processes on real DuckDB files."""

from __future__ import annotations

import gzip
import json
import resource
import signal
import subprocess
import sys

import pytest
from conftest import REPO, cli, event, query, write_ndjson


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The failure is one `error:` line on stderr, never a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def archive(tmp_path):
    return write_ndjson(tmp_path / "logs" / "a.ndjson", [event(1), event(2)]).parent


# 1. Tracebacks and the wrong exit code --------------------------------------------------

@pytest.mark.parametrize(("kind", "expected"), [
    ("not_duckdb", "exists but is not a DuckDB database"),
    ("directory", "is a folder"),
    ("missing_parent", "does not exist"),
    ("read_only_place", "Permission denied"),
])
def test_unusable_db_path_is_a_usage_error_not_a_traceback(kind, expected, tmp_path, archive):
    db = {"not_duckdb": tmp_path / "x.duckdb", "directory": tmp_path / "dir.duckdb",
          "missing_parent": tmp_path / "nope" / "w.duckdb", "read_only_place": "/sys/w.duckdb"}[kind]
    if kind == "not_duckdb":
        db.write_text("hi\n")
    elif kind == "directory":
        db.mkdir()
    for command in (["load", str(archive)], ["status"]):
        proc = cli(*command, "--db", str(db))
        assert proc.returncode == 2, proc.stderr
        line = one_error_line(proc)
        if command[0] == "load":
            assert expected in line and "check --db" in line


def test_status_of_an_empty_duckdb_file_says_nothing_was_loaded(tmp_path):
    import duckdb

    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    proc = cli("status", "--db", str(db))
    assert proc.returncode == 2
    assert "nothing was loaded into it yet" in one_error_line(proc)


def test_full_disk_reports_the_write_error_and_records_the_run_as_failed(tmp_path):
    """A file size limit makes writes fail with EFBIG as a full disk fails them with ENOSPC."""
    small = write_ndjson(tmp_path / "a" / "small.ndjson", [event(1)])
    db = tmp_path / "w.duckdb"
    assert cli("load", str(small), "--db", str(db)).returncode == 0
    for k in range(4):
        write_ndjson(tmp_path / "b" / f"big{k}.ndjson",
                     [event(f"b{k}-{i}", properties={"text": "x" * 200, "n": i}) for i in range(5000)])
    limit = db.stat().st_size + (1 << 20)

    def cap_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "loader", "load", str(tmp_path / "b"), "--db", str(db),
                           "--commit-every-rows", "1"], capture_output=True, text=True, check=False,
                          timeout=300, cwd=REPO, preexec_fn=cap_file_size)
    assert proc.returncode == 4
    line = one_error_line(proc)
    assert "File too large" in line and "disk full" in line and "cannot rollback" not in line
    runs = query(db, "SELECT status, files_loaded, rows_loaded FROM _loader.loads ORDER BY load_id")
    committed = query(db, "SELECT count(*), sum(rows_loaded) FROM _loader.files WHERE load_id = 2")[0]
    assert runs[1][0] == "failed" and runs[1][1:] == (committed[0], committed[1] or 0)
    assert cli("load", str(tmp_path / "b"), "--db", str(db)).returncode == 0  # room again: finishes


def test_status_piped_into_head_ends_quietly(tmp_path):
    """`status | head`: the reader goes away; no BrokenPipeError traceback, exit 0."""
    wide = write_ndjson(tmp_path / "wide.ndjson", [event(1, properties={f"p{i}": i for i in range(3000)})])
    db = tmp_path / "w.duckdb"
    assert cli("load", str(wide), "--db", str(db), "--max-event-bytes", "100000").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "loader", "status", "--db", str(db), "--verbose"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"Last loads")
    proc.stdout.close()  # as `head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and stderr == ""


# 2. One bad file alerts once --------------------------------------------------------------

def test_unchanged_failed_file_alerts_once_and_is_listed_once(tmp_path, archive):
    bad = archive / "package.json"
    bad.write_text('{\n  "name": "pkg",\n  "version": "1.0.0"\n}\n')
    db = tmp_path / "w.duckdb"
    first = cli("load", str(archive), "--db", str(db))
    assert first.returncode == 1 and "package.json" in one_error_line(first)
    for _ in range(2):  # the next hourly runs: nothing new, no alert
        again = cli("load", str(archive), "--db", str(db))
        assert again.returncode == 0, again.stderr
        assert "1 failed before and unchanged" in again.stdout
    status = json.loads(cli("status", "--db", str(db), "--json").stdout)
    assert [(f["path"], f["attempts"]) for f in status["failed_files"]] == [(str(bad), 1)]
    # asked to, it is read again (and fails again); excluded, it is not read at all
    assert cli("load", str(archive), "--db", str(db), "--retry-failed").returncode == 1
    excluded = cli("load", str(archive), "--db", str(db), "--retry-failed", "--exclude", "package.json", "--json")
    assert excluded.returncode == 0 and json.loads(excluded.stdout)["files_seen"] == 1
    # a fixed file (new content) is read without being asked, and its failure is closed
    write_ndjson(bad, [event(3)])
    assert cli("load", str(archive), "--db", str(db)).returncode == 0
    assert json.loads(cli("status", "--db", str(db), "--json").stdout)["failed_files"] == []


# 3. Stale problems clear -----------------------------------------------------------------

def test_problems_of_a_superseded_file_version_are_no_longer_open(tmp_path):
    lines = [event(i) for i in range(200)]
    path = write_ndjson(tmp_path / "logs" / "day.ndjson.gz", lines)
    complete = path.read_bytes()
    path.write_bytes(complete[: len(complete) // 2])  # still being written
    db = tmp_path / "w.duckdb"
    assert cli("load", str(path), "--db", str(db)).returncode == 0
    open_before = json.loads(cli("status", "--db", str(db), "--json").stdout)
    assert [r["reason"] for r in open_before["rejects_by_reason"]] == ["gzip_fault"]
    path.write_bytes(complete)  # the sync finished
    assert cli("load", str(path), "--db", str(db)).returncode == 0
    status = json.loads(cli("status", "--db", str(db), "--json").stdout)
    assert status["rejects_by_reason"] == [] and status["superseded_rejects"] == 1
    assert query(db, "SELECT count(*) FROM _loader.rejects WHERE reason = 'gzip_fault'")[0][0] == 1  # audit
    assert query(db, "SELECT count(*) FROM segment.signed_up")[0][0] == 200
    assert [r["status"] for r in status["files"]] == ["loaded", "loaded (superseded)"]


def test_failure_of_a_partial_version_clears_when_the_complete_file_loads(tmp_path):
    path = tmp_path / "logs" / "day.ndjson.gz"
    path.parent.mkdir()
    full = gzip.compress(b"".join(json.dumps(event(i)).encode() + b"\n" for i in range(50)), mtime=0)
    path.write_bytes(full[:40])  # a stub: almost nothing decodes, so the file fails
    db = tmp_path / "w.duckdb"
    assert cli("load", str(path), "--db", str(db), "--max-reject-ratio", "0").returncode == 1
    assert len(json.loads(cli("status", "--db", str(db), "--json").stdout)["failed_files"]) == 1
    path.write_bytes(full)
    assert cli("load", str(path), "--db", str(db), "--max-reject-ratio", "0").returncode == 0
    status = json.loads(cli("status", "--db", str(db), "--json").stdout)
    assert status["failed_files"] == [] and status["rejects_by_reason"] == []


# 4. The line balance holds for failed files ------------------------------------------------

def test_every_line_of_a_failed_file_is_a_reject(tmp_path):
    bad = write_ndjson(tmp_path / "bad.ndjson", [event(1), "garbage", "more garbage", event(2), "", event(3), "{}"])
    db = tmp_path / "w.duckdb"
    proc = cli("load", str(bad), "--db", str(db), "--max-reject-ratio", "0.2", "--json")
    assert proc.returncode == 1
    (f,) = json.loads(proc.stdout)["files"]
    assert (f["lines"], f["rows_loaded"], f["duplicates"], f["rejects"]) == (7, 0, 0, 7)
    assert query(db, "SELECT lines, rows_loaded + duplicates + rejects FROM _loader.files") == [(7, 7)]
    rejects = query(db, "SELECT line, reason, decode(raw) FROM _loader.rejects ORDER BY line")
    assert [r[:2] for r in rejects] == [
        (1, "file_failed"), (2, "malformed_json"), (3, "malformed_json"), (4, "file_failed"),
        (5, "empty_line"), (6, "file_failed"), (7, "missing_message_id")]
    assert json.loads(rejects[0][2])["messageId"] == "m1"  # the raw bytes, recoverable


# 5. Nothing to load is not healthy ---------------------------------------------------------

@pytest.mark.parametrize("content", ["empty", "only_csv", "unmounted"])
def test_a_path_without_input_files_is_a_usage_error(content, tmp_path):
    folder = tmp_path / "sync"
    if content != "unmounted":
        folder.mkdir()
    if content == "only_csv":
        (folder / "export.csv").write_text("a,b\n")
        (folder / "notes.txt").write_text("hi\n")
    proc = cli("load", str(folder), "--db", str(tmp_path / "w.duckdb"), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["exit_code"] == 2
    assert str(folder) in one_error_line(proc)


def test_nothing_new_stays_success_and_dangling_symlinks_are_reported(tmp_path, archive):
    db = tmp_path / "w.duckdb"
    assert cli("load", str(archive), "--db", str(db)).returncode == 0
    again = cli("load", str(archive), "--db", str(db))
    assert again.returncode == 0 and "nothing to load" in again.stdout
    (archive / "gone.ndjson").symlink_to(tmp_path / "moved-away.ndjson")
    proc = cli("load", str(archive), "--db", str(db))
    assert proc.returncode == 1
    assert "gone.ndjson" in one_error_line(proc) and "which does not exist" in proc.stderr


# 7. status is short where it matters least -------------------------------------------------

def test_status_summarises_schema_changes_and_orders_tables_naturally(tmp_path):
    wide = [event(i, event=f"New Event {i}", properties={f"p{j}": j for j in range(30)}) for i in range(1, 13)]
    db = tmp_path / "w.duckdb"
    assert cli("load", str(write_ndjson(tmp_path / "wide.ndjson", wide)), "--db", str(db)).returncode == 0
    text = cli("status", "--db", str(db)).stdout
    section = text.split("Schema changes in the last load (1):\n")[1].split("Tables:")[0]
    assert len(section.splitlines()) <= 4, section
    assert "13 table(s) created" in section and "--verbose" in section
    tables = [line.split()[0] for line in text.split("Tables:\n")[1].splitlines()[1:]]
    assert tables[:3] == ["new_event_1", "new_event_2", "new_event_3"] and tables[11] == "new_event_12"
    verbose = cli("status", "--db", str(db), "--verbose").stdout
    assert "p29" in verbose and verbose.count("add_column") > 12 * 30
    one = json.loads(cli("status", "--db", str(db), "--json", "--table", "new_event_2").stdout)
    assert {c["table_name"] for c in one["schema_changes_last_load"]} == {"new_event_2"}


def test_status_shows_the_last_load_with_rows_beyond_the_last_five(tmp_path, archive):
    db = tmp_path / "w.duckdb"
    for _ in range(7):  # one load with rows, then six hourly runs with nothing new
        assert cli("load", str(archive), "--db", str(db)).returncode == 0
    text = cli("status", "--db", str(db)).stdout
    assert "last load that loaded rows: 1 (succeeded" in text and "2 rows" in text


def test_failed_file_line_names_the_path_once(tmp_path):
    bad = write_ndjson(tmp_path / "bad.ndjson", ["garbage"] * 3)
    db = tmp_path / "w.duckdb"
    cli("load", str(bad), "--db", str(db))
    row = next(line for line in cli("status", "--db", str(db)).stdout.splitlines() if "bad.ndjson" in line)
    assert row.count(str(bad)) == 1 and len(row) < len(str(bad)) + 220


def test_load_json_counts_skipped_files_unless_verbose(tmp_path):
    for i in range(5):
        write_ndjson(tmp_path / "logs" / f"{i}.ndjson", [event(i)])
    db = tmp_path / "w.duckdb"
    assert cli("load", str(tmp_path / "logs"), "--db", str(db)).returncode == 0
    quiet = json.loads(cli("load", str(tmp_path / "logs"), "--db", str(db), "--json").stdout)
    assert quiet["files"] == [] and quiet["skipped_by_reason"] == {"already loaded": 5}
    verbose = json.loads(cli("load", str(tmp_path / "logs"), "--db", str(db), "--json", "--verbose").stdout)
    assert [f["status"] for f in verbose["files"]] == ["skipped"] * 5


# 8. Smaller ones -----------------------------------------------------------------------------

def test_ctrl_c_marks_the_run_interrupted_with_its_committed_files(tmp_path):
    for i in range(6):
        write_ndjson(tmp_path / "logs" / f"{i}.ndjson", [event(f"{i}-{j}") for j in range(3)])
    db = tmp_path / "w.duckdb"
    proc = cli("load", str(tmp_path / "logs"), "--db", str(db), "--commit-every-rows", "1",
               env={"SEGMENT_LOADER_CRASH_AT": "after_commit:3", "SEGMENT_LOADER_CRASH_SIGNAL": "INT"})
    assert proc.returncode == 130
    assert "interrupted" in one_error_line(proc)
    assert query(db, "SELECT status, files_seen, files_loaded, rows_loaded FROM _loader.loads") == [
        ("interrupted", 6, 3, 9)]


def test_progress_counts_only_the_files_to_load(tmp_path):
    from conftest import run_load

    files = [write_ndjson(tmp_path / f"{i}.ndjson", [event(i)]) for i in range(3)]
    db = tmp_path / "w.duckdb"
    run_load(files[:2], db)
    seen: list[dict] = []
    run_load(files, db, progress=seen.append)
    assert (seen[-1]["files_done"], seen[-1]["files"]) == (1, 1)


def test_quiet_prints_nothing_when_all_went_well(tmp_path, archive):
    proc = cli("load", str(archive), "--db", str(tmp_path / "w.duckdb"), "--quiet")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_json_errors_for_usage_and_lock(tmp_path, archive):
    from test_load import hold_database

    db = tmp_path / "w.duckdb"
    usage = cli("load", str(archive), "--db", str(db), "--json", "--no-such-option")
    assert usage.returncode == 2 and json.loads(usage.stdout)["error"]["exit_code"] == 2
    assert cli("load", str(archive), "--db", str(db)).returncode == 0
    holder = hold_database(db)
    try:
        locked = cli("load", str(archive), "--db", str(db), "--json")
    finally:
        holder.kill()
        holder.wait()
    assert locked.returncode == 3
    error = json.loads(locked.stdout)["error"]
    assert error["exit_code"] == 3 and f"PID {holder.pid}" in error["message"]


def test_status_help_describes_its_options():
    text = cli("status", "--help").stdout
    for option, words in [("--db", "DuckDB file"), ("--json", "JSON"), ("--verbose", "schema change"),
                          ("--table", "schema changes of this table")]:
        assert option in text and words in text


@pytest.mark.parametrize("option", [
    ("--commit-every-rows", "0"), ("--max-event-bytes", "0"), ("--max-event-bytes", "-1"),
    ("--schema", "_loader"), ("--schema", "main"), ("--schema", "information_schema"), ("--schema", "pg_catalog"),
])
def test_values_that_would_fail_every_file_are_usage_errors(option, tmp_path, archive):
    db = tmp_path / "w.duckdb"
    proc = cli("load", str(archive), "--db", str(db), *option)
    assert proc.returncode == 2
    assert option[1] in one_error_line(proc)
    assert not db.exists()  # refused before anything was written



# 6. Batch envelopes --------------------------------------------------------------------------

def test_batch_envelope_expands_into_its_messages(tmp_path):
    """The body of Segment's /v1/batch on one line: each message loads; envelope fields apply
    where a message has none; a bad message is a reject that names its line and position."""
    no_received = event(1)
    del no_received["receivedAt"]
    envelope = {"batch": [no_received, event(2, context={"ip": "1.2.3.4"}),
                          {"type": "track", "event": "X", "userId": "u"}],
                "sentAt": "2024-03-01T10:00:01Z", "receivedAt": "2024-03-01T10:00:02Z",
                "context": {"library": {"name": "analytics-node"}}, "writeKey": "wk"}
    path = write_ndjson(tmp_path / "collector.ndjson", [event(0), envelope, {"batch": []}, event(3)])
    db = tmp_path / "w.duckdb"
    proc = cli("load", str(path), "--db", str(db), "--max-reject-ratio", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["lines"], summary["rows_loaded"], summary["rejects"]) == (6, 4, 2)  # 1 line per message
    rows = query(db, "SELECT id, received_at::VARCHAR, sent_at::VARCHAR, context_ip, context_library_name "
                     "FROM segment.signed_up ORDER BY id")
    assert rows == [
        ("m0", "2024-03-01 10:00:00+00", None, None, None),
        ("m1", "2024-03-01 10:00:02+00", "2024-03-01 10:00:01+00", None, "analytics-node"),  # envelope's
        ("m2", "2024-03-01 10:00:00+00", "2024-03-01 10:00:01+00", "1.2.3.4", None),  # its own win
        ("m3", "2024-03-01 10:00:00+00", None, None, None),
    ]
    rejects = query(db, "SELECT line & 4294967295, line >> 32, reason, decode(raw) FROM _loader.rejects ORDER BY 1, 2")
    assert [r[:3] for r in rejects] == [(2, 3, "missing_message_id"), (3, 0, "empty_batch")]
    assert json.loads(rejects[0][3])["event"] == "X" and json.loads(rejects[0][3])["writeKey"] == "wk"


def test_batch_envelope_may_exceed_the_event_limit_but_its_messages_may_not(tmp_path):
    messages = [event(i, properties={"text": "x" * 1000}) for i in range(60)]  # about 70 KB in all
    big = event(99, properties={"batch": "y" * 40_000})  # mentions "batch", is no envelope
    path = write_ndjson(tmp_path / "collector.ndjson", [{"batch": messages}, big, event(100)])
    db = tmp_path / "w.duckdb"
    proc = cli("load", str(path), "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    assert query(db, "SELECT count(*) FROM segment.signed_up")[0][0] == 61
    assert query(db, "SELECT line, reason FROM _loader.rejects") == [(2, "oversized")]
