"""Throughput and memory of the loader against DuckDB's own reader, side by side in one run.

    .venv/bin/python bench/run.py [--events 1000000] [--file-events 62500] [--repeat 3] [--skip-dbt]

For one generated archive (bench/generate.py, cached under bench/out/data) and in the same run:

1. floor     DuckDB ``read_ndjson`` of every file into one table of a fresh on-disk DB
             (bench/floor.py; default inference + ignore_errors; also with union_by_name);
2. loader    ``python -m loader load <tree> --db <fresh> --json``;
3. no-op     the same command again on the same DB (every file already loaded);
4. dbt full  ``dbt build`` on that warehouse (skipped when there is no dbt_project.yml);
5. incr      the 1 % new files are linked into the tree, then the same load command;
6. dbt incr  ``dbt build`` again;
7. scaling   the loader on the first N/4 and N/2 of the files (fresh DBs);
8. cases     further archives measured against their own floor (CASES below): many small
             files (60k events in 2,000 files of 30 lines) by default.

Every step is a child process measured on its own (wall time; peak RSS from ``os.wait4`` of that
child plus a sampled RSS of its process tree). Every step runs ``--repeat`` times, interleaved,
and the medians are reported; ratios are taken between medians of the same run. Files are read
once before measuring, so every run reads from the page cache. Results go to stdout and to
bench/out/results.json; the targets table says PASS/MISS with the measured value. Nothing here
asserts on timing: a MISS is a finding, not a failure (exit code 0 unless a step errors).
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    link_tree,
    machine,
    median,
    wait_quiet,
    warm_cache,
)
from common import measure as measure_now
from dbt_incremental import compare as compare_dbt_incremental
from dbt_incremental import row as dbt_incremental_row
from history import history_case, history_row
from s3 import compare as compare_s3
from s3 import row as s3_row

LOADER_KEYS = ("files_seen", "files_loaded", "files_skipped", "files_failed", "lines",
               "rows_loaded", "duplicates", "rejects", "discards", "schema_changes", "seconds",
               "stage_seconds")

TARGETS = {
    "events_per_s": 100_000,  # loader, full load at N
    "floor_ratio": 1.5,  # loader wall / floor_union wall (issue 10: read_ndjson(union_by_name))
    "rss_mb": 1024,  # peak RSS at 1M
    "rss_growth": 1.15,  # peak RSS at N / peak RSS at N/4 ("flat")
    "noop_s": 1.25,  # "~1 s"
    "dbt_full_s": 30.0,
    "dbt_incr_share": 0.25,  # incremental dbt build / full dbt build
    "dlt_factor": 50.0,  # loader events/s / dlt events/s on the same subset
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.py = a.python
        self.work = Path(a.workdir)
        self.data = Path(a.data) if a.data else OUT / "data" / f"n{a.events}-f{a.file_events}-s{a.seed}"
        self.runs: dict[str, list[dict]] = {}
        self.notes: list[str] = []
        self.code, self.code_label = code_snapshot(a.rev, self.work)

    # ---- helpers ----------------------------------------------------------------------
    def measure(self, cmd: list[str], **kw) -> dict:
        waited = wait_quiet(self.a.quiet_wait) if self.a.quiet_wait > 0 else 0.0
        m = measure_now(cmd, **kw)
        m["waited_for_quiet_s"] = round(waited, 1)
        return m

    def record(self, step: str, m: dict, **extra) -> dict:
        m = {k: v for k, v in m.items() if k != "stdout"} | extra
        self.runs.setdefault(step, []).append(m)
        rss = m.get("tree_peak_rss_mb") or 0
        log(f"  {step:<16} {m['wall_s']:8.2f} s  rss {rss:7.0f} MB  rc {m['rc']}  "
            f"other load {m['other_cores']:.2f} cores"
            + (f"  {m['check']}" if m.get("check") else ""))
        if m["rc"] != 0:
            log("    stderr: " + m.get("stderr_tail", "")[-1500:].replace("\n", "\n    "))
            for p in m.get("problems") or []:
                log(f"    {p}")
        return m

    def load(self, step: str, paths: list[Path], db: Path, expect: dict) -> dict:
        cmd = [self.py, "-m", "loader", "load", *map(str, paths), "--db", str(db), "--json"]
        # run from the code under test: python -m puts the cwd first on sys.path
        m = self.measure(cmd, timeout=self.a.timeout, cwd=self.code)
        res = last_json(m["stdout"]) or {}
        got = {k: res.get(k) for k in LOADER_KEYS}
        bad = [f"{k}={got.get(k)} (expected {v})" for k, v in expect.items() if got.get(k) != v]
        check = "counts ok" if not bad else "COUNTS DIFFER: " + ", ".join(bad)
        if not res:
            check = "no JSON on stdout"
        return self.record(step, m, loader=got, check=check)

    def dbt(self, step: str, db: Path) -> dict | None:
        env = self.dbt_env(db)
        m = self.measure([str(self.a.dbt), "build", *self.dbt_dirs()], env=env,
                         timeout=self.a.timeout)
        lines = m["stdout"].splitlines()
        done = [ln.strip() for ln in lines if "Done. PASS=" in ln]
        problems = [ln.strip() for ln in lines
                    if re.search(r"\b(ERROR|FAIL|WARN)\b|Error|Failure", ln) and "Done. PASS=" not in ln]
        return self.record(step, m, summary=done[-1] if done else m["stdout"][-300:],
                           problems=problems[:40])

    def dbt_dirs(self) -> list[str]:
        # dbt's artefacts go to the workdir, not to the developer's target/ and logs/
        return ["--project-dir", str(self.code), "--profiles-dir", str(self.code),
                "--target-path", str(self.work / "dbt-target"),
                "--log-path", str(self.work / "dbt-logs")]

    def dbt_env(self, db: Path) -> dict:
        return os.environ | {
            "SEGMENT_DUCKDB_PATH": str(db), "DO_NOT_TRACK": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False", "DBT_USE_COLORS": "False",
            # dbt.log never rolls over: dbt_incremental reads each command's statements from
            # the offset the log had before it, which a rollover (10 MiB) would put past the end
            "DBT_LOG_FILE_MAX_BYTES": "0",
        }

    def dbt_available(self) -> str | None:
        """None when dbt can run, else the reason to skip it."""
        if self.a.skip_dbt:
            return "skipped (--skip-dbt)"
        if not (self.code / "dbt_project.yml").exists():
            return "skipped: dbt_project.yml does not exist yet"
        if not (self.code / "profiles.yml").exists():
            return "skipped: profiles.yml does not exist yet (dbt runs with --profiles-dir <repo>)"
        if not Path(self.a.dbt).exists():
            return f"skipped: {self.a.dbt} not found"
        return None

    # ---- the run ----------------------------------------------------------------------
    def run(self) -> dict:
        a = self.a
        t_start = time.time()
        base, extra = archive(a.events, a.seed, self.data, extra_fraction=a.extra_fraction,
                              python=self.py, file_events=a.file_events)
        cases = [] if a.skip_cases else [case(self) for case in CASES]
        for c in cases:
            c.prepare()
        files = base["file_list"]
        xfiles = extra["file_list"] if extra else []
        log(f"archive {self.data}: {base['files']} files, {base['lines']:,} lines, "
            f"{base['raw_bytes'] / 1e6:,.1f} MB raw / {base['gz_bytes'] / 1e6:,.1f} MB gz; "
            f"extra: {len(xfiles)} file(s), {extra['lines'] if extra else 0:,} lines")
        warm_cache(self.data, files)
        if extra:
            warm_cache(Path(extra["root"]), xfiles)

        self.work.mkdir(parents=True, exist_ok=True)
        tree = self.work / "tree"
        scale_fracs = [] if a.skip_scaling else [0.25]  # issue 10: peak RSS from 250k to 1M
        prefixes = {f: max(1, round(len(files) * f)) for f in scale_fracs}
        prefixes = {f: k for f, k in prefixes.items() if k < len(files)}  # tiny N: fewer points
        for f, k in prefixes.items():
            link_tree(self.data, files[:k], self.work / f"tree-{k}")

        def expect(idx: range, first_load: bool = True) -> dict:
            lines = sum(base["file_lines"][i] for i in idx)
            retries = sum(base["file_retry_lines"][i] for i in idx)
            badl = sum(base["file_bad_lines"][i] for i in idx)
            return {"files_loaded": len(idx), "rows_loaded": lines - retries - badl,
                    "duplicates": retries, "rejects": badl}

        dbt_skip = self.dbt_available()
        if dbt_skip is None:
            env = self.dbt_env(self.work / "dbt-parse.duckdb")
            if (self.code / "packages.yml").exists() or (self.code / "dependencies.yml").exists():
                d = measure_now([str(a.dbt), "deps", *self.dbt_dirs()], env=env)
                if d["rc"] != 0:
                    dbt_skip = "skipped: `dbt deps` failed: " + d["stdout"][-300:]
            if dbt_skip is None:
                # warm-up: every measured build then starts from the same partial-parse state
                p = measure_now([str(a.dbt), "parse", *self.dbt_dirs()], env=env)
                if p["rc"] != 0:
                    out = p["stdout"] + p["stderr_tail"]
                    dbt_skip = "skipped: `dbt parse` failed: " + out[-500:]
        if dbt_skip:
            log(f"dbt: {dbt_skip}")

        glob = str(self.data / "segment-logs" / "*" / "*" / "*.gz")
        for r in range(a.repeat):
            log(f"repeat {r + 1}/{a.repeat}")
            floor_py = str(Path(__file__).with_name("floor.py"))
            for step, opts in (("floor", []), ("floor_union", ["--union-by-name"])):
                if step == "floor_union" and a.skip_union_floor:
                    continue
                db = fresh_db(self.work / "floor.duckdb")
                m = self.measure([self.py, floor_py, "--db", str(db), "--glob", glob, *opts],
                                 timeout=a.timeout)
                self.record(step, m, floor=last_json(m["stdout"]))
            fresh_db(self.work / "floor.duckdb")

            link_tree(self.data, files, tree)
            db = fresh_db(self.work / "warehouse.duckdb")
            full = self.load("loader", [tree], db, expect(range(len(files))))
            if full["rc"] != 0:
                self.notes.append(f"loader failed (rc {full['rc']}); later steps skipped")
                break
            self.load("noop", [tree], db, {"files_loaded": 0, "files_skipped": len(files),
                                           "rows_loaded": 0})
            if dbt_skip is None:
                self.dbt("dbt_full", db)
            if extra:
                link_tree(Path(extra["root"]), xfiles, self.work / "extra-stage")
                for rel in xfiles:
                    (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.link(self.work / "extra-stage" / rel, tree / rel)
                xl, xr, xb = extra["lines"], extra["retry_lines"], extra["bad_lines"]
                self.load("incremental", [tree], db,
                          {"files_loaded": len(xfiles), "files_skipped": len(files),
                           "rows_loaded": xl - xr - xb, "duplicates": xr, "rejects": xb})
                if dbt_skip is None:
                    self.dbt("dbt_incremental", db)
            fresh_db(db)
            for f, k in prefixes.items():
                db = fresh_db(self.work / f"scale-{k}.duckdb")
                self.load(f"scale_{f:g}", [self.work / f"tree-{k}"], db, expect(range(k)))
                fresh_db(db)
            for c in cases:
                c.repeat()

        self.cases = cases

        self.s3 = compare_s3(self, files, expect(range(len(files))))  # bench/s3.py
        self.history = history_case(self)  # bench/history.py
        self.dbt_incremental = compare_dbt_incremental(self, files, extra)  # bench/dbt_incremental.py
        return self.report(base, extra, prefixes, dbt_skip, time.time() - t_start)

    # ---- report -----------------------------------------------------------------------
    def step_summary(self, step: str, events: int, raw: int, gz: int) -> dict | None:
        runs = [m for m in self.runs.get(step, []) if m["rc"] == 0]
        if not runs:
            return None
        wall = median([m["wall_s"] for m in runs])
        return {
            "runs": len(runs),
            "wall_s_median": wall,
            "wall_s_all": [round(m["wall_s"], 3) for m in runs],
            "events": events,
            "events_per_s": events / wall if events else None,
            "raw_mb_per_s": raw / 1e6 / wall if raw else None,
            "gz_mb_per_s": gz / 1e6 / wall if gz else None,
            "peak_rss_mb_median": median([m["peak_rss_mb"] for m in runs]),
            "tree_peak_rss_mb_median": median([m["tree_peak_rss_mb"] for m in runs]),
            "tree_peak_rss_mb_max": max(m["tree_peak_rss_mb"] for m in runs),
            "self_reported_s_median": median(
                [(m.get("loader") or {}).get("seconds") for m in runs]),
            "checks": sorted({m.get("check", "") for m in runs} - {""}),
            "other_cores_median": median([m["other_cores"] for m in runs]),
            "dbt_summary": runs[-1].get("summary"),
        }

    def report(self, base: dict, extra: dict | None, prefixes: dict, dbt_skip: str | None,
               elapsed: float) -> dict:
        n, raw, gz = base["lines"], base["raw_bytes"], base["gz_bytes"]
        s = {
            "floor": self.step_summary("floor", n, raw, gz),
            "floor_union": self.step_summary("floor_union", n, raw, gz),
            "loader": self.step_summary("loader", n, raw, gz),
            "noop": self.step_summary("noop", n, raw, gz),
            "incremental": self.step_summary(
                "incremental", extra["lines"] if extra else 0,
                extra["raw_bytes"] if extra else 0, extra["gz_bytes"] if extra else 0),
            "dbt_full": self.step_summary("dbt_full", 0, 0, 0),
            "dbt_incremental": self.step_summary("dbt_incremental", 0, 0, 0),
        }
        for c in getattr(self, "cases", []):
            s.update(c.summaries())
        for f, k in prefixes.items():
            s[f"scale_{f:g}"] = self.step_summary(
                f"scale_{f:g}", sum(base["file_lines"][:k]), sum(base["file_raw_bytes"][:k]),
                sum(base["file_gz_bytes"][:k]))
        peers = None
        peers_path = OUT / "peers.json"
        if peers_path.exists():
            try:
                peers = json.loads(peers_path.read_text())
            except ValueError:
                peers = None
        targets = self.targets(s, n, peers, dbt_skip)
        result = {
            "machine": machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - elapsed)),
            "bench_seconds": round(elapsed, 1),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.a).items()},
            "code": self.code_label,
            "archive": {k: v for k, v in base.items() if not k.startswith("file_")},
            "extra": {k: v for k, v in (extra or {}).items() if not k.startswith("file_")},
            "summary": s,
            "targets": targets,
            "peers": peers,
            "dbt": dbt_skip or "measured",
            "notes": self.notes,
            "runs": self.runs,
        }
        self.print_report(result)
        return result

    def targets(self, s: dict, n: int, peers: dict | None, dbt_skip: str | None) -> list[dict]:
        t = TARGETS
        out = []

        def add(name: str, ok: bool | None, value: str) -> None:
            out.append({"target": name, "status": "n/a" if ok is None else
                        ("PASS" if ok else "MISS"), "measured": value})

        ld, fl = s["loader"], s["floor_union"] or s["floor"]
        floor_name = "read_ndjson(union_by_name)" if s["floor_union"] else "read_ndjson"
        if ld:
            add(f"loader >= {t['events_per_s']:,} events/s",
                ld["events_per_s"] >= t["events_per_s"],
                f"{ld['events_per_s']:,.0f} events/s")
        else:
            add(f"loader >= {t['events_per_s']:,} events/s", None, "not measured")
        if ld and fl:
            ratio = ld["wall_s_median"] / fl["wall_s_median"]
            add(f"<= {t['floor_ratio']}x {floor_name} (wall)", ratio <= t["floor_ratio"],
                f"{ratio:.2f}x ({ld['wall_s_median']:.2f} s vs {fl['wall_s_median']:.2f} s)")
        else:
            add(f"<= {t['floor_ratio']}x {floor_name} (wall)", None, "not measured")
        if ld:
            rss = ld["tree_peak_rss_mb_max"]
            at = "" if n == 1_000_000 else f" (run at N={n:,}, target is stated for 1M)"
            add(f"peak RSS < {t['rss_mb']} MB at 1M", rss < t["rss_mb"], f"{rss:,.0f} MB{at}")
        q = s.get("scale_0.25")
        if ld and q:
            g = ld["tree_peak_rss_mb_median"] / q["tree_peak_rss_mb_median"]
            add(f"peak RSS flat in N (N vs N/4 <= {t['rss_growth']}x)", g <= t["rss_growth"],
                f"{g:.2f}x ({q['tree_peak_rss_mb_median']:,.0f} -> "
                f"{ld['tree_peak_rss_mb_median']:,.0f} MB)")
        else:
            add(f"peak RSS flat in N (N vs N/4 <= {t['rss_growth']}x)", None, "not measured")
        no = s["noop"]
        add(f"no-op re-run ~1 s (<= {t['noop_s']} s)", None if not no else
            no["wall_s_median"] <= t["noop_s"], f"{no['wall_s_median']:.2f} s" if no else
            "not measured")
        df, di = s["dbt_full"], s["dbt_incremental"]
        add(f"full dbt build < {t['dbt_full_s']:g} s", None if not df else
            df["wall_s_median"] < t["dbt_full_s"],
            f"{df['wall_s_median']:.2f} s" if df else (dbt_skip or "not measured"))
        if df and di:
            share = di["wall_s_median"] / df["wall_s_median"]
            add(f"incremental dbt < {t['dbt_incr_share']:.0%} of full", share < t["dbt_incr_share"],
                f"{share:.0%} ({di['wall_s_median']:.2f} s)")
        else:
            add(f"incremental dbt < {t['dbt_incr_share']:.0%} of full", None,
                dbt_skip or "not measured")
        if peers and peers.get("ratio"):
            extra = "".join(f"; {v:.1f}x dlt {k[6:]}" for k, v in peers.items()
                            if k.startswith("ratio_") and k != "ratio_wall_to_wall")
            add(f">= {t['dlt_factor']:g}x dlt's events/s (same subset)",
                peers["ratio"] >= t["dlt_factor"],
                f"{peers['ratio']:.1f}x ({peers['loader']['events_per_s']:,.0f} vs "
                f"{peers['dlt']['events_per_s']:,.0f} events/s on {peers['events']:,} events, "
                f"dlt {peers['dlt'].get('loader_file_format', 'default')}{extra}; code "
                f"{peers.get('code_snapshot', '?')})")
        else:
            add(f">= {t['dlt_factor']:g}x dlt's events/s (same subset)", None,
                "no bench/out/peers.json: run `make bench-peers`")
        for c in getattr(self, "cases", []):
            for name, ok, value in c.targets(s):
                add(name, ok, value)
        return out

    def print_report(self, r: dict) -> None:
        mc, ar, s = r["machine"], r["archive"], r["summary"]
        print()
        print(f"machine: {mc['nproc']} cores, {mc['cpu_model']}, {mc['ram_gib']} GiB RAM, "
              f"Python {mc['python']}; code: {r['code']}")
        print(f"archive: {ar['lines']:,} events in {ar['files']} gzipped NDJSON files "
              f"({ar['raw_bytes'] / 1e6:,.1f} MB uncompressed, {ar['gz_bytes'] / 1e6:,.1f} MB "
              f"gzipped); {ar['retry_lines']:,} duplicate messageIds, {ar['bad_lines']:,} "
              f"malformed lines; seed {ar['seed']}")
        if r["extra"]:
            x = r["extra"]
            print(f"extra:   {x['lines']:,} events in {x['files']} new file(s) for the "
                  "incremental steps")
        print(f"medians of {self.a.repeat} run(s), hot page cache; events/s and MB/s from "
              "wall time of the whole process")
        print()
        hdr = (f"{'step':<18}{'wall s':>9}{'events/s':>12}{'MB/s raw':>10}{'MB/s gz':>9}"
               f"{'peak RSS MB':>13}{'vs floor':>10}{'other':>7}  all runs (s)")
        print(hdr)
        print("-" * len(hdr))
        floor = s["floor"]["wall_s_median"] if s["floor"] else None
        order = ["floor", "floor_union", "loader", "noop", "incremental", "dbt_full",
                 "dbt_incremental"] + [k for k in s if k.startswith("scale_")]
        case_floor = {k: c.floor_step for c in getattr(self, "cases", []) for k in c.steps}
        order += list(case_floor)
        for k in order:
            v = s.get(k)
            if not v:
                continue

            def f(x, spec):
                return format(x, spec) if x is not None else "-"

            vs = (f"{v['wall_s_median'] / floor:.2f}x" if floor and k in
                  ("floor", "floor_union", "loader") else "")
            if k in case_floor and s.get(case_floor[k]):
                vs = f"{v['wall_s_median'] / s[case_floor[k]]['wall_s_median']:.2f}x*"
            print(f"{k:<18}{v['wall_s_median']:>9.2f}{f(v['events_per_s'], ',.0f'):>12}"
                  f"{f(v['raw_mb_per_s'], ',.1f'):>10}{f(v['gz_mb_per_s'], ',.1f'):>9}"
                  f"{v['tree_peak_rss_mb_median']:>13,.0f}{vs:>10}"
                  f"{v['other_cores_median']:>7.2f}  "
                  f"{', '.join(f'{w:.2f}' for w in v['wall_s_all'])}")
        print("(other: median CPU cores used by the rest of the machine during the step; above "
              "~0.2 the figure is disturbed; x*: against the case's own floor)")
        busy = [k for k in order if s.get(k) and s[k]["other_cores_median"] > 0.2]
        if busy:
            print(f"WARNING: other work ran during {', '.join(busy)}: rerun on a quiet machine")
        print()
        for k in order:
            v = s.get(k)
            if v and (v["checks"] or v.get("dbt_summary")):
                print(f"{k}: {'; '.join(v['checks'])} {v.get('dbt_summary') or ''}".rstrip())
        for k in ("floor", "floor_union"):
            runs = self.runs.get(k) or []
            if runs and runs[-1].get("floor"):
                fl = runs[-1]["floor"]
                print(f"{k}: {fl['rows']:,} rows ({fl['rows_with_message_id']:,} with a "
                      f"messageId), {fl['columns']} columns; read_ndjson({fl['options']})")
        sc = [(k, s[k]) for k in order if k.startswith("scale_") and s.get(k)]
        if sc and s["loader"]:
            print()
            print("scaling (loader, fresh DB):")
            for k, v in sc + [("full", s["loader"])]:
                print(f"  {v['events']:>11,} events  {v['wall_s_median']:8.2f} s  "
                      f"{v['events_per_s']:>10,.0f} events/s  peak RSS "
                      f"{v['tree_peak_rss_mb_median']:,.0f} MB")
        print()
        print("targets:")
        for t in r["targets"]:
            print(f"  {t['status']:<5} {t['target']:<48} {t['measured']}")
        print(s3_row(getattr(self, "s3", None)))
        print(history_row(getattr(self, "history", None)))
        print(dbt_incremental_row(getattr(self, "dbt_incremental", None)))
        if r["dbt"] != "measured":
            print(f"dbt: {r['dbt']}")
        for note in r["notes"]:
            print(f"note: {note}")


class SmallFiles:
    """Segment's S3 layout: many small files. The loader against DuckDB's read_ndjson with
    union_by_name over the same files, alternated, each into a fresh on-disk DB.

    A case is the pattern for further ones (history, S3): prepare() once, repeat() once per
    repetition (recording steps through bench.measure/record/load), summaries() and
    targets(summary) for the report; `steps` lists its step names, `floor_step` the one its
    ratios are taken against."""

    floor_step = "small_floor_union"
    steps = ("small_floor_union", "small_loader")

    def __init__(self, bench: Bench) -> None:
        self.b = bench
        a = bench.a
        self.root = OUT / "data" / f"small-n{a.small_events}-f{a.small_file_events}-s{a.seed}"

    def prepare(self) -> None:
        a = self.b.a
        self.m, _ = archive(a.small_events, a.seed, self.root, extra_fraction=0, python=self.b.py,
                            file_events=a.small_file_events)
        warm_cache(self.root, self.m["file_list"])
        log(f"small files {self.root}: {self.m['files']} files, {self.m['lines']:,} lines")

    def repeat(self) -> None:
        b, m = self.b, self.m
        db = fresh_db(b.work / "small-floor.duckdb")
        glob = str(self.root / "segment-logs" / "*" / "*" / "*.gz")
        fm = b.measure([b.py, str(Path(__file__).with_name("floor.py")), "--db", str(db), "--glob", glob,
                        "--union-by-name"], timeout=b.a.timeout)
        b.record("small_floor_union", fm, floor=last_json(fm["stdout"]))
        fresh_db(db)
        db = fresh_db(b.work / "small-loader.duckdb")
        b.load("small_loader", [self.root], db, {
            "files_loaded": m["files"], "rows_loaded": m["lines"] - m["retry_lines"] - m["bad_lines"],
            "duplicates": m["retry_lines"], "rejects": m["bad_lines"]})
        fresh_db(db)

    def summaries(self) -> dict:
        m = self.m
        return {k: self.b.step_summary(k, m["lines"], m["raw_bytes"], m["gz_bytes"]) for k in self.steps}

    def targets(self, s: dict) -> list[tuple]:
        ld, fl = s.get("small_loader"), s.get("small_floor_union")
        name = (f"{self.m['lines']:,} events in {self.m['files']:,} files <= "
                f"{TARGETS['floor_ratio']}x read_ndjson(union_by_name)")
        if not (ld and fl):
            return [(name, None, "not measured")]
        ratio = ld["wall_s_median"] / fl["wall_s_median"]
        return [(name, ratio <= TARGETS["floor_ratio"],
                 f"{ratio:.2f}x ({ld['wall_s_median']:.2f} s vs {fl['wall_s_median']:.2f} s)")]


# Further archives measured in the same run (A2: history, C: S3 add theirs here).
CASES = [SmallFiles]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--skip-dbt", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--file-events", type=int, default=62_500,
                    help="lines per file of the main archive (1M events in 16 files by default)")
    ap.add_argument("--small-events", type=int, default=60_000)
    ap.add_argument("--small-file-events", type=int, default=30)
    ap.add_argument("--skip-cases", action="store_true", help="only the main archive")
    ap.add_argument("--skip-union-floor", action="store_true",
                    help="do not also measure read_ndjson(..., union_by_name=true)")
    ap.add_argument("--extra-fraction", type=float, default=0.01)
    ap.add_argument("--data", help="archive root (default bench/out/data/n<N>-s<seed>)")
    ap.add_argument("--workdir", default=str(OUT / "work"))
    ap.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python")
                    if (REPO / ".venv" / "bin" / "python").exists() else sys.executable)
    ap.add_argument("--dbt", default=str(REPO / ".venv" / "bin" / "dbt"))
    ap.add_argument("--rev", help="measure the loader and the dbt project as of this git "
                    "revision (a snapshot under the workdir) instead of the working tree")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per step, seconds")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each step, wait up to this many seconds for the rest of the "
                         "machine to use < 0.15 cores (0: do not wait)")
    ap.add_argument("--output", default=str(OUT / "results.json"))
    a = ap.parse_args(argv)
    if a.repeat < 1 or a.events < 1:
        ap.error("--repeat and --events must be >= 1")
    a.python = os.path.abspath(a.python)  # not resolve(): that would leave the venv
    result = Bench(a).run()
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {a.output}")
    shutil.rmtree(Path(a.workdir) / "tree", ignore_errors=True)
    failed = any(m["rc"] != 0 for runs in result["runs"].values() for m in runs)
    return 1 if failed or result["notes"] else 0


if __name__ == "__main__":
    sys.exit(main())
