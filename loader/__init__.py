"""Load Segment event archives into a deduplicated, Segment-compatible DuckDB warehouse.

    from loader import load, LoadConfig
    result = load(["segment-logs/"], LoadConfig(db_path="warehouse.duckdb"))
"""

__version__ = "0.1.0"

from loader.config import LoadConfig  # noqa: E402
from loader.errors import DatabaseLockedError, FileFailedError, LoaderError, UsageError  # noqa: E402
from loader.pipeline import LoadResult, load  # noqa: E402

__all__ = [
    "load",
    "LoadConfig",
    "LoadResult",
    "LoaderError",
    "UsageError",
    "DatabaseLockedError",
    "FileFailedError",
    "__version__",
]
