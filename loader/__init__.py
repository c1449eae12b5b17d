"""Load Segment event archives into a deduplicated, Segment-compatible DuckDB warehouse.

    from loader import load, LoadConfig
    result = load(["segment-logs/"], LoadConfig(db_path="warehouse.duckdb"))
"""

__version__ = "0.1.0"

from loader.config import LoadConfig
from loader.errors import DatabaseLockedError, FileFailedError, LoaderError, UsageError
from loader.pipeline import LoadResult, load

__all__ = [
    "DatabaseLockedError",
    "FileFailedError",
    "LoadConfig",
    "LoadResult",
    "LoaderError",
    "UsageError",
    "__version__",
    "load",
]
