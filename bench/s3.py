"""The bench archive loaded from a bucket vs from local disk, in the same run.

The bucket is moto's S3 server on 127.0.0.1 (a real S3 HTTP API, in this process); the loader
child reaches it through AWS_ENDPOINT_URL, lists the objects, downloads them a few ahead of
its readers and loads them. Each repeat loads the same files from a local tree and from the
bucket into fresh databases (alternating), then re-runs the bucket load (a no-op: it lists
and downloads nothing). The target is bucket wall / local wall <= 1.2.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from common import fresh_db, link_tree, median

TARGET_RATIO = 1.2
BUCKET = "bench"
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
       "AWS_EC2_METADATA_DISABLED": "true"}


def compare(bench, files: list[str], expect: dict) -> dict:
    """Run the local and bucket loads `bench.a.repeat` times through `bench.load` (so they are
    recorded with the other steps); return the medians and their ratio."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request in the bench log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")  # the loader children inherit it
    try:
        client = boto3.session.Session().client("s3")
        client.create_bucket(Bucket=BUCKET)
        for rel in files:
            client.upload_file(str(Path(bench.data) / rel), BUCKET, rel)
        tree = bench.work / "s3-local-tree"
        link_tree(bench.data, files, tree)
        uri = f"s3://{BUCKET}/segment-logs/"
        for _ in range(bench.a.repeat):
            bench.load("s3_local_disk", [tree], fresh_db(bench.work / "s3-local.duckdb"), expect)
            db = fresh_db(bench.work / "s3-bucket.duckdb")
            bench.load("s3_bucket", [uri], db, expect)
            bench.load("s3_bucket_noop", [uri], db, {"files_loaded": 0, "files_skipped": len(files)})
        for name in ("s3-local.duckdb", "s3-bucket.duckdb"):
            fresh_db(bench.work / name)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def wall(step: str) -> float | None:
        return median([m["wall_s"] for m in bench.runs.get(step, []) if m["rc"] == 0])

    def rss(step: str) -> float | None:
        return median([m["tree_peak_rss_mb"] for m in bench.runs.get(step, []) if m["rc"] == 0])

    local, bucket, noop = wall("s3_local_disk"), wall("s3_bucket"), wall("s3_bucket_noop")
    return {"local_s": local, "bucket_s": bucket, "noop_s": noop, "files": len(files),
            "local_rss_mb": rss("s3_local_disk"), "bucket_rss_mb": rss("s3_bucket"),
            "ratio": bucket / local if local and bucket else None, "target": TARGET_RATIO}


def row(result: dict | None) -> str:
    """One line for the targets table."""
    name = f"bucket (S3 on 127.0.0.1) vs local disk <= {TARGET_RATIO}x"
    if not result or result["ratio"] is None:
        return f"  {'n/a':<5} {name:<48} not measured"
    ok = "PASS" if result["ratio"] <= TARGET_RATIO else "MISS"
    return (f"  {ok:<5} {name:<48} {result['ratio']:.2f}x ({result['bucket_s']:.2f} s vs "
            f"{result['local_s']:.2f} s, {result['files']} objects; peak RSS "
            f"{result['bucket_rss_mb']:,.0f} vs {result['local_rss_mb']:,.0f} MB; no-op re-run "
            f"{result['noop_s']:.2f} s)")
