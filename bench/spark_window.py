"""The Spark loader's dedup step with and without --dedup-window, against a lake history of
many loads.

    .venv/bin/python bench/spark_window.py [--loads 20] [--ids-per-load 500000] [--new 30000] [--window-loads 2]

Writes a history laid out as the lake lays it out (`_loader/seen_messages/load=<id>/`, the
ids as text, as the lake keeps them) and one run's message ids (half of them in the newest
loads), then times the Spark dedup step (`loader.spark._losers`, a left anti-join against
`history_files(...)`) over all loads and over the newest `--window-loads` only, alternating,
twice each, in one local[2] session. Results go to stdout and bench/out/spark_window.json.
Nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import duckdb
from common import OUT

from loader.spark import _losers, history_files, session


def build(lake: Path, ids_dir: Path, loads: int, per_load: int, new: int) -> None:
    """History: load i holds ids i*per_load .. (i+1)*per_load-1 (analytics.js-like texts);
    the run: `new` ids, half already in the newest load, half never loaded."""
    con = duckdb.connect()
    for i in range(1, loads + 1):
        folder = lake / "_loader" / "seen_messages" / f"load={i}"
        folder.mkdir(parents=True)
        con.execute(f"COPY (SELECT 'ajs-next-' || md5(n::VARCHAR) AS message_id, n AS file_id, {i}::BIGINT AS load_id "
                    f"FROM range({(i - 1) * per_load}, {i * per_load}) t(n)) TO '{folder}/part-000000.parquet' "
                    "(FORMAT parquet)")
    ids_dir.mkdir(parents=True)
    newest = (loads - 1) * per_load
    con.execute(f"""COPY (SELECT 'ajs-next-' || md5((CASE WHEN n % 2 = 0 THEN {newest} + n ELSE -1 - n END)::VARCHAR)
                          AS message_id, 0::INTEGER AS unit, n::BIGINT AS seq,
                          TIMESTAMPTZ '2024-03-01 10:00:00+00' AS received_at
                   FROM range({new}) t(n)) TO '{ids_dir}/part-000000.parquet' (FORMAT parquet)""")
    con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--ids-per-load", type=int, default=500_000)
    parser.add_argument("--new", type=int, default=30_000)
    parser.add_argument("--window-loads", type=int, default=2)
    args = parser.parse_args()
    work = OUT / "spark_window"
    shutil.rmtree(work, ignore_errors=True)
    lake, ids_dir = work / "lake", work / "ids"
    build(lake, ids_dir, args.loads, args.ids_per_load, args.new)
    loads = set(range(1, args.loads + 1))
    cases = {"all history": history_files(lake, loads),
             f"window: newest {args.window_loads} loads": history_files(lake, loads, args.loads - args.window_loads + 1)}
    spark = session("local[2]")
    runs: dict[str, list[float]] = {name: [] for name in cases}
    losers: dict[str, int] = {}
    try:
        for _ in range(2):
            for name, files in cases.items():
                out = work / "losers"
                started = time.monotonic()
                _losers(spark, str(ids_dir), files, str(out))
                runs[name].append(round(time.monotonic() - started, 2))
                losers[name] = duckdb.execute(f"SELECT count(*) FROM read_parquet('{out}/*/*.parquet')").fetchone()[0]
                shutil.rmtree(out)
    finally:
        spark.stop()
    report = {"loads": args.loads, "ids_per_load": args.ids_per_load, "history_ids": args.loads * args.ids_per_load,
              "new_ids": args.new, "cpus": os.cpu_count(), "load_average": [round(x, 1) for x in os.getloadavg()],
              "cases": [{"case": name, "history_files": len(cases[name]), "seconds": runs[name],
                         "losers": losers[name]} for name in cases]}
    (OUT / "spark_window.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
