"""The Spark loader (loader/spark.py) reproduces the DuckDB loader's warehouse as Parquet lake
tables: table by table (names, columns, types, rows; bench/compare.py's comparison), on the
sample archive and the pathologies, across runs, and after being killed at each point of its
commit. One local SparkSession serves the whole module (a JVM start costs ~15 s)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import PATHOLOGIES, REPO, SAMPLE, event, query, run_load, write_ndjson
from test_reliability import make_archive

from bench.compare import compare
from loader import LoadConfig
from loader.spark import SPARK_CRASH_POINTS, committed, load_spark, open_lake, session, table_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark(s3):
    """Started after the S3 server, so that its Python workers see AWS_ENDPOINT_URL."""
    s = session("local[2]")
    yield s
    s.stop()


def lake_as_duckdb(lake: Path, path: Path) -> Path:
    """The committed lake copied into a DuckDB file, as the DuckDB loader lays it out."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        open_lake(lake, con)
    finally:
        con.close()
    return path


def assert_same(db: Path, lake: Path, tmp_path: Path) -> None:
    copy = lake_as_duckdb(lake, tmp_path / "lake.duckdb")
    assert compare(str(db), str(copy)) == []
    # not two empty warehouses: the event tables hold the rows the DuckDB loader loaded
    loaded = query(db, "SELECT count(*) FROM _loader.seen_messages")[0][0]
    assert loaded > 0 and query(copy, "SELECT count(*) FROM _loader.seen_messages")[0][0] == loaded


def both(runs: list[list[Path]], tmp_path: Path, spark, **options) -> tuple[Path, Path, list]:
    """The same runs with each engine: (DuckDB file, lake, the Spark runs' results)."""
    db, lake = tmp_path / "warehouse.duckdb", tmp_path / "lake"
    results = []
    for paths in runs:
        run_load(paths, db, **options)
        results.append(load_spark([str(p) for p in paths], LoadConfig(**options), str(lake), spark))
    return db, lake, results


def test_sample_archive_equals_duckdb_and_a_rerun_is_a_noop(tmp_path, spark):
    db, lake, (first,) = both([[SAMPLE / "segment-logs"]], tmp_path, spark)
    assert first.summary()["files_loaded"] == 18 and first.summary()["duplicates"] > 0
    assert_same(db, lake, tmp_path)
    again = load_spark([str(SAMPLE / "segment-logs")], LoadConfig(), str(lake), spark)
    assert again.summary()["files_loaded"] == 0 and again.summary()["files_skipped"] == 18
    assert_same(db, lake, tmp_path)


def test_sample_with_tracking_plan_and_pii_policy_equals_duckdb(tmp_path, spark):
    """`make demo`'s load: blocked events are rejects, violations and hashed PII alike."""
    db, lake, (result,) = both([[SAMPLE / "segment-logs"]], tmp_path, spark,
                               tracking_plan=str(SAMPLE / "tracking_plan.json"), on_violation="block",
                               pii_config=str(SAMPLE / "pii.json"))
    assert result.summary()["blocked"] > 0
    assert_same(db, lake, tmp_path)


def test_s3_bucket_equals_duckdb_and_a_rerun_downloads_nothing(tmp_path, spark, s3, sample_bucket):
    """s3:// input: tasks download their own objects; the manifest keeps URIs and ETags."""
    db, lake, (result,) = both([[sample_bucket]], tmp_path, spark)
    assert result.summary()["files_loaded"] == 18
    assert_same(db, lake, tmp_path)
    copy = lake_as_duckdb(lake, tmp_path / "lake.duckdb")
    assert query(copy, "SELECT path, etag, content_hash FROM _loader.files ORDER BY path") == \
        query(db, "SELECT path, etag, content_hash FROM _loader.files ORDER BY path")
    s3.reset()
    again = load_spark([sample_bucket], LoadConfig(), str(lake), spark)
    assert again.summary()["files_skipped"] == 18 and s3.object_gets() == []


def test_pathologies_equal_duckdb_with_failed_files(tmp_path, spark):
    """Every pathology fixture in one load, at the default reject ratio: some files fail and
    keep every line as a reject, the rest load, as in the DuckDB loader."""
    db, lake, (result,) = both([[PATHOLOGIES]], tmp_path, spark)
    s = result.summary()
    assert s["files_failed"] > 0 and s["files_loaded"] > 0
    assert s["lines"] == s["rows_loaded"] + s["duplicates"] + s["rejects"]
    assert_same(db, lake, tmp_path)


def test_pathologies_loaded_whole_equal_duckdb(tmp_path, spark):
    db, lake, _ = both([[PATHOLOGIES]], tmp_path, spark, max_reject_ratio=1.0)
    assert_same(db, lake, tmp_path)


def test_duplicates_across_files_and_runs_widening_and_users(tmp_path, spark):
    """Cross-file retries, a column typed BIGINT by the first run and widened to DOUBLE by the
    second (the first run's parts are rewritten), identifies feeding `users`."""
    paths = make_archive(tmp_path / "in")
    retries = write_ndjson(tmp_path / "in" / "retries.ndjson",  # copies of the first run's messages
                           [event(i, event="Signed Up", properties={"price": "late copy"}) for i in range(1, 7)])
    db, lake, (_first, second) = both([paths[:3], [*paths, retries]], tmp_path, spark)
    assert second.summary()["files_skipped"] == 3 and second.summary()["duplicates"] >= 5
    assert query(db, "SELECT count(*) FROM _loader.schema_changes WHERE change = 'widen'")[0][0] > 0
    assert query(db, "SELECT count(*) FROM segment.users")[0][0] > 0
    assert_same(db, lake, tmp_path)
    # Spark reads the lake too (timestamps with time zone, JSON, BLOB): the committed files
    loads = set(committed(lake))
    for schema, table in [("segment", "identifies"), ("segment", "users"), ("_loader", "rejects"),
                          ("_loader", "seen_messages")]:
        frame = spark.read.parquet(*table_files(lake, schema, table, loads))
        assert frame.count() == query(db, f"SELECT count(*) FROM {schema}.{table}")[0][0] > 0, table


def test_streamed_files_batch_envelopes_and_type_conflicts(tmp_path, spark):
    """Small batches: each file is streamed in several batches (a column typed by an early
    batch discards what a later one cannot cast); a retried copy with an earlier receivedAt
    in a later batch; a batch envelope."""
    rng = random.Random(5)
    lines = []
    for i in range(400):  # gzip is read 16 KB at a time: noise makes that several batches
        value = i if i < 200 else f"text {i}"  # BIGINT first, then strings: discards
        lines.append(event(i, properties={"n": value, "plan": "pro", "noise": rng.randbytes(150).hex()}))
    lines.append(event(5, receivedAt="2024-02-01T00:00:00.000Z", properties={"plan": "retried"}))
    lines.append({"batch": [event(100), event(101, type="identify", traits={"email": "a@b"})],
                  "sentAt": "2024-03-01T10:00:01Z", "receivedAt": "2024-03-01T10:00:02Z"})
    a = write_ndjson(tmp_path / "in" / "a.ndjson.gz", lines)
    b = write_ndjson(tmp_path / "in" / "b.ndjson", [event(i, properties={"n": i / 2}) for i in range(50, 70)])
    db, lake, _ = both([[a, b]], tmp_path, spark, batch_bytes=2_000)
    assert query(db, "SELECT count(*) FROM _loader.discards")[0][0] > 0
    assert query(db, "SELECT plan FROM segment.signed_up WHERE id = 'm5'") == [("retried",)]  # received earliest
    assert_same(db, lake, tmp_path)


def test_interrupted_at_each_commit_point_then_rerun_equals_a_clean_load(tmp_path, spark, monkeypatch):
    """Ctrl-C (SIGINT: no cleanup runs) at each named point of the commit in turn, each run
    cleaning up after the one before: nothing is visible before the commit record, and the
    lake ends equal to one clean load (the run killed after its commit record is complete)."""
    paths = make_archive(tmp_path / "in", files=4)
    db, lake = tmp_path / "warehouse.duckdb", tmp_path / "lake"
    run_load(paths, db)
    monkeypatch.setenv("SEGMENT_LOADER_CRASH_SIGNAL", "INT")
    for point in SPARK_CRASH_POINTS:
        monkeypatch.setenv("SEGMENT_LOADER_CRASH_AT", point)
        with pytest.raises(KeyboardInterrupt):
            load_spark([str(p) for p in paths], LoadConfig(), str(lake), spark)
        assert bool(committed(lake)) == (point == "spark_after_commit"), point
    monkeypatch.delenv("SEGMENT_LOADER_CRASH_AT")
    again = load_spark([str(p) for p in paths], LoadConfig(), str(lake), spark)
    assert again.summary()["files_loaded"] == 0 and again.summary()["files_skipped"] == 4
    assert not (lake / "_staging").exists()
    assert_same(db, lake, tmp_path)


def test_killed_mid_publish_by_sigkill_then_rerun(tmp_path, spark):
    """The CLI killed (SIGKILL, JVM and all) after it moved the first table into the lake:
    the re-run removes the uncommitted load's folders and loads again, exactly once."""
    paths = make_archive(tmp_path / "in", files=3)
    db, lake = tmp_path / "warehouse.duckdb", tmp_path / "lake"
    run_load(paths, db)
    env = {**os.environ, "SEGMENT_LOADER_CRASH_AT": "spark_mid_publish", "PYSPARK_PYTHON": sys.executable}
    # A session of its own, so that its JVM (which outlives the killed driver for a while)
    # is ended with it.
    proc = subprocess.Popen([sys.executable, "-m", "loader", "load", *map(str, paths), "--engine", "spark",
                             "--lake", str(lake), "--spark-master", "local[1]"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                            start_new_session=True)
    try:
        _out, err = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert not committed(lake) and list(lake.glob("*/*/load=1"))  # published in part, not committed
    again = load_spark([str(p) for p in paths], LoadConfig(), str(lake), spark)
    assert again.summary()["files_loaded"] == 3
    assert_same(db, lake, tmp_path)


def test_cli_json_and_usage_errors(tmp_path):
    """--engine spark keeps the CLI's --json shape and exit codes; it needs --lake."""
    from conftest import cli

    proc = cli("load", str(SAMPLE / "segment-logs"), "--engine", "spark", "--json")
    assert proc.returncode == 2 and "--lake" in proc.stderr
    proc = cli("load", str(SAMPLE / "segment-logs"), "--lake", str(tmp_path / "lake"))
    assert proc.returncode == 2 and "--engine spark" in proc.stderr


def test_one_load_at_a_time_per_lake(tmp_path, spark):
    """A second run (a load or a dry run) on a lake being loaded stops at once with exit code
    3's error."""
    import fcntl

    from loader.errors import DatabaseLockedError

    lake = tmp_path / "lake"
    (lake / "_loader").mkdir(parents=True)
    with open(lake / "_loader" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DatabaseLockedError, match="another run"):
            load_spark([str(SAMPLE / "segment-logs")], LoadConfig(), str(lake), spark)
        with pytest.raises(DatabaseLockedError, match="another run"):  # a dry run only reads: stopped too
            load_spark([str(SAMPLE / "segment-logs")], LoadConfig(dry_run=True), str(lake), spark)
    assert not committed(lake)


def test_shaped_batches_pack_compactly_and_round_trip(tmp_path):
    """What the shape tasks hand to the write tasks: a batch's table slices are views of
    shared Arrow buffers, which plain pickle copies whole for every view."""
    import pickle

    from loader.batch import Unit
    from loader.read import discover_files
    from loader.spark import pack
    from loader.stages import run_unit_stages

    lines = [event(i, event=f"Event {i % 40}", properties={"n": i, "s": "x" * 50}) for i in range(4000)]
    path = write_ndjson(tmp_path / "many_tables.ndjson", lines)
    (batch,) = run_unit_stages(Unit(tuple(discover_files([str(path)]))), LoadConfig())
    assert len(batch.slices) > 40
    packed = pack(batch)
    # 1 MB of lines: 3.8 MB packed (one IPC stream per column), 63 MB pickled
    assert len(packed) < 5 * path.stat().st_size < len(pickle.dumps(batch)) / 3
    back = pickle.loads(packed)
    for a, b in zip(batch.slices, back.slices, strict=True):
        assert (a.table, a.line.to_pylist(), a.columns) == (b.table, b.line.to_pylist(), b.columns)
        assert {c: v.text.to_pylist() for c, v in a.values.items()} == {c: v.text.to_pylist() for c, v in b.values.items()}


# ---- --dry-run and --dedup-window ----------------------------------------------------------

def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` with its size and mtime (a folder's mtime moves
    when anything is created or removed in it, even briefly)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in [folder, *sorted(folder.rglob("*"))]}


COUNTS = ("lines", "rows_loaded", "duplicates", "rejects", "discards", "violations", "blocked")


def file_counts(result) -> dict[str, tuple]:
    return {f.path: tuple(getattr(f, k) for k in COUNTS) for f in result.files if f.status != "skipped"}


def test_dry_run_writes_nothing_and_counts_what_the_load_then_does(tmp_path, spark, capsys):
    """A dry run over a lake holding a load: history duplicates, retries across files, a
    widening, a malformed line. The lake (every file and folder, bytes and mtimes) is
    unchanged and no scratch is left beside it; the counts, per file, and the schema changes
    are those the real load then reports; --json has the DuckDB engine's dry-run shape."""
    from loader.cli import _print_result, main

    paths = make_archive(tmp_path / "in", files=4)
    bad = tmp_path / "in" / "bad.ndjson"
    bad.write_text("\n".join([*(json.dumps(event(900 + i)) for i in range(9)), "{not json"]) + "\n")
    lake = tmp_path / "lake"
    # no lake yet, nor its parent folders: none is made, and the counts are the first load's
    fresh = load_spark([str(paths[0])], LoadConfig(dry_run=True), str(tmp_path / "not" / "yet" / "lake"), spark)
    assert [p.name for p in tmp_path.iterdir()] == ["in"]
    first = load_spark([str(paths[0])], LoadConfig(), str(lake), spark)  # its ids come again in paths[1]
    assert file_counts(first) == file_counts(fresh) and first.summary()["rows_loaded"] > 0
    before, around = snapshot(lake), sorted(p.name for p in tmp_path.iterdir())
    todo = [*map(str, paths), str(bad)]

    dry = load_spark(todo, LoadConfig(dry_run=True), str(lake), spark)
    assert snapshot(lake) == before and sorted(p.name for p in tmp_path.iterdir()) == around
    s = dry.summary()
    assert (s["load_id"], s["files_planned"], s["files_skipped"], s["files_loaded"]) == (None, 4, 1, 0)
    assert s["duplicates"] > 0 and s["rows_loaded"] > 0
    assert file_counts(dry)[str(bad)] == (10, 9, 0, 1, 0, 0, 0)
    assert any(c["change"] == "widen" for c in dry.schema_changes)

    assert main(["load", *todo, "--engine", "spark", "--lake", str(lake), "--dry-run", "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert snapshot(lake) == before
    assert main(["load", *todo, "--db", str(tmp_path / "w.duckdb"), "--dry-run", "--json"]) == 0
    assert as_json.keys() == json.loads(capsys.readouterr().out).keys()
    assert {k: as_json[k] for k in COUNTS} == {k: s[k] for k in COUNTS}
    _print_result(dry, dry_run=True, counted=True)
    text = capsys.readouterr().out
    assert "dry run: 4 file(s) would be loaded, 1 already loaded" in text and "widen" in text
    assert f"lines {s['lines']:,} = rows {s['rows_loaded']:,} + duplicates {s['duplicates']:,}" in text

    real = load_spark(todo, LoadConfig(), str(lake), spark)
    assert real.summary()["files_loaded"] == 4
    assert file_counts(real) == file_counts(dry)
    assert real.schema_changes == dry.schema_changes
    assert {f.status for f in dry.files if f.status != "skipped"} == {"planned"}


def age_first_load(db: Path, lake: Path, days: int = 10) -> None:
    """Load 1 started `days` ago, in the DuckDB file and in the lake."""
    con = duckdb.connect(str(db))
    con.execute(f"UPDATE _loader.loads SET started_at = started_at - INTERVAL {days} DAY WHERE load_id = 1")
    con.close()
    (part,) = table_files(lake, "_loader", "loads", {1})
    duckdb.execute(f"COPY (SELECT * REPLACE (started_at - INTERVAL {days} DAY AS started_at) FROM "
                   f"read_parquet('{part}', hive_partitioning = false)) TO '{part}.new' (FORMAT parquet)")
    os.replace(f"{part}.new", part)


def test_dedup_window_agrees_with_duckdb_and_reads_only_the_windows_loads(tmp_path, spark):
    """m1 was loaded by a load older than the window: loaded again; m3 by one inside it: a
    counted duplicate; without the window both are duplicates. Both engines agree, line by
    line, and the window's probe reads only the history of the loads inside it."""
    from loader.spark import _window_start, history_files

    first = write_ndjson(tmp_path / "in" / "1.ndjson", [event(1), event(2)])
    second = write_ndjson(tmp_path / "in" / "2.ndjson", [event(3)])
    resent = write_ndjson(tmp_path / "in" / "3.ndjson", [event(1), event(3), event(4), event(4)])
    db, lake, _ = both([[first]], tmp_path, spark)
    age_first_load(db, lake)
    both([[second]], tmp_path, spark)

    exact = load_spark([str(resent)], LoadConfig(dry_run=True), str(lake), spark)
    assert file_counts(exact) == {str(resent): (4, 1, 3, 0, 0, 0, 0)}  # m1, m3 and m4's copy

    loads = set(committed(lake))
    since = _window_start(lake, loads, LoadConfig(dedup_window_days=7))
    assert since == 2 and history_files(lake, loads, since) == table_files(lake, "_loader", "seen_messages", {2})
    assert len(history_files(lake, loads)) == 2  # no window: both loads'

    duck = run_load([resent], db, dedup_window_days=7)
    windowed = load_spark([str(resent)], LoadConfig(dedup_window_days=7), str(lake), spark)
    assert file_counts(windowed) == file_counts(duck) == {str(resent): (4, 2, 2, 0, 0, 0, 0)}
    assert query(db, "SELECT count(*) FROM segment.signed_up WHERE id = 'm1'") == [(2,)]
    assert_same(db, lake, tmp_path)  # the same rows and history: the same lines were duplicates
