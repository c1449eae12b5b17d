
import pytest
from conftest import PATHOLOGIES, event, write_ndjson

from loader.errors import UsageError
from loader.read import discover_files, iter_ndjson_batches, source_id_from_path


def read_all(path, max_line_bytes=32768, batch_bytes=1 << 20):
    lines, rejections, total = [], [], 0
    for batch in iter_ndjson_batches(path, batch_bytes=batch_bytes, max_line_bytes=max_line_bytes):
        lines += batch.lines.column("line_no").to_pylist()
        rejections += batch.rejections
        total += batch.lines_read
    return lines, rejections, total


@pytest.mark.parametrize(
    "name", ["not_gzip_despite_name.ndjson.gz", "gzip_without_gz_name.ndjson", "concatenated_members.ndjson.gz"]
)
def test_gzip_is_detected_by_magic_bytes_not_name(name):
    lines, rejections, total = read_all(PATHOLOGIES / name)
    assert lines == [1, 2, 3, 4, 5] and rejections == [] and total == 5


def test_truncated_gzip_keeps_lines_before_the_fault():
    lines, rejections, total = read_all(PATHOLOGIES / "truncated.ndjson.gz")
    assert len(lines) > 50  # most of the file decoded
    assert lines == list(range(1, len(lines) + 1))
    assert [r.reason for r in rejections] == ["gzip_fault"]
    assert "truncated" in rejections[0].detail
    assert rejections[0].line == len(lines) + 1 and total == len(lines) + 1


def test_corrupt_gzip_keeps_lines_before_the_fault():
    lines, rejections, total = read_all(PATHOLOGIES / "corrupt.ndjson.gz")
    assert len(lines) > 1000
    assert rejections[-1].reason == "gzip_fault" and "corrupt" in rejections[-1].detail
    assert total == len(lines) + len(rejections)


def test_batches_split_on_line_boundaries(tmp_path):
    path = write_ndjson(tmp_path / "a.ndjson", [event(i) for i in range(1, 501)])
    lines, rejections, total = read_all(path, batch_bytes=4096)
    assert lines == list(range(1, 501)) and total == 500 and not rejections


def test_crlf_and_missing_final_newline():
    lines, rejections, _total = read_all(PATHOLOGIES / "crlf_no_trailing_newline.ndjson")
    assert lines == [1, 2, 3] and not rejections


def test_line_level_rejections_keep_raw_bytes():
    _, rejections, _ = read_all(PATHOLOGIES / "invalid_utf8.ndjson")
    assert [(r.line, r.reason) for r in rejections] == [(2, "invalid_utf8")]
    assert b"\xff\xfe" in rejections[0].raw
    _, rejections, _ = read_all(PATHOLOGIES / "oversized_line.ndjson")
    assert [(r.line, r.reason) for r in rejections] == [(2, "oversized")]
    assert len(rejections[0].raw) > 40000


def test_discover_files_folders_globs_and_layout(tmp_path):
    root = tmp_path / "segment-logs" / "srcA" / "1709251200000"
    a = write_ndjson(root / "b.gz", [event(1)])
    b = write_ndjson(root / "a.gz", [event(2)])
    (root / "README.txt").write_text("not data")
    found = discover_files([str(tmp_path)])
    assert [f.path.name for f in found] == ["a.gz", "b.gz"]  # sorted, README ignored
    assert {f.source_id for f in found} == {"srcA"}
    assert [f.path for f in discover_files([str(tmp_path / "**" / "*.gz")])] == sorted([a.resolve(), b.resolve()])
    with pytest.raises(UsageError, match="no such file"):
        discover_files([str(tmp_path / "missing")])


def test_source_id_only_from_the_segment_logs_layout(tmp_path):
    assert source_id_from_path(tmp_path / "segment-logs/abc/1432684800000/x.gz") == "abc"
    assert source_id_from_path(tmp_path / "logs/abc/1432684800000/x.gz") is None


def test_text_that_starts_with_the_gzip_magic_is_read_as_text(tmp_path):
    """Found by the Hypothesis property test: 0x1f 0x8b then newlines is not a gzip stream."""
    path = tmp_path / "odd.ndjson"
    path.write_bytes(b"\x1f\x8b\n\n" + b'{"a": 1}\n')
    lines, rejections, total = read_all(path)
    assert total == 3
    assert [(r.line, r.reason) for r in rejections] == [(1, "invalid_utf8"), (2, "empty_line")]
    assert lines == [3]


def read_everything(path) -> tuple[list, list]:
    lines, rejections = [], []
    for batch in iter_ndjson_batches(path, batch_bytes=1 << 20, max_line_bytes=32768):
        lines += zip(batch.lines.column("line_no").to_pylist(), batch.lines.column("raw").to_pylist())
        rejections += [(r.line, r.reason, r.raw) for r in batch.rejections]
    return lines, rejections


def damaged_gzips(tmp_path) -> list:
    """The pathology archives plus truncated, bit-flipped and trailing-garbage copies of a
    generated one, each damaged at a different place."""
    import gzip
    import random

    data = gzip.compress(b"".join(b'{"messageId":"%d","type":"track"}\n' % i for i in range(20_000)))
    rnd, paths = random.Random(7), [PATHOLOGIES / n for n in (
        "truncated.ndjson.gz", "corrupt.ndjson.gz", "concatenated_members.ndjson.gz")]
    for k in range(12):
        damaged = bytearray(data)
        if k % 3 == 0:
            damaged = damaged[: rnd.randrange(20, len(damaged))]
        elif k % 3 == 1:
            damaged[rnd.randrange(10, len(damaged))] ^= 0xFF
        else:
            damaged += damaged[: rnd.randrange(1, 200)]
        paths.append(tmp_path / f"damaged{k}.gz")
        paths[-1].write_bytes(bytes(damaged))
    return paths


def test_isal_inflate_reads_the_lines_zlib_reads(tmp_path, monkeypatch):
    """ISA-L inflates (speed), zlib is the reference: on damaged streams the lines and the
    rejects (line, reason, bytes) are exactly zlib's, because zlib replays a faulted file.
    Huffman-only and RLE streams are included, cut where ISA-L alone holds back a newline."""
    import zlib

    from isal import isal_zlib

    from loader import read

    assert read._inflate is not zlib  # isal is installed: the fast path is what runs
    text = b"".join(b'{"messageId":"m%d","type":"track","event":"E","userId":"u%d"}\n' % (i, i % 7)
                    for i in range(400))

    def raw_inflate(module, data: bytes) -> bytes:
        inflater = module.decompressobj(31)
        return inflater.decompress(data) + inflater.flush()

    paths = damaged_gzips(tmp_path)
    for strategy in (zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE):
        packer = zlib.compressobj(6, zlib.DEFLATED, 31, 8, strategy)
        packed = packer.compress(text) + packer.flush()
        # the cuts where ISA-L alone would lose a complete line to the fault
        cuts = [n for n in range(len(packed) // 2, len(packed))
                if raw_inflate(zlib, packed[:n]).count(b"\n") != raw_inflate(isal_zlib, packed[:n]).count(b"\n")]
        assert cuts, strategy
        for n in cuts[:3]:
            paths.append(tmp_path / f"cut{strategy}-{n}.gz")
            paths[-1].write_bytes(packed[:n])
    for path in paths:
        lines, rejections = read_everything(path)
        monkeypatch.setattr(read, "_inflate", zlib)
        zlib_lines, zlib_rejections = read_everything(path)
        monkeypatch.undo()
        assert lines == zlib_lines, path
        assert rejections == zlib_rejections, path


def test_envelopes_are_found_in_every_chunk_and_only_in_the_lines():
    """`expand_batches` first scans the raw bytes for `"batch"`: an envelope in a later chunk
    is still expanded; bytes of the buffer outside a sliced array's lines are no envelope."""
    import json

    import pyarrow as pa

    from loader.http_batch import expand_batches

    plain = json.dumps(event(1)) + "\n"
    envelope = json.dumps({"batch": [event(2), event(3)]}) + "\n"
    table = pa.Table.from_batches([
        pa.record_batch({"line_no": pa.array([1], pa.int64()), "raw": pa.array([plain])}),
        pa.record_batch({"line_no": pa.array([2], pa.int64()), "raw": pa.array([envelope])}),
    ])
    expanded, rejections, added = expand_batches(table, max_event_bytes=32768)
    assert added == 1 and not rejections
    assert [json.loads(r)["messageId"] for r in expanded.column("raw").to_pylist()] == [
        event(1)["messageId"], event(2)["messageId"], event(3)["messageId"]]
    sliced = pa.table({"line_no": pa.array([1, 2], pa.int64()), "raw": pa.array([plain, envelope])}).slice(0, 1)
    assert expand_batches(sliced, max_event_bytes=32768) == (sliced, [], 0)
