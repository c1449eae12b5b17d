"""Crash safety: a load killed at any point, then re-run, equals one clean run."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, event, query, table_snapshot, write_ndjson

from loader.faults import CRASH_POINTS


def make_archive(root, files=6, per_file=40, seed=11):
    """Files with cross-file duplicates (half of them received earlier than the previous
    file's copy, which they supersede), identifies, several events and schema drift."""
    rng = random.Random(seed)
    names = ["Product Viewed", "Order Completed", "Signed Up"]
    paths = []
    for f in range(files):
        lines = []
        for i in range(per_file):
            n = f * per_file + i
            received = {}
            if i % 10 == 0 and f > 0:  # a retried message from the previous file
                n -= per_file
                if i % 20 == 0:
                    received = {"receivedAt": "2024-03-01T09:00:00.000Z"}
            price = n if f < files // 2 else n + 0.5  # BIGINT first, then widened
            if i % 7 == 0:
                lines.append(event(n, type="identify", userId=f"u{n % 13}", **received,
                                   traits={"plan": rng.choice(["free", "pro"]), f"t{f}": n}))
            else:
                lines.append(event(n, event=names[n % 3], properties={"price": price, f"p{f}": "x"}, **received))
        if f == 2:
            lines.append("garbage line")
        paths.append(write_ndjson(root / "segment-logs" / "src" / "1709251200000" / f"{f:02}.ndjson.gz", lines))
    return paths


def load_cmd(archive, db, *options, **env):
    return subprocess.run(
        [sys.executable, "-m", "loader", "load", str(archive), "--db", str(db), *options],
        capture_output=True, text=True, check=False, timeout=300, cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != "SEGMENT_LOADER_CRASH_AT"}, **env},
    )


def manifest(db):
    return sorted(query(db, "SELECT path, status, lines, rows_loaded, duplicates, rejects, discards "
                            "FROM _loader.files WHERE status = 'loaded'"))


def assert_consistent(db):
    """No file marked loaded without its rows; no message id twice."""
    assert query(db, "SELECT count(*) - count(DISTINCT message_id) FROM _loader.seen_messages")[0][0] == 0
    mismatched = query(db, """
        SELECT f.path FROM _loader.files f
        LEFT JOIN (SELECT file_id, count(*) AS n FROM _loader.seen_messages GROUP BY file_id) s USING (file_id)
        WHERE f.status = 'loaded' AND coalesce(s.n, 0) <> f.rows_loaded""")
    assert mismatched == []


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    archive = root / "logs"
    make_archive(archive)
    db = root / "clean.duckdb"
    assert load_cmd(archive, db).returncode == 0
    return archive, table_snapshot(db), manifest(db)


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize(("nth", "group_rows"), [(1, "1"), (4, "1"), (1, "100000"), (3, "100")])
def test_crash_then_rerun_equals_one_clean_run(point, nth, group_rows, clean, tmp_path):
    """Files committed one per transaction (group of 1 row), all in one group, or a few per
    group: wherever the kill lands, the re-run gives the clean result."""
    archive, tables, files = clean
    db = tmp_path / "w.duckdb"
    crashed = load_cmd(archive, db, "--commit-every-rows", group_rows,
                       SEGMENT_LOADER_CRASH_AT=f"{point}:{nth}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    if _has_manifest(db):  # the crash may come before the first commit
        assert_consistent(db)
    rerun = load_cmd(archive, db)
    assert rerun.returncode == 0, rerun.stderr
    assert table_snapshot(db) == tables
    assert [f[1:] for f in manifest(db)] == [f[1:] for f in files]
    assert_consistent(db)
    assert query(db, "SELECT status FROM _loader.loads ORDER BY load_id") == [("interrupted",), ("succeeded",)]
    # the interrupted run's totals follow its files' counts, which the re-run may have changed
    # (copies it loaded that a file received earlier superseded)
    assert query(db, "SELECT sum(rows_loaded), sum(duplicates) FROM _loader.loads") == query(
        db, "SELECT sum(rows_loaded), sum(duplicates) FROM _loader.files")


def _has_manifest(db):
    return bool(query(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = '_loader' AND table_name = 'files'")[0][0])


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path):
    archive = tmp_path / "logs"
    make_archive(archive, files=24, per_file=600, seed=5)
    clean_db = tmp_path / "clean.duckdb"
    started = time.monotonic()
    assert load_cmd(archive, clean_db).returncode == 0
    clean_seconds = time.monotonic() - started
    db = tmp_path / "w.duckdb"
    rng = random.Random(2024)
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-m", "loader", "load", str(archive), "--db", str(db)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Moments scaled to how long a whole load takes here, so a faster loader (or machine)
        # is still killed mid-way rather than after it has finished.
        time.sleep(rng.uniform(0.2, 0.9) * clean_seconds)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if db.exists() and _has_manifest(db):
            assert_consistent(db)
    assert kills >= 1  # at least one run really was killed mid-way
    assert load_cmd(archive, db).returncode == 0
    assert table_snapshot(db) == table_snapshot(clean_db)
    assert [f[1:] for f in manifest(db)] == [f[1:] for f in manifest(clean_db)]
    assert_consistent(db)


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["memory", "address_space"])
def test_memory_caps_stream_or_fail_cleanly(limit, tmp_path):
    """Under a tight memory cap a load either completes (DuckDB spills, batches are bounded)
    or fails with a clear message; the warehouse is never left inconsistent, and a re-run
    with room to work gives the clean result."""
    import resource

    archive = tmp_path / "logs"
    make_archive(archive, files=8, per_file=3000, seed=9)
    clean_db = tmp_path / "clean.duckdb"
    assert load_cmd(archive, clean_db).returncode == 0
    db = tmp_path / "w.duckdb"
    args = [sys.executable, "-m", "loader", "load", str(archive), "--db", str(db)]
    preexec = None
    if limit == "memory":
        args += ["--memory-limit-mb", "48"]
    else:
        def preexec():  # the kernel refuses allocations past 3 GB of address space
            resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=300, cwd=REPO,
                          preexec_fn=preexec)
    if proc.returncode != 0:
        assert "memory" in proc.stderr.lower(), proc.stderr
    if _has_manifest(db):
        assert_consistent(db)
    assert load_cmd(archive, db).returncode == 0
    assert table_snapshot(db) == table_snapshot(clean_db)
    assert_consistent(db)


def test_dbt_build_fails_fast_while_a_load_holds_the_database(tmp_path):
    """dbt-duckdb opens the same file: while a loader holds it, `dbt build` must stop at once
    with DuckDB's message naming the process, not wait or write anything."""
    from pathlib import Path

    from test_load import hold_database

    archive = tmp_path / "logs"
    make_archive(archive, files=1, per_file=20)
    db = tmp_path / "w.duckdb"
    assert load_cmd(archive, db).returncode == 0
    before = table_snapshot(db)
    holder = hold_database(db)
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("dbt")), "build", "--project-dir", str(REPO),
             "--profiles-dir", str(REPO), "--target-path", str(tmp_path / "target"),
             "--log-path", str(tmp_path / "logs_dbt")],
            capture_output=True, text=True, check=False, timeout=300, cwd=REPO,
            env={**os.environ, "SEGMENT_DUCKDB_PATH": str(db), "DO_NOT_TRACK": "1"},
        )
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Conflicting lock" in output and f"PID {holder.pid}" in output
    assert elapsed < 120
    assert table_snapshot(db) == before
