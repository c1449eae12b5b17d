"""The one configuration object of a load."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

DEFAULT_DB = "warehouse.duckdb"
READER_MEMORY_MB = 256
# Two readers and the warehouse, 213 or 214 MB each: 768 (256 each) peaked at 988-1,024 MiB
# at 1M events, 640 at 948-985 MiB for 1.5% more time (bench/README.md, "Peak memory").
DEFAULT_MEMORY_MB = 640
# The loader's own records, and DuckDB's built-in schemas: events must never be written there.
RESERVED_SCHEMAS = frozenset({"_loader", "main", "information_schema", "pg_catalog", "temp", "system"})


def default_db_path() -> str:
    """Shared with the dbt profile: SEGMENT_DUCKDB_PATH, else warehouse.duckdb."""
    return os.environ.get("SEGMENT_DUCKDB_PATH", DEFAULT_DB)


@dataclass
class LoadConfig:
    db_path: str = ""
    schema: str = "segment"
    force: bool = False  # reload files even when the manifest says they were loaded
    dry_run: bool = False  # plan tables and schema changes, write nothing
    max_reject_ratio: float = 0.25  # a file with more rejected lines than this fails
    max_event_bytes: int = 32 * 1024  # Segment's per-event limit
    batch_bytes: int = 16 << 20  # text per normalised batch: bounds memory
    source_id: str | None = None  # when neither projectId nor the path gives one
    commit_every_rows: int = 100_000  # files are committed in groups of about this many rows
    dedup_window_days: float | None = None  # only ids loaded by runs of the last N days count
    memory_limit_mb: int = DEFAULT_MEMORY_MB  # DuckDB's share, see warehouse_memory_mb / reader_memory_mb
    progress: Callable[[dict], None] | None = None
    tracking_plan: str | None = None  # a Segment Protocols plan (JSON/YAML) to validate events with
    on_violation: str = "allow"  # allow: load and record the violation; block: reject (replayable)
    unplanned_events: str = "allow"  # track events the plan does not list: allow or block
    pii_config: str | None = None  # paths to drop or hash before anything is written
    since: str | None = None  # only day folders received in this window (2d, 36h) or from a day on
    retry_failed: bool = False  # read again files that failed before and have not changed
    exclude: tuple[str, ...] = ()  # globs of paths (or file names) to leave out

    def __post_init__(self) -> None:
        from loader.errors import UsageError

        if not self.db_path:
            self.db_path = default_db_path()
        if not 0 <= self.max_reject_ratio <= 1:
            raise UsageError("max_reject_ratio must be between 0 and 1")
        if self.dedup_window_days is not None and not self.dedup_window_days > 0:
            raise UsageError("dedup_window_days must be a positive number of days")
        if self.since:
            from loader.objectstore import since_cutoff

            since_cutoff(self.since)  # a malformed window is a usage error before anything runs
        for name in ("max_event_bytes", "commit_every_rows", "memory_limit_mb"):
            if getattr(self, name) < 1:  # 0 or less would fail every file, not the command
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.schema.lower() in RESERVED_SCHEMAS:
            raise UsageError(f"schema {self.schema!r} is reserved (by DuckDB or the loader's own "
                             f"records): choose another, e.g. the default 'segment'")
        for name in ("on_violation", "unplanned_events"):
            action = getattr(self, name)
            if action not in ("allow", "block") or (action == "block" and not self.tracking_plan):
                raise UsageError(f"{name} must be allow or block, and block needs a tracking plan")

    @cached_property
    def compiled_plan(self):
        """The tracking plan, read and compiled once (a UsageError if it is unusable)."""
        if not self.tracking_plan:
            return None
        from loader.protocols import load_plan

        return load_plan(self.tracking_plan, on_violation=self.on_violation,
                         unplanned_events=self.unplanned_events)

    @cached_property
    def pii_policy(self):
        """The PII policy, read once (a UsageError if it is unusable)."""
        if not self.pii_config:
            return None
        from loader.pii import load_policy

        return load_policy(self.pii_config)

    # A reader needs room for one batch (and a 10 MB line): 256 MB of the default. The
    # warehouse gets the rest, which is also the cache DuckDB fills as the warehouse grows:
    # a load only appends, so a bigger cache bought nothing but peak memory (1.37 GB at 1M
    # events with 512 MB, 0.95 GB with 256 MB; bench/README.md).
    @property
    def reader_memory_mb(self) -> int:
        return min(READER_MEMORY_MB, self.memory_limit_mb // 3)

    @property
    def warehouse_memory_mb(self) -> int:
        return self.memory_limit_mb - 2 * self.reader_memory_mb
