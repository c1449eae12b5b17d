"""What a load hands back to the system between commit groups (loader/writer.py)."""

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO

from loader import writer

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None)
    lib.malloc.restype = ctypes.c_void_p
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


def resident_blocks(lib: ctypes.CDLL, size: int, count: int) -> list[int]:
    blocks = [lib.malloc(size) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, size)  # touched: resident
    return blocks


def test_release_memory_hands_freed_heap_pages_back():
    """Heap memory freed below a live block stays resident (glibc keeps it for reuse) until
    release_memory, which the pipeline calls after each commit: the next group's peak must
    not stack on what the last one left."""
    lib = libc()
    block, count = 64 << 10, 1024  # 64 MiB in blocks below glibc's mmap threshold: on the heap
    blocks = resident_blocks(lib, block, count)
    for b in blocks[:-1]:  # the last one stays: the freed space is not at the heap's top
        lib.free(b)
    before = rss_bytes()
    writer.release_memory()
    after = rss_bytes()
    lib.free(blocks[-1])
    assert before - after > (count // 2) * block, (before >> 20, after >> 20)


def test_blocks_of_duckdbs_size_go_back_to_the_system_when_freed():
    """After map_large_blocks (each load's first step), a freed 256 kB block (DuckDB's block
    size) is unmapped at once, wherever it lies, instead of staying in glibc's heap. In a
    fresh process: glibc serves a request from free heap space first, which a long-lived
    one (this test session) has plenty of."""
    script = textwrap.dedent("""
        import ctypes
        from loader import writer
        from test_writer import libc, resident_blocks, rss_bytes
        lib = libc()
        lib.free(lib.malloc(300 << 10))  # as a load does early on: glibc's threshold rises past 256 kB
        writer.map_large_blocks()
        blocks = resident_blocks(lib, 256 << 10, 256)  # 64 MiB
        before = rss_bytes()
        for b in blocks[:-1]:  # no trim: each freed block must go back on its own
            lib.free(b)
        print(before, rss_bytes())
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    before, after = map(int, out.stdout.split())
    assert before - after > 32 << 20, (before >> 20, after >> 20)
