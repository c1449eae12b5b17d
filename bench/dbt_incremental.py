"""dbt after a small load vs a full refresh, and the documented hourly and daily commands.

Issue 14's measure: on the bench archive, the base files (99 %) are loaded and built once;
then the extra files (the newest 1 %) are loaded, and from copies of that one state:

    dbt_run_after_1pct     ``dbt run``                 (models only, incremental)
    dbt_run_full_refresh   ``dbt run --full-refresh``  (models only, everything rebuilt)
    dbt_hourly             HOURLY: models plus the data tests that guard them
    dbt_daily              DAILY: every model, seed, data test and unit test

each ``--repeat`` times, interleaved. The target is run_after_1pct / run_full_refresh <= 25 %.
The seconds of each node of the incremental run (dbt's run_results.json) are recorded too,
so the report names what the remaining incremental run spends its time on.
Every command runs on its own copy of the state, so none sees another's work. One more step
measures the fixed floor under any incremental run:

    dbt_run_no_new_data    ``dbt run`` right after another ``dbt run`` (nothing new to read)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from common import fresh_db, link_tree, median

TARGET_SHARE = 0.25
# The hourly command (README, "Incremental builds"): models and seeds, and the data tests
# that guard keys, types and money rules; the reconciliations and relationship tests that
# re-read whole marts, and the unit tests, are left to the daily run.
HOURLY = ["build", "--exclude-resource-type", "unit_test",
          "--exclude", "test_name:sums_match_by_group", "test_name:relationships", "test_type:singular"]
DAILY = ["build"]
COMMANDS = {
    "dbt_run_after_1pct": ["run"],
    "dbt_run_full_refresh": ["run", "--full-refresh"],
    "dbt_hourly": HOURLY,
    "dbt_daily": DAILY,
}


def copy_state(src: Path, dst: Path) -> Path:
    fresh_db(dst)
    shutil.copyfile(src, dst)
    if Path(str(src) + ".wal").exists():
        shutil.copyfile(str(src) + ".wal", str(dst) + ".wal")
    return dst


def node_seconds(target: Path) -> dict[str, float]:
    """Seconds per node of the last dbt command (run_results.json in its target path)."""
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[-1]: round(r["execution_time"], 3) for r in results}


# dbt's debug file log (its default): which thread runs which node, and each statement's time
LOG_NODE = re.compile(r"\[(Thread-\d+)[^\]]*\]: (Began|Finished) running node \S+?\.(\w+)$")
LOG_SQL = re.compile(r"\[(Thread-\d+)[^\]]*\]: SQL status: .* in ([\d.]+) seconds$")


def node_sql(log: Path, offset: int) -> dict[str, tuple[float, int]]:
    """Seconds and number of DuckDB statements per node of the dbt invocation logged after byte
    `offset` of dbt.log: the rest of a node's seconds is dbt's own Python (compiling, the
    materialization's macros, the adapter's cache and metadata queries' overhead, logging)."""
    if not log.exists():
        return {}
    if log.stat().st_size < offset:  # the log rolled over: no figure rather than a silent 0
        raise RuntimeError(f"{log} is shorter than before the command: it rolled over "
                           "(run dbt with DBT_LOG_FILE_MAX_BYTES=0)")
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    running: dict[str, str] = {}
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if m := LOG_NODE.search(line):
            if m[2] == "Began":
                running[m[1]] = m[3]
            else:
                running.pop(m[1], None)
        elif (m := LOG_SQL.search(line)) and m[1] in running:
            node = running[m[1]]
            seconds[node] = seconds.get(node, 0.0) + float(m[2])
            counts[node] = counts.get(node, 0) + 1
    return {n: (round(s, 3), counts[n]) for n, s in seconds.items()}


def node_sql_seconds(log: Path, offset: int) -> dict[str, float]:
    """Seconds of DuckDB statements per node (see node_sql)."""
    return {n: s for n, (s, _) in node_sql(log, offset).items()}


def split(target: Path, log: Path, offset: int, wall: float) -> dict:
    """Where a dbt command's wall time went: dbt's start and end around the nodes (wall
    minus run_results' elapsed time), and the nodes' seconds (both threads summed) as SQL
    and dbt's Python, with the number of statements the nodes ran (dbt's Python grows with it)."""
    elapsed = json.loads((target / "run_results.json").read_text())["elapsed_time"]
    nodes = sum(node_seconds(target).values())
    per_node = node_sql(log, offset).values()
    sql = sum(s for s, _ in per_node)
    return {"dbt_outside_nodes_s": round(wall - elapsed, 2), "node_s": round(nodes, 2),
            "node_sql_s": round(sql, 2), "node_python_s": round(nodes - sql, 2),
            "node_sql_statements": sum(n for _, n in per_node)}


def compare(bench, files: list[str], extra: dict | None) -> dict | None:
    """Measure COMMANDS after a 1 % load through `bench.measure`/`bench.record` (recorded with
    the other steps); return the medians and the incremental share. None without extra files."""
    if not extra or bench.dbt_available() is not None:
        return None
    tree = bench.work / "dbtinc-tree"
    link_tree(bench.data, files, tree)
    state = fresh_db(bench.work / "dbtinc-state.duckdb")
    bench.load("dbtinc_base_load", [tree], state, {"files_loaded": len(files)})
    dbt = [str(bench.a.dbt)]
    bench.record("dbtinc_base_build", bench.measure([*dbt, "build", *bench.dbt_dirs()],
                                                    env=bench.dbt_env(state), timeout=bench.a.timeout))
    root = Path(extra["root"])
    for rel in extra["file_list"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, tree / rel)
    bench.load("dbtinc_1pct_load", [tree], state, {"files_loaded": len(extra["file_list"])})
    work = bench.work / "dbtinc-work.duckdb"
    # dbt re-parses the whole project when the profile changes, and the warehouse path is in
    # the profile: parse once (unmeasured) with the path every measured command uses, or the
    # first of them pays a full parse that an hourly run on one warehouse never does
    copy_state(state, work)
    bench.measure([*dbt, "parse", *bench.dbt_dirs()], env=bench.dbt_env(work), timeout=bench.a.timeout)
    for _ in range(bench.a.repeat):
        for step, args in COMMANDS.items():
            copy_state(state, work)
            log = bench.work / "dbt-logs" / "dbt.log"
            offset = log.stat().st_size if log.exists() else 0
            m = bench.measure([*dbt, *args, *bench.dbt_dirs()], env=bench.dbt_env(work),
                              timeout=bench.a.timeout)
            target = bench.work / "dbt-target"
            ok = m["rc"] == 0 and step.startswith("dbt_run")
            bench.record(step, m, nodes=node_seconds(target) if ok else {},
                         split=split(target, log, offset, m["wall_s"]) if ok else {})
        # the floor: the last command left every model current; "dbt run" again reads nothing new
        offset = log.stat().st_size if log.exists() else 0
        m = bench.measure([*dbt, "run", *bench.dbt_dirs()], env=bench.dbt_env(work), timeout=bench.a.timeout)
        bench.record("dbt_run_no_new_data", m,
                     split=split(target, log, offset, m["wall_s"]) if m["rc"] == 0 else {})
    fresh_db(work)
    fresh_db(state)

    def wall(step: str) -> float | None:
        return median([m["wall_s"] for m in bench.runs.get(step, []) if m["rc"] == 0])

    walls = {step: wall(step) for step in [*COMMANDS, "dbt_run_no_new_data"]}
    incr, full = walls["dbt_run_after_1pct"], walls["dbt_run_full_refresh"]
    runs = [m["nodes"] for m in bench.runs.get("dbt_run_after_1pct", []) if m.get("nodes")]
    nodes = {n: median([r[n] for r in runs if n in r]) for n in (runs[0] if runs else {})}
    slowest = dict(sorted(nodes.items(), key=lambda kv: -kv[1])[:8])
    splits = {step: {k: median([m["split"][k] for m in bench.runs.get(step, [])
                                if m.get("split") and k in m["split"]])
                     for k in ("dbt_outside_nodes_s", "node_s", "node_sql_s", "node_python_s",
                               "node_sql_statements")}
              for step in ("dbt_run_after_1pct", "dbt_run_full_refresh", "dbt_run_no_new_data")}
    return {**walls, "split": splits, "share": incr / full if incr and full else None, "target": TARGET_SHARE,
            "extra_files": len(extra["file_list"]), "extra_lines": extra["lines"],
            "slowest_nodes_after_1pct": slowest}


def row(result: dict | None) -> str:
    """One line for the targets table."""
    name = f"dbt run after a 1% load <= {TARGET_SHARE:.0%} of --full-refresh"
    if not result or result["share"] is None:
        return f"  {'n/a':<5} {name:<48} not measured"
    ok = "PASS" if result["share"] <= TARGET_SHARE else "MISS"
    hourly, daily = result["dbt_hourly"], result["dbt_daily"]
    line = (f"  {ok:<5} {name:<48} {result['share']:.0%} ({result['dbt_run_after_1pct']:.2f} s vs "
            f"{result['dbt_run_full_refresh']:.2f} s after {result['extra_lines']:,} new events); "
            f"hourly build {hourly or float('nan'):.2f} s, daily build {daily or float('nan'):.2f} s; "
            f"dbt run with nothing new {result.get('dbt_run_no_new_data') or float('nan'):.2f} s")
    for step, parts in (result.get("split") or {}).items():
        if parts.get("node_s") is not None:
            statements = parts.get("node_sql_statements")
            line += (f"\n        {step}: dbt outside the nodes {parts['dbt_outside_nodes_s']:.2f} s; nodes "
                     f"{parts['node_s']:.2f} s (2 threads summed) = SQL {parts['node_sql_s']:.2f} s "
                     f"+ dbt's Python {parts['node_python_s']:.2f} s"
                     + (f"; {statements:.0f} statements" if statements is not None else ""))
    slowest = result.get("slowest_nodes_after_1pct")
    if slowest:
        line += "\n        slowest nodes of that run: " + ", ".join(
            f"{n} {s:.2f} s" for n, s in slowest.items())
    return line
