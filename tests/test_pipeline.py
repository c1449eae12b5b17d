"""The reader threads (pipeline.ReadAhead): they share every file's stretches, and the writer
still takes batches in load order, whole files and failures included, with bounded memory."""

import json
import random
import time
from pathlib import Path

import duckdb
import pyarrow.compute as pc
from conftest import cli, event, query, run_load, table_snapshot, write_ndjson

from loader import LoadConfig
from loader.batch import plan_units
from loader.objectstore import Spool
from loader.pipeline import READERS, ReadAhead
from loader.read import discover_files
from loader.stages import run_unit_stages


def streaming_files(tmp_path, n_files=3, lines=300):
    """Gzipped files of `lines` events, read in several stretches (of one 16 kB inflated
    piece or more) when batches are small; file k
    repeats the last 5 ids of file k-1 with other properties (the first copy must win)."""
    paths = []
    noise = random.Random(7)  # text that does not compress away: several inflated pieces
    for k in range(n_files):
        ids = list(range(k * lines - (5 if k else 0), (k + 1) * lines))
        paths.append(write_ndjson(tmp_path / "logs" / f"{k:02d}.gz", [
            event(i, properties={"plan": f"file{k}", "n": i, "token": noise.randbytes(48).hex()}) for i in ids]))
    return paths


def items(out, n_files):
    """Everything the writer takes for `n_files` files: (kind, file name, line numbers)."""
    got, ended = [], 0
    while ended < n_files:
        kind, what, payload = out.get()
        if kind == "end":
            ended += 1
            got.append((kind, Path(what.name).name, type(payload).__name__))
        else:
            got.append((kind, Path(what.name).name, pc.min(payload.messages["line_no"]).as_py()))
    return got


def sequential(files, config):
    """What one thread running UNIT_STAGES file after file gives."""
    expected = []
    for unit in plan_units(files, {}, config.batch_bytes):
        for batch in run_unit_stages(unit, config):
            expected.append(("batch", Path(unit.files[0].name).name, pc.min(batch.messages["line_no"]).as_py()))
        expected.append(("end", Path(unit.files[0].name).name, "NoneType"))
    return expected


def test_readers_share_streaming_files_and_the_writer_takes_them_in_order(tmp_path):
    config = LoadConfig(db_path=str(tmp_path / "w.duckdb"), batch_bytes=2_000)
    files = discover_files([str(p) for p in streaming_files(tmp_path)])
    expected = sequential(files, config)
    for f in files:  # several stretches per file
        assert sum(kind == "batch" and name == Path(f.name).name for kind, name, _ in expected) >= 2
    out = ReadAhead(plan_units(files, {}, config.batch_bytes), config, Spool([]), readers=3)
    try:
        assert items(out, len(files)) == expected
    finally:
        out.close()


def test_a_file_that_cannot_be_read_ends_with_its_error_and_the_next_files_follow(tmp_path):
    paths = streaming_files(tmp_path)
    config = LoadConfig(db_path=str(tmp_path / "w.duckdb"), batch_bytes=2_000)
    files = discover_files([str(p) for p in paths])
    expected = sequential(files, config)
    paths[1].unlink()  # gone between the listing and the read
    out = ReadAhead(plan_units(files, {}, config.batch_bytes), config, Spool([]), readers=2)
    try:
        got = items(out, len(files))
    finally:
        out.close()
    assert got == ([e for e in expected if e[1] == "00.gz"] + [("end", "01.gz", "FileNotFoundError")]
                   + [e for e in expected if e[1] == "02.gz"])


def test_readers_stay_a_bounded_window_ahead_of_the_writer(tmp_path):
    config = LoadConfig(db_path=str(tmp_path / "w.duckdb"), batch_bytes=1_000)
    files = discover_files([str(p) for p in streaming_files(tmp_path, n_files=2, lines=1000)])
    out = ReadAhead(plan_units(files, {}, config.batch_bytes), config, Spool([]), readers=2)
    try:
        deadline = time.monotonic() + 30
        while out._handed < out.window and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # time enough to run over the window, if anything let it
        assert out._handed == out.window
        out.get()
        while out._handed < out.window + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert out._handed == out.window + 1
    finally:
        out.close()


def test_a_load_of_streaming_files_equals_loading_them_one_by_one(tmp_path):
    files = streaming_files(tmp_path, n_files=4)
    together = tmp_path / "together.duckdb"
    result = run_load(files, together, batch_bytes=2_000)
    assert [(f.rows_loaded, f.duplicates) for f in result.files] == [(300, 0), (300, 5), (300, 5), (300, 5)]
    one_by_one = tmp_path / "one.duckdb"
    for f in files:
        run_load([f], one_by_one, batch_bytes=2_000)
    assert table_snapshot(together) == table_snapshot(one_by_one)
    # the copies of file k's last ids in file k+1 lost: the first copy loaded wins
    assert query(together, "SELECT count(*) FROM segment.signed_up WHERE plan <> 'file' || (n // 300)") == [(0,)]


def test_seconds_per_stage_name_in_the_result_and_in_the_loads_table(tmp_path):
    # a unit of small files bigger than a commit group is split across groups: its batch's
    # seconds are counted once, not once per part
    small = [write_ndjson(tmp_path / "logs" / f"{k}.ndjson", [event(k * 10 + i) for i in range(10)]) for k in range(3)]
    db = tmp_path / "w.duckdb"
    result = run_load([*small, *streaming_files(tmp_path, n_files=2)], db, batch_bytes=2_000, commit_every_rows=15)
    summary = result.summary()
    by_stage = summary["seconds_by_stage"]
    assert list(by_stage) == summary["stages"] == [
        "scrub", "validate", "route", "shape", "tracking_plan", "plan_schema", "cast", "dedup", "write"]
    assert all(s >= 0 for s in by_stage.values()) and by_stage["validate"] > 0 and by_stage["write"] > 0
    groups = summary["stage_seconds"]  # the six groups time the same stages (and more: commit, the probe)
    assert abs(by_stage["validate"] - groups["parse"]) <= 0.002
    assert abs(by_stage["route"] + by_stage["shape"] + by_stage["tracking_plan"] - groups["shape"]) <= 0.003
    (stored,) = query(db, "SELECT seconds_by_stage FROM _loader.loads")[0]
    assert json.loads(stored) == by_stage


def test_shaping_paths_are_counted_once_per_root_and_batch(tmp_path):
    """A reader thread's first batch has no hints: both its roots take the careful path; later
    batches of the same shape the single-parse one (also for `context`, absent here: no
    key to prove). A unit split across commit groups counts once."""
    small = [write_ndjson(tmp_path / "logs" / f"{k}.ndjson", [event(k * 10 + i) for i in range(10)]) for k in range(3)]
    unit = run_load(small, tmp_path / "unit.duckdb", commit_every_rows=15)  # one batch, three groups
    assert unit.summary()["shape_paths"] == {"careful": 2}
    paths = run_load(streaming_files(tmp_path, n_files=2), tmp_path / "w.duckdb", batch_bytes=2_000).summary()[
        "shape_paths"]
    assert 2 <= paths["careful"] <= 2 * READERS  # at most every reader's first batch, both roots
    assert paths["single"] >= 2 and "fast" not in paths and sum(paths.values()) % 2 == 0  # two roots per batch


def test_shaping_paths_are_kept_in_the_loads_table_and_older_warehouses_get_the_column(tmp_path):
    """`_loader.loads.shape_paths` holds the counts `--json` prints; a warehouse made before the
    column existed gets it on its next run (its old rows NULL: not known)."""
    db = tmp_path / "w.duckdb"
    first = streaming_files(tmp_path / "a", n_files=2)
    printed = json.loads(cli("load", *map(str, first), "--db", str(db), "--json").stdout)["shape_paths"]
    assert sum(printed.values()) >= 2
    assert [json.loads(p) for (p,) in query(db, "SELECT shape_paths FROM _loader.loads")] == [printed]

    con = duckdb.connect(str(db))  # as a loader before the column left it
    try:
        con.execute("ALTER TABLE _loader.loads DROP COLUMN shape_paths")
    finally:
        con.close()
    result = run_load(streaming_files(tmp_path / "b", n_files=2, lines=310), db, batch_bytes=2_000)  # not the same files
    paths = result.summary()["shape_paths"]
    assert sum(paths.values()) >= 4  # two roots for each of at least two batches
    stored = query(db, "SELECT load_id, shape_paths FROM _loader.loads ORDER BY load_id")
    assert [(load_id, p if p is None else json.loads(p)) for load_id, p in stored] == [(1, None), (2, paths)]
