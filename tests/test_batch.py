"""Many small files in one batch (loader/batch.py): the warehouse is the one that loading the
files one by one would give, and every file keeps its own manifest row and line accounting."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import event, query, run_load, write_ndjson

from bench.compare import compare
from loader import batch
from loader.batch import FILE_SHIFT, Unit, encode_line, file_index, plain_lines, plan_units
from loader.read import InputFile

SCHEMA_AND_MANIFEST = """
    SELECT table_name, column_name, data_type FROM information_schema.columns
    WHERE table_schema = 'segment' ORDER BY table_name, ordinal_position"""


def _files(tmp_path: Path, resent_at: str) -> list[Path]:
    """Three small files whose values only type alike when read in file order: `n` is an
    integer in the first file and text in the second, `price` an integer then a fraction; m2
    comes again in file 2, received at `resent_at` (the first copy's is 2024-03-01T10:00)."""
    day = tmp_path / "segment-logs" / "src1" / "1709251200000"
    return [
        write_ndjson(day / "a.json.gz", [event(1, properties={"n": 1, "price": 3}),
                                         event(2, properties={"n": 2}, context={"ip": "1.1.1.1"})]),
        write_ndjson(day / "b.json.gz", [event(3, properties={"n": "three", "price": 3.5}),
                                         event(2, receivedAt=resent_at, properties={"n": 99}),
                                         event(4, event="Order Completed", context={"locale": "en"}),
                                         "not json"]),
        write_ndjson(day / "c.json.gz", [event(5, type="identify", traits={"plan": "pro"}),
                                         event(5, event="Duplicate In File")]),
    ]


# m2 re-sent later (as Segment's archive has it: the first file wins) or received earlier
# (the re-sent copy wins: among a run's copies the earliest receivedAt does). The reference
# warehouse: the files loaded one by one, by runs of one file each when the order of the
# runs gives the same winner, else by one run that reads each file as a batch of its own.
CASES = {
    "later": ("2024-03-02T00:00:00.000Z", 2, [("a.json.gz", 2, 2, 0, 0), ("b.json.gz", 4, 2, 1, 1)], 2),
    "earlier": ("2024-02-01T00:00:00.000Z", 99, [("a.json.gz", 2, 1, 1, 0), ("b.json.gz", 4, 3, 0, 1)], 1),
}


@pytest.mark.parametrize("resent", CASES)
def test_small_files_read_together_give_the_warehouse_of_one_by_one_loads(tmp_path, monkeypatch, resent):
    resent_at, m2_n, counts_ab, seen_a = CASES[resent]
    files = _files(tmp_path, resent_at)
    together, one_by_one = tmp_path / "together.duckdb", tmp_path / "one.duckdb"
    result = run_load([str(tmp_path / "segment-logs")], together)
    if resent == "later":
        for f in files:
            run_load([str(f)], one_by_one)
    else:
        monkeypatch.setattr(batch, "SMALL_FILE_BYTES", 0)  # every file a batch of its own
        assert not any(u.combined for u in plan_units(
            [InputFile(f, "ndjson", "src1") for f in files], {f: f.stat().st_size for f in files}, 16 << 20))
        run_load(files, one_by_one)
    assert compare(str(together), str(one_by_one)) == []
    assert query(together, SCHEMA_AND_MANIFEST) == query(one_by_one, SCHEMA_AND_MANIFEST)
    assert query(together, "SELECT id, n, price FROM segment.signed_up ORDER BY id") == [
        ("m1", 1, 3.0), ("m2", m2_n, None), ("m3", None, 3.5)]
    assert query(together, "SELECT column_name, line, raw_value FROM _loader.discards") == [("n", 1, "three")]
    # One manifest row per file, each with its own counts: lines = rows + duplicates + rejects.
    assert [(Path(f.path).name, f.lines, f.rows_loaded, f.duplicates, f.rejects) for f in result.files] == [
        *counts_ab, ("c.json.gz", 2, 1, 1, 0)]
    assert query(together, "SELECT path, line, reason FROM _loader.rejects") == [(str(files[1].resolve()), 4,
                                                                                   "malformed_json")]
    manifest = query(together, "SELECT f.path, f.rows_loaded, count(s.message_id) FROM _loader.files f "
                               "LEFT JOIN _loader.seen_messages s USING (file_id) GROUP BY ALL ORDER BY 1")
    assert [(Path(p).name, rows, seen) for p, rows, seen in manifest] == [
        ("a.json.gz", seen_a, seen_a), ("b.json.gz", 4 - seen_a, 4 - seen_a), ("c.json.gz", 1, 1)]


def test_a_small_file_over_the_reject_ratio_fails_alone(tmp_path, db):
    day = tmp_path / "segment-logs" / "src1" / "1709251200000"
    good = write_ndjson(day / "a.json.gz", [event(1), event(2)])
    bad = write_ndjson(day / "b.json.gz", [event(3, properties={"only_here": 1}), "garbage", "more garbage"])
    result = run_load([str(tmp_path / "segment-logs")], db, max_reject_ratio=0.5)
    assert [(Path(f.path).name, f.status) for f in result.files] == [("a.json.gz", "loaded"), ("b.json.gz", "failed")]
    assert query(db, "SELECT id FROM segment.signed_up ORDER BY id") == [("m1",), ("m2",)]
    # Nothing of the failed file is loaded (every line of it is a reject, with its own reason
    # when it has one), and its values typed no column.
    assert query(db, "SELECT path, line, reason FROM _loader.rejects ORDER BY line") == [
        (str(bad.resolve()), 1, "file_failed"), (str(bad.resolve()), 2, "malformed_json"),
        (str(bad.resolve()), 3, "malformed_json")]
    assert query(db, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'only_here'")[0][0] == 0
    assert query(db, "SELECT status FROM _loader.files WHERE path = ?", [str(bad.resolve())]) == [("failed",)]
    assert good.exists()


def _input(name: str, source: str = "s") -> InputFile:
    return InputFile(Path(f"/x/{name}"), "ndjson", source)


def test_units_keep_order_and_group_only_small_files_of_one_source():
    files = [_input("1.gz"), _input("2.gz"), _input("3.gz"), _input("4.gz", "t"), _input("5.json", "t"),
             InputFile(Path("/x/6.parquet"), "parquet", "t")]
    sizes = {Path("/x/1.gz"): 100, Path("/x/2.gz"): 100, Path("/x/3.gz"): 5 << 20, Path("/x/4.gz"): 100,
             Path("/x/5.json"): 100, Path("/x/6.parquet"): 100}
    units = plan_units(files, sizes, batch_bytes=16 << 20)
    assert [[f.path.name for f in u.files] for u in units] == [["1.gz", "2.gz"], ["3.gz"], ["4.gz", "5.json"],
                                                              ["6.parquet"]]
    # A unit closes once its estimated text reaches the batch size (gzip counts 7x).
    small = plan_units(files[:2], sizes, batch_bytes=700)
    assert small == [Unit((files[0],)), Unit((files[1],))]


def test_line_numbers_carry_the_file_index():
    lines = [encode_line(7, 0), encode_line(1, 3), encode_line(2**FILE_SHIFT - 1, 2)]
    assert file_index(lines).tolist() == [0, 3, 2]
    assert plain_lines(lines).to_pylist() == [7, 1, 2**FILE_SHIFT - 1]
