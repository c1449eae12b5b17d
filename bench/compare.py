"""Compare two warehouses table by table: same tables, same columns and types, same rows.

    .venv/bin/python bench/compare.py A.duckdb B.duckdb [--ignore-column segment.tracks.event_text]

Used to check that a loader change leaves the warehouse identical (bench/README.md). Load-time
stamps (`uuid_ts`, `load_id`, `file_id`, times) differ between any two runs and are left out;
rows are compared as multisets (EXCEPT ALL both ways). Exit 1 when anything differs.
"""

from __future__ import annotations

import argparse
import sys

import duckdb

RUN_COLUMNS = {"uuid_ts", "load_id", "file_id", "started_at", "finished_at", "loaded_at", "rejected_at",
               "changed_at", "recorded_at", "arguments", "loader_version", "seconds", "stage_seconds"}
# Tables whose rows depend on when or how often a run happened, not on what it loaded.
RUN_TABLES = {"_loader.loads", "_loader.files"}
# History's storage (128-bit keys since issue 10); `_loader.seen_messages` shows it as text.
STORAGE_TABLES = {"_loader.seen_keys", "_loader.seen_texts"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(con: duckdb.DuckDBPyConnection, db: str) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for schema, table, column, dtype in con.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = ? AND table_schema NOT IN ('information_schema', 'pg_catalog', 'main') "
        "ORDER BY table_schema, table_name, ordinal_position", [db]).fetchall():
        found.setdefault(f"{schema}.{table}", {})[column] = dtype
    return found


def compare(a_path: str, b_path: str, ignore: set[str] = frozenset()) -> list[str]:
    """Differences between the warehouses at a_path and b_path, as sentences."""
    con = duckdb.connect()
    con.execute(f"ATTACH {_lit(a_path)} AS a (READ_ONLY)")
    con.execute(f"ATTACH {_lit(b_path)} AS b (READ_ONLY)")
    a, b = _columns(con, "a"), _columns(con, "b")
    for t in STORAGE_TABLES:
        a.pop(t, None)
        b.pop(t, None)
    problems = [f"table {t} only in {a_path}" for t in sorted(set(a) - set(b))]
    problems += [f"table {t} only in {b_path}" for t in sorted(set(b) - set(a))]
    for table in sorted(set(a) & set(b)):
        if table in RUN_TABLES:
            continue
        cols_a, cols_b = a[table], b[table]
        if list(cols_a.items()) != list(cols_b.items()):  # column order too
            problems.append(f"{table}: columns differ: {sorted(set(cols_a.items()) ^ set(cols_b.items()))}")
        shared = [c for c in cols_a if c in cols_b and c not in RUN_COLUMNS and f"{table}.{c}" not in ignore]
        if not shared:
            continue
        schema, name = table.split(".", 1)
        select = ", ".join(_q(c) for c in shared)
        for left, right in (("a", "b"), ("b", "a")):
            extra = con.execute(
                f"SELECT count(*) FROM (SELECT {select} FROM {left}.{_q(schema)}.{_q(name)} EXCEPT ALL "
                f"SELECT {select} FROM {right}.{_q(schema)}.{_q(name)})").fetchone()[0]
            if extra:
                problems.append(f"{table}: {extra} row(s) only in {a_path if left == 'a' else b_path}")
    return problems


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--ignore-column", action="append", default=[],
                        help="schema.table.column to leave out (a deliberate change)")
    args = parser.parse_args()
    problems = compare(args.a, args.b, set(args.ignore_column))
    for p in problems:
        print(p)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
