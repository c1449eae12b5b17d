"""Helpers for the dbt tests: run the loader and dbt as subprocesses on temporary DuckDB files.

Every test works on its own database file (copied when a state is shared), so tests never
share a writer. dbt runs with the repo's dbt_project.yml and profiles.yml; the database
path comes from SEGMENT_DUCKDB_PATH, as for users.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parents[2]
EXPECTED = REPO / "tests" / "expected"
SAMPLE_LOGS = REPO / "sample_data" / "segment-logs"
GENERATOR = REPO / "sample_data" / "generate.py"
DBT = Path(sys.executable).with_name("dbt")

NUMBER = re.compile(r"-?\d+(\.\d+)?")
MARTS = ["users", "orders", "order_items", "orphan_refunds", "user_order_totals"]
# Analyst marts (issue 13) and their intermediate models.
ANALYST_MARTS = ["events", "sessions", "page_views", "funnel_sessions", "funnel_daily",
                 "active_persons_daily", "identity_graph"]
ANALYST_INTERMEDIATE = [
    "int_events_contextualized",
    "int_events_sessionized",
    "int_sessions_aggregated_to_persons",
    "int_sessions_attributed_to_orders",
]
INTERMEDIATE = [
    "int_events_unioned",
    "int_identifiers_mapped_to_persons",
    "int_events_mapped_to_persons",
    "int_orders_deduplicated",
    "int_refunds_matched_to_orders",
]


class DbtResult:
    """Outcome of one dbt invocation: exit code, output and the run_results.json statuses."""

    def __init__(self, proc: subprocess.CompletedProcess, target: Path) -> None:
        self.returncode = proc.returncode
        self.target = target
        self.output = proc.stdout + proc.stderr
        path = target / "run_results.json"
        self.results: list[dict[str, Any]] = (
            json.loads(path.read_text())["results"] if path.exists() else []
        )

    def statuses(self) -> dict[str, str]:
        return {r["unique_id"]: r["status"] for r in self.results}

    def compiled_code(self, model: str) -> str:
        """SQL that dbt ran for `model` in this invocation."""
        for r in self.results:
            if r["unique_id"].split(".")[-1] == model and r["unique_id"].startswith("model."):
                return r.get("compiled_code") or ""
        raise KeyError(model)

    def not_passing(self) -> dict[str, str]:
        return {k: v for k, v in self.statuses().items() if v not in ("success", "pass")}


def run_dbt(
    args: list[str], db: Path, workdir: Path, check: bool = True,
    env: dict[str, str] | None = None, project: Path = REPO,
) -> DbtResult:
    """Run `dbt <args>` against database `db`; target/log paths live under `workdir`.

    `env` adds environment variables (the spark target's settings); `project` is the dbt
    project directory (a modified copy in the contract test). dbt runs in its own
    process group, killed whole on timeout: the spark target starts a JVM below dbt.
    """
    target = workdir / "target"
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "SEGMENT_DUCKDB_PATH": str(db),
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        **(env or {}),
    }
    cmd = [
        str(DBT), *args,
        "--project-dir", str(project), "--profiles-dir", str(project),
        "--target-path", str(target), "--log-path", str(workdir / "logs"),
    ]
    with subprocess.Popen(cmd, env=full_env, cwd=workdir, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as popen:
        try:
            stdout, stderr = popen.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
    proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
    result = DbtResult(proc, target)
    if check and (proc.returncode != 0 or result.not_passing()):
        raise AssertionError(
            f"dbt {' '.join(args)} failed ({proc.returncode}): {result.not_passing()}\n"
            + result.output[-6000:]
        )
    return result


def load_archive(path: Path, db: Path, *options: str) -> None:
    """Load a Segment archive folder into `db` with the project's loader CLI."""
    proc = subprocess.run(
        [sys.executable, "-m", "loader", "load", str(path), "--db", str(db), *options],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def write_late_archive(outdir: Path) -> Path:
    """Write the late-arriving archive (sample_data/generate.py --late); returns its segment-logs."""
    proc = subprocess.run([sys.executable, str(GENERATOR), "--late", str(outdir)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return outdir / "segment-logs"


def query(db: Path, sql: str) -> list[tuple]:
    """Rows of `sql` on database `db`, opened read-only."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def copy_db(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    wal = Path(str(src) + ".wal")
    if wal.exists():
        shutil.copyfile(wal, Path(str(dst) + ".wal"))
    return dst


# --- comparing marts with hand-written expectations ------------------------------------------

def read_expected(name: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of tests/expected/<name>.csv ('#' lines are comments)."""
    with open(EXPECTED / f"{name}.csv", newline="", encoding="utf-8") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    reader = csv.DictReader(lines)
    return list(reader.fieldnames or []), list(reader)


def normalize(value: Any) -> str:
    """One textual form for DB values and CSV cells: NULL/'' -> '', numbers -> canonical."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):  # native LIST columns; expected CSVs spell them a,b
        return ",".join(normalize(v) for v in value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, (int, float, Decimal)):
        return format(Decimal(str(value)).normalize(), "f")
    text = str(value)
    if NUMBER.fullmatch(text):
        return format(Decimal(text).normalize(), "f")
    return text


def mart_rows(db: Path, model: str, columns: list[str], schema: str = "analytics") -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        quoted = ", ".join(f'"{c}"' for c in columns)
        rows = con.execute(f"select {quoted} from {schema}.{model}").fetchall()
    finally:
        con.close()
    return sorted(tuple(normalize(v) for v in row) for row in rows)


def assert_matches_expected(db: Path, model: str, expected_name: str) -> None:
    columns, rows = read_expected(expected_name)
    expected = sorted(tuple(normalize(r[c]) for c in columns) for r in rows)
    actual = mart_rows(db, model, columns)
    if actual != expected:
        missing = [r for r in expected if r not in actual]
        extra = [r for r in actual if r not in expected]
        raise AssertionError(
            f"{model} differs from tests/expected/{expected_name}.csv\ncolumns: {columns}\n"
            f"expected but missing:\n  " + "\n  ".join(map(str, missing))
            + "\nactual but not expected:\n  " + "\n  ".join(map(str, extra))
        )


# Build bookkeeping, not data: the run that last wrote a row differs between an
# incremental build and a full refresh by design (README "Incremental builds").
CHANGE_MARKERS = ("changed_by_run",)


def table_difference(db_a: Path, db_b: Path, relation: str) -> tuple[int, int]:
    """Rows of `relation` in a but not b, and in b but not a (EXCEPT ALL, as multisets),
    over every column but the change markers."""
    con = duckdb.connect()
    try:
        con.execute(f"attach '{db_a}' as a (read_only)")
        con.execute(f"attach '{db_b}' as b (read_only)")
        names = [row[0] for row in con.execute(f"describe a.{relation}").fetchall()]
        columns = ", ".join(f'"{n}"' for n in names if n not in CHANGE_MARKERS)
        a_not_b = con.execute(
            f"select count(*) from (select {columns} from a.{relation} "
            f"except all select {columns} from b.{relation})"
        ).fetchone()[0]
        b_not_a = con.execute(
            f"select count(*) from (select {columns} from b.{relation} "
            f"except all select {columns} from a.{relation})"
        ).fetchone()[0]
    finally:
        con.close()
    return a_not_b, b_not_a
