"""Analysts are never locked out (issue 11, item 9): `python -m loader publish` copies the marts
into a file readers open instead of the warehouse, replacing it atomically. A reader keeps
querying it through a whole load and `dbt build` of the warehouse, and sees the new marts
once they are published."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import REPO, SAMPLE_LOGS, load_archive, run_dbt, write_late_archive

pytestmark = pytest.mark.slow

# mode "hold": a notebook that stays connected; "reconnect": a BI tool connecting per query
# (one process each: DuckDB shares one open database per path within a process).
READER = """
import os, sys, time, duckdb
target, mode, log, stop = sys.argv[1:5]
held = duckdb.connect(target, read_only=True) if mode == "hold" else None
with open(log, "a") as out:
    while True:
        done = os.path.exists(stop)
        try:
            con = held or duckdb.connect(target, read_only=True)
            out.write(f"ok {con.execute('SELECT count(*) FROM analytics.orders').fetchall()[0][0]}\\n")
            if con is not held:
                con.close()
        except Exception as exc:
            out.write(f"fail {type(exc).__name__}: {exc}\\n")
        out.flush()
        if done:
            break
        time.sleep(0.05)
"""


def publish(db: Path, target: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "loader", "publish", "--db", str(db), "--to", str(target),
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def orders(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM analytics.orders").fetchall()[0][0]
    finally:
        con.close()


def test_readers_of_the_published_marts_work_through_a_load_and_a_build(tmp_path):
    db, target = tmp_path / "warehouse.duckdb", tmp_path / "marts.duckdb"
    load_archive(SAMPLE_LOGS, db)
    run_dbt(["build", "--exclude-resource-type", "unit_test"], db, tmp_path)
    first = publish(db, target)
    assert "analytics.orders" in first["tables"] and "analytics.users" in first["tables"]
    before = orders(target)

    stop = tmp_path / "stop"
    logs = {mode: tmp_path / f"{mode}.log" for mode in ("hold", "reconnect")}
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(target), mode, str(log), str(stop)])
               for mode, log in logs.items()]
    try:
        time.sleep(1)
        load_archive(write_late_archive(tmp_path / "late"), db)  # the loader holds the warehouse
        run_dbt(["build", "--exclude-resource-type", "unit_test"], db, tmp_path)  # then dbt does
        publish(db, target)
        time.sleep(1)
        stop.write_text("x")
        assert [r.wait(timeout=60) for r in readers] == [0, 0]
    finally:
        for r in readers:
            r.kill()
    after = orders(db)
    assert after > before  # the late archive adds orders
    seen = {mode: log.read_text().splitlines() for mode, log in logs.items()}
    assert [r for lines in seen.values() for r in lines if not r.startswith("ok")] == []
    reconnect = [int(r.split()[1]) for r in seen["reconnect"]]
    assert reconnect[0] == before and reconnect[-1] == after and len(reconnect) > 20
    assert {int(r.split()[1]) for r in seen["hold"]} == {before}  # an open connection keeps its copy
    assert not Path(f"{target}.wal").exists()
