"""Loading straight from object storage: s3:// against a real S3 HTTP API on 127.0.0.1
(moto's server behind a counting proxy, tests/s3server.py), gs:// against a GCS emulator."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import time
from pathlib import Path

import duckdb
import pytest
from conftest import (
    S3_ENV,
    SAMPLE,
    cli,
    event,
    query,
    run_load,
    s3_client,
    table_snapshot,
)

from loader import objectstore
from loader.errors import UsageError
from loader.read import discover_files

DAY1, DAY2, DAY3 = 1714953600000, 1715040000000, 1715126400000  # the sample archive's days
SAMPLE_FILES = 18  # files in the sample archive (sample_data/README.md)
SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]


def ndjson_gz(messages: list[dict]) -> bytes:
    return gzip.compress(b"".join(json.dumps(m).encode() + b"\n" for m in messages), mtime=0)


def put(bucket: str, key: str, data: bytes) -> None:
    s3_client().put_object(Bucket=bucket, Key=key, Body=data)


@pytest.fixture
def bucket(s3, request) -> str:
    """An empty bucket of the test's own; the proxy's counters start at zero."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:50].rstrip("-")
    s3_client().create_bucket(Bucket=name)
    s3.reset()
    return name


def manifest_rows(db: Path) -> list[tuple]:
    return query(db, "SELECT path, etag, size_bytes, last_modified IS NOT NULL, content_hash, status, "
                     "lines, rows_loaded, duplicates, rejects FROM _loader.files ORDER BY file_id")


def test_bucket_load_equals_local_load_table_by_table(s3, sample_bucket, tmp_path):
    from_bucket, from_disk = tmp_path / "bucket.duckdb", tmp_path / "disk.duckdb"
    run_load([sample_bucket], from_bucket)
    run_load([SAMPLE / "segment-logs"], from_disk)
    assert table_snapshot(from_bucket) == table_snapshot(from_disk)
    for schema_table in ["rejects", "discards", "name_map", "schema_changes"]:
        assert query(from_bucket, f"SELECT count(*) FROM _loader.{schema_table}") == \
               query(from_disk, f"SELECT count(*) FROM _loader.{schema_table}")
    # the manifest names objects by URI, with their ETag, and holds the same content hashes
    bucket_rows = query(from_bucket, "SELECT path, etag, content_hash, size_bytes, lines, rows_loaded, "
                                     "duplicates, rejects FROM _loader.files ORDER BY path")
    disk_rows = query(from_disk, "SELECT path, etag, content_hash, size_bytes, lines, rows_loaded, "
                                 "duplicates, rejects FROM _loader.files ORDER BY path")
    assert len(bucket_rows) == len(disk_rows) == SAMPLE_FILES
    for b, d in zip(bucket_rows, disk_rows):
        assert b[0] == "s3://sample/segment-logs/" + d[0].split("segment-logs/")[1]
        assert b[1].startswith('"') and d[1] is None  # an ETag for objects only
        assert b[2:] == d[2:]
    assert query(from_bucket, "SELECT DISTINCT path LIKE 's3://sample/%' FROM _loader.rejects") == [(True,)]


def test_rerun_downloads_nothing_then_new_and_changed_objects_load(s3, bucket, db):
    key = "segment-logs/src/{day}/{name}.gz"
    put(bucket, key.format(day=DAY1, name="a"), ndjson_gz([event(1), event(2)]))
    put(bucket, key.format(day=DAY2, name="b"), ndjson_gz([event(3)]))
    uri = f"s3://{bucket}/segment-logs/"
    first = run_load([uri], db)
    assert first.summary()["files_loaded"] == 2 and first.summary()["rows_loaded"] == 3
    assert sorted(s3.object_gets()) == [f"/{bucket}/" + key.format(day=DAY1, name="a"),
                                        f"/{bucket}/" + key.format(day=DAY2, name="b")]

    s3.reset()
    again = run_load([uri], db)
    assert again.summary()["files_skipped"] == 2 and again.summary()["files_loaded"] == 0
    assert s3.object_gets() == []  # listed and compared with the manifest: no download
    assert len(s3.listings()) == 1

    # a new object: only it is downloaded
    put(bucket, key.format(day=DAY3, name="c"), ndjson_gz([event(4)]))
    s3.reset()
    new = run_load([uri], db)
    assert new.summary()["files_loaded"] == 1 and new.summary()["rows_loaded"] == 1
    assert s3.object_gets() == [f"/{bucket}/" + key.format(day=DAY3, name="c")]

    # a changed object (new ETag) loads again; its rows still dedup by messageId
    put(bucket, key.format(day=DAY1, name="a"), ndjson_gz([event(1), event(2), event(5)]))
    s3.reset()
    changed = run_load([uri], db)
    s = changed.summary()
    assert (s["files_loaded"], s["files_skipped"], s["rows_loaded"], s["duplicates"]) == (1, 2, 1, 2)
    assert s3.object_gets() == [f"/{bucket}/" + key.format(day=DAY1, name="a")]
    rows = [r for r in manifest_rows(db) if r[0].endswith("/a.gz")]
    assert len(rows) == 2 and rows[0][1] != rows[1][1]  # two versions, two ETags
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM segment.tracks") == [(5, 5)]


def test_a_500_is_retried_with_backoff(s3, bucket, db):
    put(bucket, f"segment-logs/src/{DAY1}/a.gz", ndjson_gz([event(1), event(2)]))
    s3.fail_once[f"/{bucket}/segment-logs/src/{DAY1}/a.gz"] = 2  # two 500s, then the object
    result = run_load([f"s3://{bucket}/segment-logs/"], db)
    assert result.summary()["files_loaded"] == 1 and result.summary()["rows_loaded"] == 2
    assert len(s3.object_gets()) == 3


def test_an_object_deleted_after_listing_fails_that_file_only(s3, bucket, db):
    put(bucket, f"segment-logs/src/{DAY1}/a.gz", ndjson_gz([event(1)]))
    put(bucket, f"segment-logs/src/{DAY1}/b.gz", ndjson_gz([event(2)]))
    s3.delete_before_get.add(f"/{bucket}/segment-logs/src/{DAY1}/a.gz")
    proc = cli("load", f"s3://{bucket}/segment-logs/", "--db", str(db))
    assert proc.returncode == 1, proc.stderr
    assert f"s3://{bucket}/segment-logs/src/{DAY1}/a.gz was deleted after it was listed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert query(db, "SELECT path, status FROM _loader.files ORDER BY path") == [
        (f"s3://{bucket}/segment-logs/src/{DAY1}/a.gz", "failed"),
        (f"s3://{bucket}/segment-logs/src/{DAY1}/b.gz", "loaded")]
    assert query(db, "SELECT id FROM segment.tracks") == [("m2",)]


def test_an_object_replaced_after_listing_is_not_loaded_in_its_new_version(s3, bucket, db):
    put(bucket, f"segment-logs/src/{DAY1}/a.gz", ndjson_gz([event(1)]))
    files = discover_files([f"s3://{bucket}/segment-logs/"])
    put(bucket, f"segment-logs/src/{DAY1}/a.gz", ndjson_gz([event(9)]))
    with objectstore.Spool(files) as spool, \
            pytest.raises(objectstore.FileMissingError, match="was replaced after it was listed"):
        list(spool.reading(files[0], iter([None])))


def test_since_lists_only_recent_day_folders(s3, bucket, db):
    for source in ("web", "ios"):
        for day in (DAY1, DAY2, DAY3):
            put(bucket, f"segment-logs/{source}/{day}/f.gz", ndjson_gz([event(f"{source}{day}")]))
    put(bucket, "README.txt", b"not an archive")
    s3.reset()
    result = run_load([f"s3://{bucket}/"], db, since="2024-05-07")  # DAY2 = 2024-05-07 00:00 UTC
    assert sorted(f.path for f in result.files) == sorted(
        f"s3://{bucket}/segment-logs/{s}/{d}/f.gz" for s in ("web", "ios") for d in (DAY2, DAY3))
    # older day folders were never listed: each source is listed from the cutoff on
    assert s3.listed_keys and all(objectstore.day_of(k) >= DAY2 for k in s3.listed_keys)
    assert {q["start-after"][0] for q in s3.listings() if "start-after" in q} == {
        f"segment-logs/{s}/{DAY2 - 1}" for s in ("web", "ios")}
    # a relative window: the day holding now - 1 day onwards
    now = dt.datetime(2024, 5, 8, 15, 0, tzinfo=dt.UTC)
    assert objectstore.since_cutoff("1d", now) == DAY2
    assert objectstore.since_cutoff("36h", now) == DAY2
    assert objectstore.since_cutoff("2024-05-06") == DAY1
    with pytest.raises(UsageError, match="--since"):
        objectstore.since_cutoff("yesterday")


def test_since_filters_local_day_folders_too(db):
    result = run_load([SAMPLE / "segment-logs"], db, since="2024-05-08")
    assert result.files and all(f"/{DAY3}/" in f.path for f in result.files)


def test_globs_prefixes_and_single_objects(s3, bucket):
    for name in ("a.gz", "b.json", "c.parquet", "notes.md"):
        put(bucket, f"segment-logs/src/{DAY1}/{name}", b"{}\n")
    names = lambda specs: [f.name for f in discover_files(specs)]
    base = f"s3://{bucket}/segment-logs/src/{DAY1}"
    assert names([base]) == [f"{base}/a.gz", f"{base}/b.json", f"{base}/c.parquet"]  # notes.md: not an archive
    assert names([f"{base}/*.gz"]) == [f"{base}/a.gz"]
    assert names([f"{base}/notes.md"]) == [f"{base}/notes.md"]  # named explicitly: read as NDJSON
    files = discover_files([f"{base}/c.parquet"])
    assert files[0].format == "parquet" and files[0].source_id == "src"
    with pytest.raises(UsageError, match="no object matches"):
        discover_files([f"{base}/nothing-here/"])


def test_spool_keeps_few_files_and_removes_them(s3, bucket, tmp_path, monkeypatch):
    for i in range(6):
        put(bucket, f"segment-logs/src/{DAY1}/{i}.gz", ndjson_gz([event(i)]))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    stale = tmp_path / f"{objectstore.SPOOL_PREFIX}4194304-0badc0de"  # above Linux's pid_max: no such process
    stale.mkdir()
    (stale / "000001-left-by-a-killed-run.gz").write_bytes(b"x")
    files = discover_files([f"s3://{bucket}/segment-logs/"])
    assert files[0].path.parent.parent == tmp_path
    most = 0
    with objectstore.Spool(files, workers=2, ahead=2) as spool:
        for f in files:
            for _ in spool.reading(f, (f.path.read_bytes() for _ in range(1))):
                time.sleep(0.05)  # the readers are slower than the downloads
                most = max(most, len(list(spool.root.iterdir())))
            assert not f.path.exists()  # deleted once read
        assert spool.digest(files[0])  # hashed while downloading
    assert 1 <= most <= 2
    assert not spool.root.exists()
    assert not stale.exists()  # a killed run's spool is removed by the next run


def _text_of_every_loader_table(db: Path) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = '_loader'").fetchall()]
        return "\n".join(repr(con.execute(f'SELECT * FROM _loader."{t}"').fetchall()) for t in tables)
    finally:
        con.close()


@pytest.mark.parametrize("env, uri, message", [
    ({}, "s3://no-such-bucket/segment-logs/", "the bucket does not exist"),
    ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "s3://sample/segment-logs/",
     "no AWS credentials found"),
    ({"AWS_ACCESS_KEY_ID": "AKIADENIED"}, "s3://sample/segment-logs/", "access denied"),
    ({"AWS_ACCESS_KEY_ID": "AKIAWRONG"}, "s3://sample/segment-logs/", "the access key id is not known"),
])
def test_listing_errors_are_usage_errors_without_secrets(s3, sample_bucket, monkeypatch, env, uri, message):
    s3.reject_keys["AKIADENIED"] = (403, "AccessDenied", "Access Denied")
    s3.reject_keys["AKIAWRONG"] = (403, "InvalidAccessKeyId",
                                   "The AWS Access Key Id you provided does not exist in our records.")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    objectstore.store_for.cache_clear()  # a client made with these credentials
    try:
        with pytest.raises(UsageError, match=message) as raised:
            discover_files([uri])
    finally:
        objectstore.store_for.cache_clear()
        s3.reset()
    assert raised.value.exit_code == 2 and SECRET not in str(raised.value)


def test_cli_exit_2_and_no_secret_in_output_logs_or_manifest(s3, sample_bucket, tmp_path):
    db = tmp_path / "w.duckdb"
    proc = cli("load", "s3://no-such-bucket/segment-logs/", "--db", str(db), "--json")
    assert proc.returncode == 2 and "error: s3://no-such-bucket/segment-logs/: the bucket does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("load", sample_bucket, "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files_loaded"] == SAMPLE_FILES
    status = cli("status", "--db", str(db), "--json")
    assert SECRET not in proc.stdout + proc.stderr + status.stdout
    assert SECRET not in _text_of_every_loader_table(db)
    assert S3_ENV["AWS_ACCESS_KEY_ID"] not in _text_of_every_loader_table(db)


def test_dry_run_reads_objects_and_writes_nothing(s3, sample_bucket, tmp_path):
    db = tmp_path / "w.duckdb"
    s3.reset()
    proc = cli("load", sample_bucket, "--db", str(db), "--dry-run")
    assert proc.returncode == 0 and f"{SAMPLE_FILES} file(s) would be loaded" in proc.stdout
    assert len(s3.object_gets()) == SAMPLE_FILES and not db.exists()


# gs:// against gcp-storage-emulator (PyPI), an in-process GCS JSON API on 127.0.0.1. It ignores
# startOffset and generation preconditions, so --since and replaced-object checks are only
# tested on S3 above; listing, identity (generation), downloads and skips are tested here.


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    host = f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    objectstore.store_for.cache_clear()
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials())
    bucket = client.create_bucket("gsample")
    for p in sorted((SAMPLE / "segment-logs").rglob("*")):
        if p.is_file():
            bucket.blob(p.relative_to(SAMPLE).as_posix()).upload_from_filename(str(p))
    yield host
    server.stop()
    objectstore.store_for.cache_clear()
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


def test_gcs_load_equals_local_and_rerun_skips_by_generation(gcs, tmp_path):
    from_gcs, from_disk = tmp_path / "gcs.duckdb", tmp_path / "disk.duckdb"
    first = run_load(["gs://gsample/segment-logs/"], from_gcs)
    assert first.summary()["files_loaded"] == SAMPLE_FILES
    run_load([SAMPLE / "segment-logs"], from_disk)
    assert table_snapshot(from_gcs) == table_snapshot(from_disk)
    generations = query(from_gcs, "SELECT etag FROM _loader.files")
    assert len(generations) == SAMPLE_FILES and all(g.isdigit() for (g,) in generations)
    again = run_load(["gs://gsample/segment-logs/"], from_gcs)
    assert again.summary()["files_skipped"] == SAMPLE_FILES and again.summary()["files_loaded"] == 0
    # --since from the bucket root: only the last day's objects (the emulator ignores
    # startOffset, so this checks the result, not the cost of the listing)
    recent = run_load(["gs://gsample/"], tmp_path / "recent.duckdb", since="2024-05-08")
    assert recent.files and all(f"/{DAY3}/" in f.path for f in recent.files)
    assert recent.summary()["files_loaded"] == len(recent.files)


def test_gcs_without_credentials_is_a_usage_error(tmp_path):
    proc = cli("load", "gs://some-bucket/segment-logs/", "--db", str(tmp_path / "w.duckdb"),
               env={"STORAGE_EMULATOR_HOST": "", "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json")})
    assert proc.returncode == 2
    assert "no Google credentials found" in proc.stderr and "Traceback" not in proc.stderr

