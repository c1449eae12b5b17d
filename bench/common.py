"""Shared helpers of the benchmark scripts (standard library only: also runs in the peers venv).

* ``measure(cmd)`` runs one command as a child process and returns its wall time and *its own*
  peak RSS: ``os.wait4`` on that child's pid gives the rusage of that child alone (and of any
  grandchildren it waited for), unlike ``getrusage(RUSAGE_CHILDREN)``, whose ``ru_maxrss`` is a
  maximum over every child this process ever had. A sampler thread also sums the RSS of the
  child's whole process tree every 50 ms, so a multi-process tool is not under-reported.
  It also records how much CPU the rest of the machine used meanwhile (``other_cores``), so a
  figure taken while something else ran can be recognised.
* ``archive(...)`` returns a generated archive, generating it only when its manifest does not
  match the requested size, seed and generator version.
* ``machine()`` describes the machine the figures come from.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreeRss(threading.Thread):
    """Samples the summed RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.max_procs = 1
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kids = _children_map()
            todo, tree = [self.pid], []
            while todo:
                p = todo.pop()
                tree.append(p)
                todo.extend(kids.get(p, ()))
            self.peak = max(self.peak, sum(_rss_bytes(p) for p in tree))
            self.max_procs = max(self.max_procs, len(tree))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def cpu_busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], env: dict | None = None, cwd: str | Path | None = None,
            timeout: float = 7200.0) -> dict:
    """Run ``cmd``; return wall seconds, exit code, stdout, stderr tail and peak RSS (MB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0 = cpu_busy_seconds()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd or REPO)
        sampler = TreeRss(p.pid)
        sampler.start()
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        busy = cpu_busy_seconds() - busy0
        sampler.stop()
        p.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait() again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return {
        "cmd": " ".join(str(c) for c in cmd),
        "rc": p.returncode,
        "wall_s": wall,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024,  # Linux: KiB
        "tree_peak_rss_mb": max(sampler.peak, ru.ru_maxrss * 1024) / 2**20,
        "procs": sampler.max_procs,
        # CPU used meanwhile by everything else on the machine, in cores (ours: the sampler,
        # ~0.01): a figure taken while other work ran is not comparable
        "other_cores": max(0.0, (busy - ru.ru_utime - ru.ru_stime) / wall) if wall else 0.0,
        "stdout": stdout,
        "stderr_tail": stderr[-4000:],
        "timed_out": wall > timeout,
    }


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until the machine is idle: < ``threshold`` cores busy over 1 s.
    Returns the seconds waited."""
    t0 = time.perf_counter()
    while True:
        b0 = cpu_busy_seconds()
        time.sleep(1.0)
        if cpu_busy_seconds() - b0 < threshold or time.perf_counter() - t0 >= max_wait:
            return time.perf_counter() - t0 - 1.0


def last_json(stdout: str) -> dict | None:
    """The last line of ``stdout`` that parses as a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_rev": rev,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on the machine
    }


def archive(events: int, seed: int, root: Path, extra_fraction: float = 0.01,
            python: str | None = None, file_events: int = 10_000) -> tuple[dict, dict | None]:
    """Base and extra manifests of the archive at ``root``, generating it when needed."""
    sys.path.insert(0, str(BENCH))
    import generate

    extra_root = Path(str(root) + ".extra")
    m, mx = generate.load_manifest(str(root)), generate.load_manifest(str(extra_root))
    ok = (
        m is not None and m.get("generator_version") == generate.GENERATOR_VERSION
        and m.get("events") == events and m.get("seed") == seed and m.get("file_events") == file_events
        and all((root / p).exists() for p in m.get("file_list", []))
        and (extra_fraction == 0 or (mx is not None and mx.get("extra_fraction") == extra_fraction
                                     and all((extra_root / p).exists() for p in mx["file_list"])))
    )
    if not ok:
        print(f"generating {events:,} events into {root} ...", file=sys.stderr, flush=True)
        cmd = [python or sys.executable, str(BENCH / "generate.py"), "--events", str(events),
               "--out", str(root), "--seed", str(seed), "--extra-fraction", str(extra_fraction),
               "--file-events", str(file_events)]
        subprocess.run(cmd, check=True)
        m, mx = generate.load_manifest(str(root)), generate.load_manifest(str(extra_root))
    return m, (mx if extra_fraction else None)


CODE_PATHS = ("loader", "models", "macros", "dbt_project.yml", "profiles.yml", "packages.yml",
              "seeds", "snapshots", "analyses", "tests/dbt")


def code_snapshot(rev: str | None, work: Path) -> tuple[Path, str]:
    """The directory to run the loader and dbt from, and a label of that code.

    Without ``rev``: the working tree, labelled with HEAD plus "+changes" when the loader or
    the dbt project has uncommitted changes. With ``rev``: ``git archive <rev>`` unpacked
    under ``work``, so a run measures one fixed commit even while the tree is being edited.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    if not rev:
        dirty = git("status", "--porcelain", "--", *CODE_PATHS)
        return REPO, git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")
    sha = git("rev-parse", "--short", rev)
    dest = work / f"src-{sha}"
    if not (dest / "loader" / "__main__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True,
                             check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest, sha


def link_tree(src_root: Path, files: list[str], dst_root: Path) -> None:
    """Hard-link ``files`` (relative paths) from ``src_root`` into a fresh ``dst_root``."""
    import shutil

    if dst_root.exists():
        shutil.rmtree(dst_root)
    for rel in files:
        d = dst_root / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src_root / rel, d)
        except OSError:
            shutil.copy2(src_root / rel, d)


def warm_cache(root: Path, files: list[str]) -> None:
    """Read every file once so that every measured run reads from the page cache."""
    for rel in files:
        with open(root / rel, "rb") as f:
            while f.read(1 << 20):
                pass


def fresh_db(path: Path) -> Path:
    for p in (path, Path(str(path) + ".wal")):
        if p.exists():
            p.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
