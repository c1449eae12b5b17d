"""Dedup against a large history: does a run's cost stay flat as the warehouse ages?

    .venv/bin/python bench/history.py [--repeat 3] [--probe-sizes 1000000,10000000,30000000]

1. case   30k new events in 1,000 files (bench/generate.py, 30 lines a file) loaded into an
          empty warehouse and into one whose history already holds 3M messages; the ratio of
          the medians is the target (<= 1.3x). The history is written directly with SQL in
          the loader's key layout (2/3 UUID ids, 1/3 hashed `ajs-next-` ids with their text),
          plus 1 % of the new files' own ids, so the probe finds real hits and the counts
          are checked. Event tables are not pre-filled: only the dedup index is measured.
2. probe  `loader.dedup.probe_history` alone: one commit group of ids (30k and 100k, the
          default group) against histories of each size, in a scratch warehouse, and with a
          dedup window holding the newest 10 % of the loads; the cost model of the README
          comes from these figures.

`bench/run.py` calls `history_case` (step 1). Nothing here asserts on timing.
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
from common import OUT, REPO, fresh_db, last_json, link_tree, median, warm_cache

CASE_EVENTS, CASE_FILE_EVENTS, HISTORY = 30_000, 30, 3_000_000
TARGET_RATIO = 1.3
HIT_SHARE = 0.01  # of the new events' ids put into the history beforehand


def _fill_history(code: Path, db: Path, n: int, known_ids: list[str]) -> None:
    """A warehouse whose `_loader` history holds `n` messages from 1,000 past hourly loads
    (two UUID ids for every `ajs-next-` id), plus `known_ids`, written directly with SQL."""
    sys.path.insert(0, str(code))
    import pyarrow as pa

    from loader import dedup, writer

    con = writer.connect(str(db))
    writer.ensure_metadata(con, "segment")
    con.execute("INSERT INTO _loader.loads (load_id, started_at, status) SELECT i, "
                "now() - INTERVAL 1001 HOUR + i * INTERVAL 1 HOUR, 'succeeded' FROM range(1, 1001) t(i)")
    con.execute(f"""CREATE TEMP TABLE ids AS SELECT CASE WHEN i % 3 = 2 THEN 'ajs-next-' || md5(i::VARCHAR)
        ELSE gen_random_uuid()::VARCHAR END AS message_id, i // 30 AS file_id, 1 + i * 1000 // {int(n)} AS load_id
        FROM range({int(n)}) t(i)""")
    con.register("known", pa.table({"message_id": pa.array(known_ids, pa.string())}))
    con.execute("INSERT INTO ids SELECT message_id, -1, 1000 FROM known")
    dedup._record(con, f"(SELECT {dedup.key_sql('message_id')} AS key, message_id, file_id, load_id "
                       "FROM ids ORDER BY load_id)")
    con.execute("CHECKPOINT")
    con.close()


def _case_archive(py: str, seed: int) -> tuple[dict, Path]:
    sys.path.insert(0, str(REPO / "bench"))
    import generate

    root = OUT / "data" / f"history-n{CASE_EVENTS}-f{CASE_FILE_EVENTS}-s{seed}"
    m = generate.load_manifest(str(root))
    if m is None or m.get("generator_version") != generate.GENERATOR_VERSION:
        import subprocess

        subprocess.run([py, str(REPO / "bench" / "generate.py"), "--events", str(CASE_EVENTS),
                        "--file-events", str(CASE_FILE_EVENTS), "--out", str(root), "--seed",
                        str(seed)], check=True)
        m = generate.load_manifest(str(root))
    return m, root


def _some_ids(root: Path, files: list[str], share: float) -> list[str]:
    import gzip

    ids = []
    for rel in files:
        with gzip.open(root / rel, "rt") as f:
            for line in f:
                try:
                    ids.append(json.loads(line)["messageId"])
                except (ValueError, KeyError, TypeError):
                    continue
    step = max(1, round(1 / share))
    return sorted(set(ids[::step]))


def history_case(bench) -> dict:
    """Step 1, run from bench/run.py (`bench` gives py, code, work, measure, record, args)."""
    py, work = bench.py, bench.work / "history"
    work.mkdir(parents=True, exist_ok=True)
    m, root = _case_archive(py, bench.a.seed)
    files = m["file_list"]
    warm_cache(root, files)
    tree = work / "tree"
    link_tree(root, files, tree)
    known = _some_ids(root, files, HIT_SHARE)
    template = fresh_db(work / "history-template.duckdb")
    _fill_history(bench.code, template, HISTORY, known)
    unique = m["lines"] - m["retry_lines"] - m["bad_lines"]
    walls: dict[str, list[float]] = {"empty": [], "history": []}
    for _ in range(bench.a.repeat):
        for name, times in walls.items():
            db = fresh_db(work / f"{name}.duckdb")
            if name == "history":
                shutil.copy(template, db)
            cmd = [py, "-m", "loader", "load", str(tree), "--db", str(db), "--json"]
            run = bench.measure(cmd, timeout=bench.a.timeout, cwd=bench.code)
            res = last_json(run["stdout"]) or {}
            hits = len(known) if name == "history" else 0
            want = (unique - hits, m["retry_lines"] + hits)
            got = (res.get("rows_loaded"), res.get("duplicates"))
            check = "counts ok" if got == want else f"COUNTS DIFFER: {got} (expected {want})"
            bench.record(f"history_{name}", run, loader=res, check=check)
            if run["rc"] == 0 and got == want:
                times.append(run["wall_s"])
            fresh_db(db)
    fresh_db(template)
    empty, full = median(walls["empty"]), median(walls["history"])
    return {"events": m["lines"], "files": m["files"], "history": HISTORY + len(known),
            "known_ids": len(known), "empty_s": empty, "history_s": full,
            "ratio": full / empty if empty and full else None}


def history_row(h: dict | None) -> str:
    """One line for the targets table (step 1)."""
    name = f"30k events/1,000 files into 3M history <= {TARGET_RATIO}x"
    if not h or not h.get("ratio"):
        return f"  {'n/a':<5} {name:<48} not measured"
    ok = "PASS" if h["ratio"] <= TARGET_RATIO else "MISS"
    return (f"  {ok:<5} {name:<48} {h['ratio']:.2f}x ({h['history_s']:.2f} s vs {h['empty_s']:.2f} s "
            f"into an empty warehouse; {h['known_ids']} ids found in history)")


def probe_cost(sizes: list[int], groups: list[int], repeat: int) -> list[dict]:
    """Step 2: `probe_history` of one group against each history size (in-process)."""
    sys.path.insert(0, str(REPO))
    from loader import dedup, writer

    out = []
    db = fresh_db(OUT / "history-probe.duckdb")
    con = writer.connect(str(db))
    writer.ensure_metadata(con, "segment")
    have = 0
    for size in sorted(sizes):
        con.execute(f"""INSERT INTO _loader.seen_keys (key, file_id, load_id) SELECT CASE WHEN i % 3 = 2
            THEN md5_number('ajs-next-' || i) & ~(15::UHUGEINT << 76) ELSE gen_random_uuid()::UHUGEINT END,
            i // 30, i // 30000 FROM range({have}, {size}) t(i)""")
        con.execute(f"""INSERT INTO _loader.seen_texts (key, message_id, file_id, load_id) SELECT md5_number('ajs-next-' || i) & ~(15::UHUGEINT << 76),
            'ajs-next-' || i, i // 30, i // 30000 FROM range({have}, {size}) t(i) WHERE i % 3 = 2""")
        con.execute("CHECKPOINT")
        have = size
        # the default (no window), and a --dedup-window holding the newest 10 % of the loads
        for group, since in [(g, None) for g in groups] + [(groups[0], int(0.9 * size / 30000))]:
            times, cpu = [], []
            for _ in range(repeat):
                tx = writer.begin(con)
                # the group: new UUIDs, 1 % of them already in history (hashed ids: their
                # texts are read to confirm)
                con.execute(f"""INSERT INTO {tx.ids.table} (message_id, file_id, line) SELECT CASE WHEN i % 100 = 0
                    THEN 'ajs-next-' || (i * 3 + 2) ELSE gen_random_uuid()::VARCHAR END, 0, i
                    FROM range({group}) t(i)""")
                t, c = time.perf_counter(), time.process_time()
                hits = dedup.probe_history(tx.ids, load_id=1 << 40, since_load=since)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)  # all threads: less sensitive to other load
                tx.rollback()
                if since is None:  # the hits are old ids: outside a window
                    assert hits.num_rows == len(range(0, group, 100)), hits.num_rows
            row = {"history": size, "group": group, "window": since is not None, "probe_ms": round(median(times) * 1000, 1),
                   "probe_cpu_ms": round(median(cpu) * 1000, 1), "load_average": os.getloadavg()[0]}
            out.append(row)
            print(json.dumps(row), flush=True)
    con.close()
    fresh_db(db)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe-sizes", default="1000000,10000000,30000000")
    ap.add_argument("--groups", default="30000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-case", action="store_true")
    a = ap.parse_args()
    probe_cost([int(x) for x in a.probe_sizes.split(",")], [int(x) for x in a.groups.split(",")], a.repeat)
    if not a.skip_case:
        from run import Bench

        b = Bench(argparse.Namespace(
            python=str(REPO / ".venv" / "bin" / "python"), workdir=str(OUT / "work"), data=None,
            events=CASE_EVENTS, seed=42, rev=None, quiet_wait=0.0, timeout=3600.0, repeat=a.repeat))
        h = history_case(b)
        print(json.dumps(h))
        print(history_row(h))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
