"""dlt against our loader on the same archive, in the same script run (run by bench/peers.sh).

    bench/.venv-peers/bin/python bench/peer_dlt.py [--events 100000] [--repeat 3]

Runs in its own virtualenv (dlt pins its own duckdb). For each repeat, interleaved:

* dlt: a child process (``--child``) runs one pipeline into a fresh DuckDB file: a resource that
  yields every parsed event (malformed lines skipped) with ``table_name`` from the event name
  (``event`` for track calls, else ``type``; dlt snake-cases it), ``primary_key="messageId"``,
  ``write_disposition="merge"``. The child times extract, normalize and load in-process. It runs
  once with dlt's default loader file format for DuckDB (the reference for the ratio) and once
  with ``loader_file_format="parquet"`` (dlt's recommended faster path), see ``--dlt-formats``;
* ours: ``.venv/bin/python -m loader load <archive> --db <fresh> --json``.

Both are measured as child processes (wall time, peak RSS of that child). The ratio is taken
conservatively: our events/s from the process wall time (interpreter start and imports
included) against dlt's events/s from its in-process pipeline time (imports excluded).
Writes bench/out/peers.json, which bench/run.py reads.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    OUT,
    REPO,
    archive,
    code_snapshot,
    fresh_db,
    last_json,
    machine,
    measure,
    median,
    wait_quiet,
)


def child(a: argparse.Namespace) -> None:
    import dlt

    try:
        import orjson

        loads = orjson.loads
    except ImportError:  # pragma: no cover
        loads = json.loads
    files = sorted(Path(a.archive).rglob("*.gz"))
    bad = 0

    @dlt.resource(
        name="segment_events",
        table_name=lambda e: e.get("event") or e.get("type") or "unknown",
        primary_key="messageId",
        write_disposition="merge",
    )
    def events():
        nonlocal bad
        for path in files:
            with gzip.open(path, "rb") as f:
                for line in f:
                    try:
                        obj = loads(line)
                    except ValueError:
                        bad += 1
                        continue
                    if isinstance(obj, dict):
                        yield obj
                    else:
                        bad += 1

    pipeline = dlt.pipeline(
        pipeline_name="bench_segment",
        pipelines_dir=a.pipelines_dir,
        destination=dlt.destinations.duckdb(a.db),
        dataset_name="segment",
        progress=None,
    )
    t0 = time.perf_counter()
    pipeline.extract(events(), loader_file_format=None if a.file_format == "default"
                     else a.file_format)
    t1 = time.perf_counter()
    pipeline.normalize()
    t2 = time.perf_counter()
    pipeline.load()
    t3 = time.perf_counter()
    import duckdb

    con = duckdb.connect(a.db, read_only=True)
    tables = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'segment' "
        "AND NOT starts_with(table_name, '_dlt') AND NOT contains(table_name, '__')"
    ).fetchall()
    rows = sum(con.execute(f'SELECT count(*) FROM segment."{t}"').fetchone()[0] for (t,) in tables)
    con.close()
    print(json.dumps({
        "extract_s": t1 - t0, "normalize_s": t2 - t1, "load_s": t3 - t2, "pipeline_s": t3 - t0,
        "top_level_tables": len(tables), "rows": rows, "bad_lines_skipped": bad,
        "dlt": dlt.__version__, "duckdb": duckdb.__version__,
    }))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loader-python", default=str(REPO / ".venv" / "bin" / "python"))
    ap.add_argument("--rev", help="measure loader/ as of this git revision (a snapshot)")
    ap.add_argument("--workdir", default=str(OUT / "work-peers"))
    ap.add_argument("--output", default=str(OUT / "peers.json"))
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each run, wait up to this many seconds for an idle machine")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--archive", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--pipelines-dir", help=argparse.SUPPRESS)
    ap.add_argument("--file-format", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--dlt-formats", default="default,parquet",
                    help="dlt loader file formats to measure; the first one is the reference "
                         "for the ratio (default: dlt's default for DuckDB, then parquet)")
    a = ap.parse_args(argv)
    if a.child:
        child(a)
        return 0

    a.loader_python = os.path.abspath(a.loader_python)  # not resolve(): keep the venv's path
    root = OUT / "data" / f"n{a.events}-s{a.seed}"
    base, _ = archive(a.events, a.seed, root, extra_fraction=0.01, python=a.loader_python)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    loader_cwd, loader_label = code_snapshot(a.rev, work)
    n = base["lines"]
    formats = [f.strip() for f in a.dlt_formats.split(",") if f.strip()]
    runs: dict[str, list[dict]] = {f"dlt_{f}": [] for f in formats} | {"loader": []}
    for r in range(a.repeat):
        print(f"repeat {r + 1}/{a.repeat}", file=sys.stderr, flush=True)
        for fmt in formats:
            db = fresh_db(work / "dlt.duckdb")
            pdir = work / "dlt-pipelines"
            if pdir.exists():
                shutil.rmtree(pdir)
            env = os.environ | {"RUNTIME__LOG_LEVEL": "WARNING", "DLT_TELEMETRY": "false",
                                "RUNTIME__DLTHUB_TELEMETRY": "false"}
            wait_quiet(a.quiet_wait)
            m = measure([sys.executable, __file__, "--child", "--archive", str(root), "--db",
                         str(db), "--pipelines-dir", str(pdir), "--file-format", fmt], env=env)
            m["result"] = last_json(m["stdout"])
            m.pop("stdout")
            runs[f"dlt_{fmt}"].append(m)
            res = m["result"] or {}
            print(f"  dlt ({fmt}) {m['wall_s']:7.2f} s (pipeline "
                  f"{res.get('pipeline_s', float('nan')):.2f} s)  rss "
                  f"{m['tree_peak_rss_mb']:6.0f} MB  rc {m['rc']}  other load "
                  f"{m['other_cores']:.2f} cores", file=sys.stderr)
            if m["rc"] != 0:
                print(m["stderr_tail"], file=sys.stderr)
            fresh_db(db)
        db = fresh_db(work / "loader.duckdb")
        wait_quiet(a.quiet_wait)
        m = measure([a.loader_python, "-m", "loader", "load", str(root), "--db", str(db),
                     "--json"], cwd=loader_cwd)
        res = last_json(m["stdout"]) or {}
        m["result"] = {k: res.get(k) for k in ("files_loaded", "rows_loaded", "duplicates",
                                               "rejects", "seconds")}
        m.pop("stdout")
        runs["loader"].append(m)
        print(f"  loader  {m['wall_s']:7.2f} s  rss {m['tree_peak_rss_mb']:6.0f} MB  "
              f"rc {m['rc']}  other load {m['other_cores']:.2f} cores", file=sys.stderr)
        if m["rc"] != 0:
            print(m["stderr_tail"], file=sys.stderr)
        fresh_db(db)

    ok_ld = [m for m in runs["loader"] if m["rc"] == 0]
    out = {"machine": machine(), "code_snapshot": loader_label, "events": n, "archive": str(root), "repeat": a.repeat,
           "raw_bytes": base["raw_bytes"], "gz_bytes": base["gz_bytes"], "dlt_variants": {},
           "runs": runs}
    for fmt in formats:
        ok = [m for m in runs[f"dlt_{fmt}"] if m["rc"] == 0 and m["result"]]
        if not ok:
            continue
        pipe = median([m["result"]["pipeline_s"] for m in ok])
        wall = median([m["wall_s"] for m in ok])
        out["dlt_variants"][fmt] = {
            "version": ok[0]["result"]["dlt"], "loader_file_format": fmt,
            "pipeline_s_median": pipe, "wall_s_median": wall,
            "events_per_s": n / pipe, "events_per_s_wall": n / wall,
            "extract_s_median": median([m["result"]["extract_s"] for m in ok]),
            "normalize_s_median": median([m["result"]["normalize_s"] for m in ok]),
            "load_s_median": median([m["result"]["load_s"] for m in ok]),
            "peak_rss_mb_median": median([m["tree_peak_rss_mb"] for m in ok]),
            "other_cores_median": median([m["other_cores"] for m in ok]),
            "rows": ok[-1]["result"]["rows"],
            "top_level_tables": ok[-1]["result"]["top_level_tables"],
        }
    ok_dlt = formats and formats[0] in out["dlt_variants"]
    if ok_dlt:
        out["dlt"] = out["dlt_variants"][formats[0]]
    if ok_ld:
        wall = median([m["wall_s"] for m in ok_ld])
        out["loader"] = {"wall_s_median": wall, "events_per_s": n / wall,
                         "peak_rss_mb_median": median([m["tree_peak_rss_mb"] for m in ok_ld]),
                         "other_cores_median": median([m["other_cores"] for m in ok_ld]),
                         "rows_loaded": ok_ld[-1]["result"]["rows_loaded"]}
    if ok_dlt and ok_ld:
        out["ratio"] = out["loader"]["events_per_s"] / out["dlt"]["events_per_s"]
        out["ratio_wall_to_wall"] = out["loader"]["events_per_s"] / out["dlt"]["events_per_s_wall"]
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(out, indent=1, default=str))

    print(f"\n{n:,} events ({base['raw_bytes'] / 1e6:.1f} MB raw, {base['gz_bytes'] / 1e6:.1f} MB "
          f"gz), medians of {a.repeat} run(s)")
    for fmt, d in out["dlt_variants"].items():
        print(f"dlt {d['version']} ({fmt}): pipeline {d['pipeline_s_median']:.2f} s (extract "
              f"{d['extract_s_median']:.2f} + normalize {d['normalize_s_median']:.2f} + load "
              f"{d['load_s_median']:.2f}) = {d['events_per_s']:,.0f} events/s; process "
              f"{d['wall_s_median']:.2f} s; peak RSS {d['peak_rss_mb_median']:,.0f} MB; "
              f"{d['rows']:,} rows in {d['top_level_tables']} top-level tables; other load "
              f"{d['other_cores_median']:.2f} cores")
    if ok_ld:
        ld = out["loader"]
        print(f"loader: process {ld['wall_s_median']:.2f} s = {ld['events_per_s']:,.0f} events/s;"
              f" peak RSS {ld['peak_rss_mb_median']:,.0f} MB; {ld['rows_loaded']:,} rows; other "
              f"load {ld['other_cores_median']:.2f} cores")
    if "ratio" in out:
        print(f"ratio: {out['ratio']:.1f}x dlt's events/s ({formats[0]}; our process wall vs "
              f"dlt's in-process pipeline time); {out['ratio_wall_to_wall']:.1f}x wall to wall")
        for fmt, d in out["dlt_variants"].items():
            if fmt != formats[0] and ok_ld:
                out[f"ratio_{fmt}"] = out["loader"]["events_per_s"] / d["events_per_s"]
                print(f"       {out[f'ratio_{fmt}']:.1f}x dlt ({fmt})")
        Path(a.output).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {a.output}")
    return 0 if ok_dlt and ok_ld else 1


if __name__ == "__main__":
    sys.exit(main())
