"""Shared helpers: real DuckDB files in tmp_path, real loads, no mocks."""

from __future__ import annotations

import functools
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from loader import LoadConfig, load

REPO = Path(__file__).resolve().parent.parent
PATHOLOGIES = REPO / "tests" / "fixtures" / "pathologies"
SAMPLE = REPO / "sample_data"


def event(i: int | str, **fields) -> dict:
    """A valid Segment track message; keyword arguments override its fields."""
    message = {
        "messageId": f"m{i}",
        "type": "track",
        "event": "Signed Up",
        "userId": f"u{i}",
        "receivedAt": "2024-03-01T10:00:00.000Z",
        "timestamp": "2024-03-01T10:00:00.000Z",
        "properties": {"plan": "pro"},
    }
    message.update(fields)
    return message


def write_ndjson(path: Path, messages: list, *, compress: bool | None = None) -> Path:
    """Write messages (dicts, or raw str/bytes lines) one per line; gzip when the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for m in messages:
        if isinstance(m, bytes):
            lines.append(m)
        elif isinstance(m, str):
            lines.append(m.encode())
        else:
            lines.append(json.dumps(m).encode())
    data = b"".join(line + b"\n" for line in lines)
    if compress if compress is not None else path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def run_load(paths, db: Path, **options):
    return load([str(p) for p in paths], LoadConfig(db_path=str(db), **options))


def query(db: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loader", *args],
        capture_output=True,
        text=True,
        check=False,  # callers assert on the exit code
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def table_snapshot(db: Path, schema: str = "segment") -> dict[str, list[tuple]]:
    """Every table's rows without the per-run columns (load time and load id), sorted."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [schema]
        ).fetchall()]
        snap = {}
        for t in tables:
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
                "AND table_name = ? ORDER BY column_name", [schema, t]).fetchall()
                if r[0] not in ("uuid_ts", "load_id")]
            sel = ", ".join(f'"{c}"::VARCHAR' for c in cols)
            rows = con.execute(f'SELECT {sel} FROM "{schema}"."{t}"').fetchall()
            snap[t] = (tuple(cols), sorted(rows, key=repr))
        return snap
    finally:
        con.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


# Object storage: a real S3 HTTP API (moto's server) on 127.0.0.1, for the whole session.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-do-not-leak",
    "AWS_DEFAULT_REGION": "us-east-1",
    # never a developer's own profiles or an instance role
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def s3():
    """The server (see tests/s3server.py); the loader in this process and in `cli()` children
    reach it through AWS_ENDPOINT_URL."""
    from s3server import S3Server

    from loader import objectstore

    server = S3Server()
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=server.url)
    objectstore.store_for.cache_clear()  # clients read the environment when made
    yield server
    server.stop()
    objectstore.store_for.cache_clear()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@functools.cache
def s3_client():
    import boto3

    return boto3.session.Session().client("s3")


def upload_tree(root: Path, bucket: str, prefix: str = "") -> None:
    """Every file under root as an object `prefix + its path relative to root`."""
    client = s3_client()
    client.create_bucket(Bucket=bucket)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, prefix + p.relative_to(root).as_posix())


@pytest.fixture(scope="session")
def sample_bucket(s3) -> str:
    """The bundled archive in a bucket, as Segment lays it out: s3://sample/segment-logs/."""
    upload_tree(SAMPLE, "sample")
    return "s3://sample/segment-logs/"
