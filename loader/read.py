"""Reading: find input files and stream them as bounded batches of raw lines.

Every line of a file comes out either in a batch (as text, for the normaliser) or as a
`Rejection` (invalid UTF-8, oversized, blank), so the caller can account for each one. A
truncated or corrupt gzip stream keeps the lines read before the fault and ends with a
rejection that records the fault and the bytes of the unfinished line.
"""

from __future__ import annotations

import fnmatch
import glob
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loader.spec import Reason

if TYPE_CHECKING:
    from loader.objectstore import ObjectRef

try:
    # ISA-L's inflate (the `isal` package) gunzips Segment's archives 2.5x faster than zlib
    # (45 MB of text: 0.025 against 0.065 CPU s), and reading runs under the reader threads'
    # shared lock. Same interface as zlib's; zlib when isal has no wheel for the platform.
    from isal import isal_zlib as _inflate

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate.error)
except ImportError:  # pragma: no cover - isal is a dependency; this is the fallback
    _inflate = zlib  # type: ignore[assignment]
    _INFLATE_ERRORS = (zlib.error,)

NDJSON_SUFFIXES = (".json", ".ndjson", ".jsonl")
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK_BYTES = 4 << 20
INFLATE_CHUNK_BYTES = 16 << 10
# A batch envelope (Segment's /v1/batch body) may hold up to 500 KB; its messages are held to
# the per-event limit once expanded (loader/http_batch.py).
MAX_ENVELOPE_BYTES = 500 * 1024
# One day folder of Segment's S3 layout: segment-logs/<source-id>/<received-day-ms>/<file>
SEGMENT_LOGS_RE = re.compile(r"(?:^|/)segment-logs/([^/]+)/(\d{10,})/[^/]+$")


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str  # "ndjson" or "parquet"
    source_id: str | None  # from the segment-logs layout, when the path follows it
    origin: ObjectRef | None = None  # s3:// or gs:// object; `path` is then its local spool copy

    @property
    def name(self) -> str:
        """What the manifest, results and errors call the file: its path, or its object URI."""
        return self.origin.uri if self.origin is not None else str(self.path)


@dataclass(frozen=True)
class Rejection:
    line: int
    raw: bytes
    reason: str
    detail: str = ""


@dataclass
class RawBatch:
    """Consecutive lines of one file: `lines` holds the decodable ones, `rejections` the rest."""

    lines: pa.Table  # columns line_no (int64), raw (string)
    rejections: list[Rejection] = field(default_factory=list)
    lines_read: int = 0  # every line of this stretch, including rejected ones


def source_id_from_path(path: Path) -> str | None:
    match = SEGMENT_LOGS_RE.search(path.as_posix())
    return match.group(1) if match else None


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    stem = name.removesuffix(".gz")
    if stem.endswith(NDJSON_SUFFIXES) or name.endswith(".gz"):
        return "ndjson"
    return None


def discover_files(paths: list[str], since: str | None = None, exclude: tuple[str, ...] = ()) -> list[InputFile]:
    """Expand files, folders (recursively) and globs into input files, sorted by path; then
    s3:// and gs:// URIs (objects, prefixes, globs: see objectstore), sorted by URI.
    `since` keeps only day folders of Segment's layout received in that window.

    Sorted order matters: in Segment's layout it is received-day order, and the first copy of
    a message loaded wins, so the same inputs always give the same tables.

    A path that yields no input file (an empty or unmounted folder, one holding only `.csv`)
    is a usage error, not "nothing new". A dangling symlink with an input file's name is kept:
    reading it fails, so it is reported instead of skipped in silence. Paths matching one of
    the `exclude` globs (matched against the whole path and the file name) are left out.
    """
    from loader import objectstore
    from loader.errors import UsageError

    cutoff = objectstore.since_cutoff(since)
    uris = [p for p in paths if objectstore.is_object_uri(p)]
    found: dict[Path, InputFile] = {}
    missing, empty = [], []
    for spec in (p for p in paths if not objectstore.is_object_uri(p)):
        matches = [Path(p) for p in glob.glob(spec, recursive=True)] if glob.has_magic(spec) else [
            Path(spec)
        ]
        if not any(m.exists() or m.is_symlink() for m in matches):
            missing.append(spec)
            continue
        inputs = 0
        for match in matches:
            candidates = (
                (p for p in match.rglob("*") if p.is_file() or _dangling(p)) if match.is_dir() else [match]
            )
            for candidate in candidates:
                fmt = _format_of(candidate)
                if (fmt is None and match.is_dir()) or _excluded(candidate.absolute().as_posix(), exclude):
                    continue  # unrelated files in an archive folder (README, _SUCCESS...)
                # A dangling link keeps its own name: its target does not exist to resolve to.
                resolved = candidate.absolute() if _dangling(candidate) else candidate.resolve()
                found[resolved] = InputFile(resolved, fmt or "ndjson", source_id_from_path(resolved))
                inputs += 1
        if not inputs:
            empty.append(spec)
    if missing:
        raise UsageError(f"no such file, folder or glob match: {', '.join(missing)}")
    if empty:
        raise UsageError(
            f"no input files in {', '.join(empty)} (looked for {', '.join(INPUT_SUFFIXES)} files"
            f"{', not excluded by --exclude' if exclude else ''}): is the folder empty or not mounted?")
    local = [found[p] for p in sorted(found)]
    if cutoff is not None:
        local = [f for f in local if (objectstore.day_of(f.path.as_posix()) or -1) >= cutoff]
    objects = objectstore.discover(uris, cutoff) if uris else []
    return local + [f for f in objects if not _excluded(f.name, exclude)]


INPUT_SUFFIXES = (*NDJSON_SUFFIXES, ".gz", ".parquet")


def _dangling(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _excluded(name: str, exclude: tuple[str, ...]) -> bool:
    """Does a glob match the whole path (or object URI) or its last part?"""
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(base, g) for g in exclude)


def _decompressed_chunks(path: Path) -> Iterator[bytes | Exception]:
    """Yield the file's bytes, gunzipped when it starts with the gzip magic (whatever its name:
    archives are often served already decompressed under a .gz name). A stream fault is
    yielded as an exception after the bytes that decoded cleanly.

    The fast inflater decodes; on a fault, zlib decodes the file again and its bytes past
    those already yielded, and its fault, follow. ISA-L can hold back the last few decoded
    bytes (even a line's newline) when it meets the fault, so without zlib's replay a good
    line could become the fault's reject. Only damaged files pay the second decode."""
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head != GZIP_MAGIC:
            while chunk := fh.read(READ_CHUNK_BYTES):
                yield chunk
            return
        yielded = 0
        for piece in _gunzipped(fh, _inflate):
            if isinstance(piece, Exception) and _inflate is not zlib:
                break
            yielded += len(piece) if not isinstance(piece, Exception) else 0
            yield piece
        else:
            return
        fh.seek(0)
        skip = yielded  # both decoders yield a prefix of the same stream
        for piece in _gunzipped(fh, zlib):
            if not isinstance(piece, Exception) and skip:
                piece, skip = piece[skip:], max(0, skip - len(piece))
                if not piece:
                    continue
            yield piece


def _gunzipped(fh, inflate) -> Iterator[bytes | Exception]:
    """`_decompressed_chunks` with one inflater module (zlib's interface)."""
    inflater = inflate.decompressobj(zlib.MAX_WBITS | 16)
    mid_member = False
    produced = False
    # Small reads: a corrupt stream raises without returning what preceded the fault
    # in the same call, so little input per call keeps almost every good line.
    while chunk := fh.read(INFLATE_CHUNK_BYTES):
        try:
            while chunk:
                mid_member = True
                out = inflater.decompress(chunk)
                if out:
                    produced = True
                    yield out
                chunk = b""
                if inflater.eof:  # gzip allows several concatenated members
                    mid_member = False
                    chunk = inflater.unused_data
                    inflater = inflate.decompressobj(zlib.MAX_WBITS | 16)
                    if chunk and not chunk.startswith(GZIP_MAGIC[: len(chunk)]):
                        yield ValueError("corrupt gzip: bytes after the last member")
                        return
        except _INFLATE_ERRORS as exc:
            if inflate is zlib and not produced and fh.tell() <= INFLATE_CHUNK_BYTES:
                # The magic bytes were a coincidence (plain text starting with 0x1f 0x8b):
                # nothing decoded, so read the file as it is (zlib decides, as the replay).
                fh.seek(0)
                while plain := fh.read(READ_CHUNK_BYTES):
                    yield plain
                return
            yield ValueError(f"corrupt gzip stream: {exc}")
            return
    if mid_member:
        tail = inflater.flush()  # what decoded before the data ran out
        if tail:
            yield tail
        yield ValueError("truncated gzip stream: the file ends inside a compressed member")


def iter_ndjson_batches(
    path: Path, *, batch_bytes: int, max_line_bytes: int
) -> Iterator[RawBatch]:
    """Stream an NDJSON file as RawBatches of about `batch_bytes` of text each."""
    pending = b""
    parts: list[bytes] = []  # joined once per batch: repeated += would copy quadratically
    size = 0
    line_no = 0
    for piece in _decompressed_chunks(path):
        if not isinstance(piece, Exception):
            parts.append(piece)
            size += len(piece)
            if size < batch_bytes:
                continue
        # One copy per batch: the lines are a view of the joined bytes (the Arrow array keeps
        # them alive), only the unfinished last line is copied out.
        pending = b"".join([pending, *parts])
        parts, size = [], 0
        if isinstance(piece, Exception):
            cut = pending.rfind(b"\n")
            if cut >= 0:
                batch, line_no = _text_to_batch(memoryview(pending)[: cut + 1], line_no, max_line_bytes)
                yield batch
                pending = pending[cut + 1 :]
            # The unfinished line (possibly empty) is kept with the fault, so the fault itself
            # is on record and counted as the file's last line.
            yield RawBatch(
                lines=_empty_lines(),
                rejections=[Rejection(line_no + 1, pending, Reason.GZIP_FAULT, str(piece))],
                lines_read=1,
            )
            return
        cut = pending.rfind(b"\n")
        if cut < 0:
            continue  # one very long line: keep reading until it ends
        complete, pending = memoryview(pending)[: cut + 1], pending[cut + 1 :]
        batch, line_no = _text_to_batch(complete, line_no, max_line_bytes)
        yield batch
    pending = b"".join([pending, *parts])
    if pending:
        if not pending.endswith(b"\n"):
            pending += b"\n"
        batch, line_no = _text_to_batch(pending, line_no, max_line_bytes)
        yield batch


def _empty_lines() -> pa.Table:
    return pa.table({"line_no": pa.array([], pa.int64()), "raw": pa.array([], pa.string())})


def _text_to_batch(data: bytes | memoryview, line_no: int, max_line_bytes: int) -> tuple[RawBatch, int]:
    """Newline-terminated text into a RawBatch without a Python object per line: the Arrow
    string array points into `data` (each value keeps its trailing newline, which JSON
    parsing ignores), and per-line checks run only where something looks off."""
    if not data:
        return RawBatch(_empty_lines(), [], 0), line_no
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    starts = np.concatenate(([0], ends[:-1]))
    count = len(ends)
    numbers = np.arange(line_no + 1, line_no + 1 + count, dtype=np.int64)
    lengths = ends - starts - 1  # without the newline
    offsets = pa.py_buffer(np.concatenate(([0], ends)).astype(np.int32 if len(data) < 2**31 else np.int64))
    string_type = pa.string() if len(data) < 2**31 else pa.large_string()
    text = pa.Array.from_buffers(string_type, count, [None, offsets, pa.py_buffer(data)])
    suspicious = np.flatnonzero((lengths > max_line_bytes) | (lengths < 3))
    rejections: list[Rejection] = []
    bad = set()
    for i in suspicious.tolist():
        raw = bytes(data[starts[i]: ends[i] - 1])
        if not raw.strip():
            rejections.append(Rejection(int(numbers[i]), raw, Reason.EMPTY_LINE, "the line is blank"))
            bad.add(i)
        elif len(raw) > max_line_bytes and not (len(raw) <= MAX_ENVELOPE_BYTES and b'"batch"' in raw):
            rejections.append(Rejection(
                int(numbers[i]), raw, Reason.OVERSIZED,
                f"{len(raw)} bytes, over the {max_line_bytes}-byte limit per event"))
            bad.add(i)
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        for i in range(count):
            if i in bad:
                continue
            raw = bytes(data[starts[i]: ends[i] - 1])
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                rejections.append(Rejection(int(numbers[i]), raw, Reason.INVALID_UTF8, str(exc)))
                bad.add(i)
    table = pa.table({"line_no": pa.array(numbers), "raw": text})
    if bad:
        mask = np.ones(count, dtype=bool)
        mask[list(bad)] = False
        table = table.filter(pa.array(mask))
        rejections.sort(key=lambda r: r.line)
    return RawBatch(table, rejections, count), line_no + count


def iter_parquet_batches(path: Path, *, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Parquet rows are messages already; they are turned into JSON text by the normaliser."""
    parquet = pq.ParquetFile(path)
    yield from parquet.iter_batches(batch_size=batch_rows)
