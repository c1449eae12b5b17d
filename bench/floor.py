"""The floor: DuckDB's own NDJSON reader, no semantics, into one table of a fresh on-disk DB.

    python bench/floor.py --db FILE --glob 'DIR/segment-logs/*/*/*.gz' [--union-by-name]

``CREATE TABLE events AS SELECT * FROM read_ndjson(glob, ignore_errors=true)``: the default
schema inference (a sample of the first files), which is what a user gets with one line of SQL.
``ignore_errors`` is needed because the archive holds malformed lines; without it the statement
fails. With ``--union-by-name`` DuckDB reads the schema of every file first. Prints one JSON
object: rows, rows with a messageId, columns, seconds of the statement and of the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time

import duckdb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--glob", required=True)
    ap.add_argument("--union-by-name", action="store_true")
    a = ap.parse_args()
    opts = "ignore_errors=true" + (", union_by_name=true" if a.union_by_name else "")
    glob = a.glob.replace("'", "''")
    t0 = time.perf_counter()
    con = duckdb.connect(a.db)
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_ndjson('{glob}', {opts})")
    t1 = time.perf_counter()
    con.execute("CHECKPOINT")
    t2 = time.perf_counter()
    rows, with_id = con.execute("SELECT count(*), count(messageId) FROM events").fetchone()
    cols = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'events'"
    ).fetchone()[0]
    con.close()
    print(json.dumps({"rows": rows, "rows_with_message_id": with_id, "columns": cols,
                      "ctas_s": round(t1 - t0, 3), "checkpoint_s": round(t2 - t1, 3),
                      "duckdb": duckdb.__version__, "options": opts}))


if __name__ == "__main__":
    main()
