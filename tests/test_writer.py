"""What a load hands back to the system between commit groups (loader/writer.py)."""

import ctypes
import os

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
    size) is unmapped at once, wherever it lies, instead of staying in glibc's heap."""
    lib = libc()
    writer.map_large_blocks()
    block, count = 256 << 10, 256  # 64 MiB
    blocks = resident_blocks(lib, block, count)
    before = rss_bytes()
    for b in blocks[:-1]:  # no trim: each freed block must go back on its own
        lib.free(b)
    after = rss_bytes()
    lib.free(blocks[-1])
    assert before - after > (count // 2) * block, (before >> 20, after >> 20)
