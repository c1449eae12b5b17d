"""The writer's memory hygiene between commit groups (loader/writer.py)."""

import ctypes
import os

from loader import writer

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def test_release_memory_hands_freed_heap_pages_back():
    """Heap memory freed below a live block stays resident (glibc keeps it for reuse) until
    release_memory, which the pipeline calls after each commit: the next group's peak must
    not stack on what the last one left."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 64 << 10, 1024  # 64 MiB in blocks below glibc's mmap threshold: on the heap
    blocks = [libc.malloc(block) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, block)  # resident
    for b in blocks[:-1]:  # the last one stays: the freed space is not at the heap's top
        libc.free(b)
    before = rss_bytes()
    writer.release_memory()
    after = rss_bytes()
    libc.free(blocks[-1])
    assert before - after > (count // 2) * block, (before >> 20, after >> 20)


def test_blocks_of_duckdbs_size_go_back_to_the_system_when_freed():
    """After map_large_blocks (each load's first step), a freed 256 kB block (DuckDB's block
    size) is unmapped at once, wherever it lies, instead of staying in glibc's heap."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    writer.map_large_blocks()
    block, count = 256 << 10, 256  # 64 MiB
    blocks = [libc.malloc(block) for _ in range(count)]
    for b in blocks:
        ctypes.memset(b, 1, block)
    before = rss_bytes()
    for b in blocks[:-1]:
        libc.free(b)
    after = rss_bytes()
    libc.free(blocks[-1])
    assert before - after > (count // 2) * block, (before >> 20, after >> 20)
