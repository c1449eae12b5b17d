"""The Spark loader against the DuckDB loader on one generated archive, and local[1] vs local[N].

    .venv/bin/python bench/spark_scaling.py [--events 100000] [--file-events 10000] [--threads 1 2]

Each run is a child process (`python -m loader load ... --json`, a fresh DuckDB file or lake),
timed by wall clock; the Spark runs include the JVM start, reported apart from the load's own
seconds. Every lake is then checked equal to the DuckDB warehouse (bench/compare.py). Results go
to stdout and bench/out/spark_scaling.json. Nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import OUT, REPO

from bench.compare import compare


def run(args: list[str]) -> tuple[float, dict]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "loader", "load", *args, "--json"], capture_output=True,
                          text=True, cwd=REPO, check=False, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"loader failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--file-events", type=int, default=10_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    data = OUT / "data" / f"spark-{args.events}-{args.file_events}"
    if not data.exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--events", str(args.events),
                        "--file-events", str(args.file_events), "--out", str(data), "--seed", "1"], check=True)
    work = OUT / "spark_scaling"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db = work / "warehouse.duckdb"
    rows = []
    wall, result = run([str(data), "--db", str(db)])
    rows.append({"engine": "duckdb", "wall_s": round(wall, 2), "load_s": result["seconds"],
                 "events_per_s": round(result["lines"] / wall), "stage_seconds": result["stage_seconds"]})
    import duckdb

    from loader.spark import open_lake

    for n in args.threads:
        lake = work / f"lake-local{n}"
        wall, result = run([str(data), "--engine", "spark", "--lake", str(lake), "--spark-master", f"local[{n}]"])
        copy = work / f"lake-local{n}.duckdb"
        con = duckdb.connect(str(copy))
        open_lake(lake, con)
        con.close()
        problems = compare(str(db), str(copy))
        rows.append({"engine": f"spark local[{n}]", "wall_s": round(wall, 2), "load_s": result["seconds"],
                     "events_per_s": round(result["lines"] / wall), "stage_seconds": result["stage_seconds"],
                     "equal_to_duckdb": not problems})
    load = os.getloadavg()  # the machine may be shared: say how busy it was
    report = {"events": args.events, "file_events": args.file_events, "cpus": os.cpu_count(),
              "load_average": [round(x, 1) for x in load], "runs": rows}
    (OUT / "spark_scaling.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
