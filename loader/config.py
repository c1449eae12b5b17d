"""The one configuration object of a load."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_DB = "warehouse.duckdb"


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
    memory_limit_mb: int = 1536  # DuckDB's share: 2/3 for the warehouse, 1/3 for shaping batches
    progress: Callable[[dict], None] | None = None

    def __post_init__(self) -> None:
        if not self.db_path:
            self.db_path = default_db_path()
        if not 0 <= self.max_reject_ratio <= 1:
            from loader.errors import UsageError

            raise UsageError("max_reject_ratio must be between 0 and 1")
