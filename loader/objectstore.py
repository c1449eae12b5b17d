"""Object storage: list s3:// and gs:// archives and spool their objects to local files.

Listing gives each object its identity (URI + ETag for S3, URI + generation for GCS), size
and last-modified time without reading a byte, so a re-run compares against the manifest
and downloads nothing it has loaded before. The objects to load are downloaded a few files
ahead of the readers by a small pool of threads (bounded parallelism and bounded disk: at
most `SPOOL_FILES_AHEAD` objects sit in the spool) and each local copy is deleted as soon
as its file has been read. Every download asks for the listed version (S3 `If-Match` on the
ETag, a GCS generation), so an object replaced or deleted after listing fails that one file
with a clear reason instead of loading bytes the manifest does not describe.

I/O goes through the clients the clouds ship for Python: boto3 (S3 and S3-compatible stores:
the AWS credential chain, `AWS_ENDPOINT_URL`, retries with backoff on throttling and 5xx)
and google-cloud-storage (application default credentials, the same retries). pyarrow's
built-in filesystems were the no-dependency option, but their listing has no ETag or
generation (the manifest's identity) and pyarrow's S3 ignores `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Protocol, Self

from loader.errors import UsageError

SCHEMES = ("s3://", "gs://")
DOWNLOAD_WORKERS = 4  # objects downloaded in parallel
SPOOL_FILES_AHEAD = 8  # downloaded objects not yet read: bounds the spool's disk use
DOWNLOAD_CHUNK = 1 << 20
DOWNLOAD_ATTEMPTS = 4  # of a whole download, for faults in the body the SDK cannot retry
# Day folders of Segment's layout: <prefix>segment-logs/<source-id>/<received-day-ms>/...
DAY_RE = re.compile(r"(?:^|/)segment-logs/[^/]+/(\d{10,})/")
SINCE_RE = re.compile(r"^(\d+)([dh])$")
SPOOL_PREFIX = "segment-loader-spool-"  # + pid + random: one folder per run in $TMPDIR


@dataclass(frozen=True)
class ObjectRef:
    """One listed object: the manifest's identity for it, nothing secret."""

    uri: str  # s3://bucket/key
    bucket: str
    key: str
    version: str  # S3 ETag (as listed, quotes included) or GCS generation
    size: int
    last_modified: dt.datetime


class FileMissingError(OSError):
    """The object is gone or was replaced after it was listed: this file fails, the run goes on."""


class Store(Protocol):
    def list(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[ObjectRef]: ...

    def subfolders(self, bucket: str, prefix: str) -> list[str]: ...

    def download(self, ref: ObjectRef, write: Callable[[bytes], object]) -> None: ...


def is_object_uri(spec: str) -> bool:
    return spec.startswith(SCHEMES)


def since_cutoff(since: str | None, now: dt.datetime | None = None) -> int | None:
    """`--since` as the first received-day (ms since the epoch, UTC midnight) to load.

    `2d` / `36h`: the day folders received within that window (the day holding now - 2 days
    onwards); `2024-01-31`: that day onwards (backfills)."""
    if not since:
        return None
    now = now or dt.datetime.now(dt.UTC)
    match = SINCE_RE.match(since.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        start = now - (dt.timedelta(days=amount) if unit == "d" else dt.timedelta(hours=amount))
    else:
        try:
            start = dt.datetime.strptime(since.strip(), "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            raise UsageError(
                f"--since {since!r}: expected a window such as 2d or 36h, or a day YYYY-MM-DD"
            ) from None
    day = start.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(day.timestamp() * 1000)


def day_of(key: str) -> int | None:
    """The received-day (ms) of a key or path in Segment's layout, else None."""
    match = DAY_RE.search(key)
    return int(match.group(1)) if match else None


def split_uri(uri: str) -> tuple[str, str, str]:
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UsageError(f"{uri}: no bucket name")
    return scheme, bucket, key


def discover(specs: list[str], cutoff: int | None) -> list:
    """Object URIs (objects, prefixes, globs) as InputFiles, sorted by URI.

    An InputFile's `path` is where its local copy will be spooled; `origin` is the listed
    object. With a cutoff only day folders from that day on are listed (see `_list_since`)."""
    from loader.read import InputFile, _format_of, source_id_from_path

    spool = Path(tempfile.gettempdir()) / f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    found: dict[str, tuple[ObjectRef, bool]] = {}
    missing = []
    for spec in specs:
        refs = list(_list_spec(spec, cutoff))
        if not refs:
            missing.append(spec)
        for ref, explicit in refs:
            found[ref.uri] = (ref, explicit)
    if missing:
        raise UsageError(f"no object matches: {', '.join(missing)}")
    files = []
    for i, uri in enumerate(sorted(found)):
        ref, explicit = found[uri]
        fmt = _format_of(PurePosixPath(ref.key))
        if fmt is None and not explicit:
            continue  # unrelated objects under a prefix (README, _SUCCESS...), as for folders
        name = PurePosixPath(ref.key).name
        files.append(InputFile(spool / f"{i:06d}-{name}", fmt or "ndjson",
                               source_id_from_path(PurePosixPath(ref.key)), origin=ref))
    return files


def _list_spec(spec: str, cutoff: int | None) -> Iterator[tuple[ObjectRef, bool]]:
    """(object, named explicitly) for one URI: an object, a prefix (folder) or a glob."""
    scheme, bucket, key = split_uri(spec)
    store = store_for(scheme)
    if glob.has_magic(key):
        literal = re.split(r"[*?\[]", key, maxsplit=1)[0]
        for ref in _list_since(store, bucket, literal, cutoff):
            if fnmatch.fnmatchcase(ref.key, key):
                yield ref, False
        return
    folder = key if not key or key.endswith("/") else key + "/"
    for ref in _list_since(store, bucket, key, cutoff):
        if ref.key == key:
            yield ref, True  # the URI names this object
        elif ref.key.startswith(folder):
            yield ref, False


def _list_since(store: Store, bucket: str, prefix: str, cutoff: int | None) -> Iterator[ObjectRef]:
    """Objects under `prefix` in day folders from `cutoff` on.

    Day folder names are ms timestamps of equal width, so they sort like numbers: below a
    `segment-logs/` folder each source is listed from `<source>/<cutoff>` onwards
    (S3 StartAfter, GCS startOffset) and older days are never listed. Above `segment-logs/`
    one delimited listing per level finds it; a prefix that is not in the layout is listed
    whole and filtered."""
    if cutoff is None:
        yield from store.list(bucket, prefix)
        return
    for source_prefix, listed_whole in _source_prefixes(store, bucket, prefix):
        start = "" if listed_whole else f"{source_prefix}{cutoff - 1}"
        for ref in store.list(bucket, prefix if listed_whole else source_prefix, start):
            day = day_of(ref.key)
            if day is not None and day >= cutoff:
                yield ref


def _source_prefixes(store: Store, bucket: str, prefix: str) -> Iterator[tuple[str, bool]]:
    """`segment-logs/<source>/` prefixes under `prefix`, or (prefix, True) to list it whole."""
    head, sep, tail = prefix.partition("segment-logs/")
    if sep and "/" in tail:  # already inside one source (or one of its days)
        yield prefix, True
        return
    if sep:
        for folder in store.subfolders(bucket, head + sep):
            if folder.startswith(prefix):
                yield folder, False
        return
    folders = store.subfolders(bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/")
    logs = [f for f in folders if f.endswith("/segment-logs/") or f == "segment-logs/"]
    if not logs:
        yield prefix, True
        return
    for folder in logs:
        for source in store.subfolders(bucket, folder):
            yield source, False


@cache
def store_for(scheme: str) -> Store:
    """One client per scheme for the process (the SDK clients are thread-safe)."""
    if scheme == "s3":
        return S3Store()
    if scheme == "gs":
        return GcsStore()
    raise UsageError(f"unsupported scheme {scheme}:// (use s3:// or gs://)")


class S3Store:
    """S3 and S3-compatible stores through boto3's standard credential chain and endpoint
    settings (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, config files, instance and container roles)."""

    def __init__(self) -> None:
        import boto3
        from botocore.config import Config

        # Standard retry mode: exponential backoff with jitter on throttling, 5xx and
        # connection errors; one pooled connection per download worker plus listing.
        config = Config(retries={"mode": "standard", "max_attempts": 6},
                        max_pool_connections=DOWNLOAD_WORKERS + 2, connect_timeout=10, read_timeout=60)
        self.client = boto3.session.Session().client("s3", config=config)

    def list(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[ObjectRef]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, **({"StartAfter": start_after} if start_after else {}))
        with _S3Errors(f"s3://{bucket}/{prefix}"):
            for page in pages:
                for o in page.get("Contents", ()):
                    yield ObjectRef(f"s3://{bucket}/{o['Key']}", bucket, o["Key"], o["ETag"],
                                    o["Size"], o["LastModified"].astimezone(dt.UTC))

    def subfolders(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/")
        with _S3Errors(f"s3://{bucket}/{prefix}"):
            return [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", ())]

    def download(self, ref: ObjectRef, write: Callable[[bytes], object]) -> None:
        from botocore.exceptions import ClientError

        try:
            # If-Match: exactly the listed version, never a newer one the manifest does not name.
            body = self.client.get_object(Bucket=ref.bucket, Key=ref.key, IfMatch=ref.version)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileMissingError(f"{ref.uri} was deleted after it was listed") from None
            if code in ("PreconditionFailed", "412"):
                raise FileMissingError(
                    f"{ref.uri} was replaced after it was listed (ETag is no longer {ref.version}); "
                    "the next run loads the new version") from None
            raise OSError(f"{ref.uri}: {_s3_reason(exc)}") from None
        with body:
            for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                write(chunk)


def _s3_reason(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".rstrip(": ")
    return str(exc)


class _S3Errors:
    """Listing failures as usage errors (exit 2) that say what to fix; never a secret."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            raise UsageError(
                f"{self.where}: no AWS credentials found. Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (shared config/credentials files), or run "
                "with an instance or container role") from None
        if isinstance(exc, EndpointConnectionError):
            raise UsageError(f"{self.where}: cannot reach the S3 endpoint ({exc}); check "
                             "AWS_ENDPOINT_URL and the network") from None
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            hint = {
                "NoSuchBucket": "the bucket does not exist (check its name and AWS_ENDPOINT_URL)",
                "AccessDenied": "access denied: the credentials in use may not list this bucket "
                                "(s3:ListBucket)",
                "InvalidAccessKeyId": "the access key id is not known to the store: check the "
                                      "credentials in use",
                "SignatureDoesNotMatch": "the secret key does not match the access key id: check "
                                         "the credentials in use",
                "ExpiredToken": "the session token has expired: refresh the credentials",
            }.get(code)
            raise UsageError(f"{self.where}: {hint or _s3_reason(exc)}") from None
        return False


class GcsStore:
    """Google Cloud Storage through application default credentials
    (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, the metadata server);
    STORAGE_EMULATOR_HOST points it at an emulator."""

    def __init__(self) -> None:
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        try:
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                self.client = storage.Client(project="emulator", credentials=AnonymousCredentials())
            else:
                self.client = storage.Client()
        except DefaultCredentialsError as exc:
            raise UsageError(
                "gs://: no Google credentials found. Set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service account key file, run `gcloud auth application-default login`, or run "
                f"where the metadata server provides them ({type(exc).__name__})") from None

    def list(self, bucket: str, prefix: str, start_after: str = "") -> Iterator[ObjectRef]:
        blobs = self.client.list_blobs(bucket, prefix=prefix,
                                       **({"start_offset": start_after} if start_after else {}))
        with _GcsErrors(f"gs://{bucket}/{prefix}"):
            for b in blobs:
                if start_after and b.name <= start_after:
                    continue  # startOffset is inclusive; S3's StartAfter is not
                yield ObjectRef(f"gs://{bucket}/{b.name}", bucket, b.name, str(b.generation),
                                b.size, b.updated.astimezone(dt.UTC))

    def subfolders(self, bucket: str, prefix: str) -> list[str]:
        blobs = self.client.list_blobs(bucket, prefix=prefix, delimiter="/")
        with _GcsErrors(f"gs://{bucket}/{prefix}"):
            for _ in blobs:
                pass
            return sorted(blobs.prefixes)

    def download(self, ref: ObjectRef, write: Callable[[bytes], object]) -> None:
        from google.api_core.exceptions import GoogleAPIError, NotFound

        blob = self.client.bucket(ref.bucket).blob(ref.key, generation=int(ref.version))

        class _Sink:
            def write(self, data: bytes) -> int:
                write(data)
                return len(data)

        try:
            # raw_download: the stored bytes, never decompressed in transit (Content-Encoding
            # gzip); the reader detects gzip itself.
            self.client.download_blob_to_file(blob, _Sink(), raw_download=True)
        except NotFound:
            raise FileMissingError(
                f"{ref.uri} (generation {ref.version}) was deleted or replaced after it was listed") from None
        except GoogleAPIError as exc:
            raise OSError(f"{ref.uri}: {type(exc).__name__}: {getattr(exc, 'message', exc)}") from None


class _GcsErrors(_S3Errors):
    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        from google.api_core.exceptions import Forbidden, NotFound, Unauthorized

        if isinstance(exc, NotFound):
            raise UsageError(f"{self.where}: the bucket does not exist") from None
        if isinstance(exc, (Forbidden, Unauthorized)):
            raise UsageError(f"{self.where}: access denied: the credentials in use may not list "
                             "this bucket (storage.objects.list)") from None
        return False


def _download_to(store: Store, ref: ObjectRef, path: Path) -> str:
    """Write the object to `path` in chunks (memory stays flat); its SHA-256 as it came."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        def write(chunk: bytes) -> None:
            digest.update(chunk)
            fh.write(chunk)

        store.download(ref, write)
    return digest.hexdigest()


def _remove_stale_spools(parent: Path) -> None:
    """Spool folders of runs that were killed (SIGKILL leaves no chance to clean up)."""
    for folder in parent.glob(f"{SPOOL_PREFIX}*-*"):
        pid = folder.name.removeprefix(SPOOL_PREFIX).split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


class Spool:
    """Downloads the object files of a run in order, a few ahead of the readers.

    `reading(file, batches)` waits for the file's local copy, yields its batches and deletes
    the copy; local files pass straight through. `close()` stops the downloads and removes
    the spool folder whatever happened."""

    def __init__(self, files: list, *, workers: int = DOWNLOAD_WORKERS,
                 ahead: int = SPOOL_FILES_AHEAD) -> None:
        self.objects = [f for f in files if f.origin is not None]
        self.futures: dict[Path, Future] = {}
        self.digests: dict[Path, str] = {}
        self.ready = threading.Condition()
        self.slots = threading.Semaphore(ahead)
        self.stopped = threading.Event()
        self.root = self.objects[0].path.parent if self.objects else None
        self.pool: ThreadPoolExecutor | None = None
        if self.objects:
            _remove_stale_spools(self.root.parent)
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="spool")
            self.feeder = threading.Thread(target=self._feed, daemon=True)
            self.feeder.start()

    def _feed(self) -> None:
        for f in self.objects:
            while not self.slots.acquire(timeout=0.2):
                if self.stopped.is_set():
                    return
            if self.stopped.is_set():
                return
            future = self.pool.submit(self._download, f)
            with self.ready:
                self.futures[f.path] = future
                self.ready.notify_all()

    def _download(self, f) -> None:
        ref: ObjectRef = f.origin
        store = store_for(split_uri(ref.uri)[0])
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                self.digests[f.path] = _download_to(store, ref, f.path)
                return
            except FileMissingError:
                raise
            except Exception as exc:  # noqa: BLE001 - a fault in the body: the SDK did not retry it
                if attempt + 1 == DOWNLOAD_ATTEMPTS or self.stopped.is_set():
                    raise OSError(f"{ref.uri}: download failed after {attempt + 1} attempts: "
                                  f"{exc}") from None
                time.sleep(0.2 * 2 ** attempt)

    def reading(self, f, batches: Iterator) -> Iterator:
        """The file's batches, once its local copy is complete (objects), then the copy goes."""
        if f.origin is None:
            yield from batches
            return
        try:
            with self.ready:
                self.ready.wait_for(lambda: f.path in self.futures or self.stopped.is_set())
            future = self.futures.get(f.path)
            if future is None:  # the run is stopping: never read a file as empty
                raise OSError(f"{f.name}: not downloaded, the load was stopped")
            future.result()  # re-raises the download's error: this file fails
            yield from batches
        finally:
            self.release(f)

    def release(self, f) -> None:
        if self.futures.pop(f.path, None) is not None:
            f.path.unlink(missing_ok=True)
            self.slots.release()

    def digest(self, f) -> str:
        """SHA-256 of the object's bytes as downloaded ('' before or without a download)."""
        return self.digests.get(f.path, "")

    def close(self) -> None:
        self.stopped.set()
        with self.ready:
            self.ready.notify_all()  # a reader waiting for a file that will not come
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
