"""Many small files in one batch: which files are read together, and how each row remembers
its file.

Segment's S3 archive is thousands of small files; DuckDB's cost per statement, not per row,
dominated them (about 0.1 s per file). Consecutive small files therefore form a `Unit` that is
read, shaped and written as one batch. A row's line number carries its file's index in the
unit in its high bits (`encode_line`), so every stage keeps working on one int64 line column;
the writer splits the counts per file and stores plain line numbers. A transaction still
holds whole files, each file keeps its own manifest row and line accounting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from loader.read import InputFile

# Bits 0-31 are the line in the file, 32-49 a message's position in a batch envelope
# (loader/http_batch.py, at most 500 KB per envelope), 50-62 the file's index in its unit.
FILE_SHIFT = 50
LINE_MASK = (1 << FILE_SHIFT) - 1
SMALL_FILE_BYTES = 1 << 20  # on disk: files below this may share a batch
MAX_UNIT_FILES = 2_000  # bounds the per-file Python work of one unit (and stays below 2**13)
GZIP_RATIO = 7  # rough text bytes per gzipped byte of Segment NDJSON, to size a unit


@dataclass(frozen=True)
class Unit:
    """Consecutive input files read as one batch (usually one file)."""

    files: tuple[InputFile, ...]

    @property
    def combined(self) -> bool:
        return len(self.files) > 1


def plan_units(files: list[InputFile], sizes: dict, batch_bytes: int) -> list[Unit]:
    """Group consecutive small NDJSON files into units of about `batch_bytes` of text; every
    other file is a unit of its own. `sizes` maps a path to its size on disk (absent: large).
    Order is kept: among copies received at the same time, the first file's still wins."""
    units: list[Unit] = []
    pending: list[InputFile] = []
    estimate = 0

    def close() -> None:
        nonlocal pending, estimate
        if pending:
            units.append(Unit(tuple(pending)))
        pending, estimate = [], 0

    for f in files:
        size = sizes.get(f.path)
        if f.format != "ndjson" or size is None or size >= SMALL_FILE_BYTES:
            close()
            units.append(Unit((f,)))
            continue
        if pending and f.source_id != pending[0].source_id:
            close()  # the source id is the fallback of the whole batch: one source per unit
        pending.append(f)
        estimate += size * (GZIP_RATIO if f.path.name.lower().endswith(".gz") else 1)
        if estimate >= batch_bytes or len(pending) >= MAX_UNIT_FILES:
            close()
    close()
    return units


def encode_lines(lines: pa.Array | pa.ChunkedArray, index: int) -> pa.Array:
    """Line numbers of the unit's file `index` (0 leaves them as they are)."""
    if index == 0:
        return lines
    return pa.array(np.asarray(lines, dtype=np.int64) + (index << FILE_SHIFT))


def encode_line(line: int, index: int) -> int:
    return line + (index << FILE_SHIFT)


def file_index(lines) -> np.ndarray:
    """The unit's file index of each encoded line number."""
    return np.asarray(lines, dtype=np.int64) >> FILE_SHIFT


def plain_lines(lines) -> pa.Array:
    """Encoded line numbers back to line numbers within their file."""
    return pa.array(np.asarray(lines, dtype=np.int64) & LINE_MASK)


def without_files(batch, indices: set[int]):
    """The batch without the rows, rejects and violations of the unit's files `indices` (files
    that failed the reject ratio); column statistics are recomputed from the rows kept, so a
    failed file's values never type a warehouse column."""
    import dataclasses

    import pyarrow.compute as pc

    from loader.protocols import _filter_slice

    drop = pa.array(sorted(indices), pa.int64())

    def keep_of(lines) -> pa.Array:
        return pc.invert(pc.is_in(pa.array(file_index(lines)), value_set=drop))

    slices = []
    for s in batch.slices:
        keep = keep_of(s.line)
        if pc.all(keep).as_py():
            slices.append(s)
        elif pc.any(keep).as_py():
            slices.append(_filter_slice(s, keep))
    changed = {
        "slices": slices,
        "messages": batch.messages.filter(keep_of(batch.messages["line_no"])),
        "rejections": [r for r in batch.rejections if (r.line >> FILE_SHIFT) not in indices],
    }
    violations = getattr(batch, "violations", None)
    if violations is not None:
        changed["violations"] = violations.filter(keep_of(violations["line"]))
    return dataclasses.replace(batch, **changed)
