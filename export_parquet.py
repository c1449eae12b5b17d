"""Export a DuckDB warehouse's raw tables (schema `segment`) to Parquet for the dbt project on Spark.

    python export_parquet.py warehouse.duckdb lake/raw

writes lake/raw/<table>/part-0.parquet for every table the loader wrote (replacing what an
earlier export left there) and prints the `--vars` value for `dbt build --target spark`,
whose on-run-start hook defines each table on Spark as a view over its folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import duckdb


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def export(db: Path, folder: Path, schema: str = "segment") -> list[str]:
    """Every table of `schema` as <folder>/<table>/part-0.parquet; returns the table names."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [row[0] for row in con.execute(
            "select table_name from information_schema.tables"
            " where table_schema = ? and table_type = 'BASE TABLE' order by 1", [schema],
        ).fetchall()]
        for table in tables:
            target = folder / table
            shutil.rmtree(target, ignore_errors=True)  # a stale part file would be read too
            target.mkdir(parents=True)
            path = str(target / "part-0.parquet").replace("'", "''")
            con.execute(f"copy {quote(schema)}.{quote(table)} to '{path}' (format parquet)")
    finally:
        con.close()
    return tables


def dbt_vars(folder: Path, tables: list[str]) -> str:
    """The --vars value (JSON is YAML) naming the exported folder and its tables."""
    return json.dumps({"segment_raw_parquet": {"path": str(folder.resolve()), "tables": tables}})


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    db, folder = Path(argv[0]), Path(argv[1])
    if not db.exists():
        print(f"no such warehouse: {db}", file=sys.stderr)
        return 2
    print(dbt_vars(folder, export(db, folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
