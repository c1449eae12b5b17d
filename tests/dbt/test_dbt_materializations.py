"""The project's DuckDB materialization overrides (macros/materializations/) keep dbt's behaviour.

incremental.sql skips dbt's schema-change check and persist_docs when one catalog query shows
the new rows' columns equal the stored table's and the stored comments current;
persist_docs.sql writes column comments without a second column lookup. Each test runs the
overrides in a one-model project (copied with the repo's macros/materializations/) on its own
DuckDB file, so a wrong fast path shows as wrong rows, columns, comments or a missing failure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import REPO, copy_db, query, run_dbt

pytestmark = pytest.mark.slow

# rows arrive in batches; a re-delivered id replaces its row (delete+insert) or is added (append)
MODEL = """
{{ config(materialized='incremental', unique_key='id',
          incremental_strategy=var('strategy', 'delete+insert'),
          on_schema_change=var('on_schema_change', 'append_new_columns')) }}
select id,
       {{ 'cast(amount as varchar)' if var('retype', false) else 'amount' }} as amount,
       batch
       {%- if var('extra', false) %}, 'x' || id as extra{% endif %}
from raw.src
{% if is_incremental() %}where batch > (select max(batch) from {{ this }}){% endif %}
"""
# a table rebuilt every run; var `break` makes its build fail at run time
TOTALS = """
{{ config(materialized='table') }}
select count(*) as events, sum(amount) as amount from raw.src
{% if var('break', false) %}where error('boom') is null{% endif %}
"""
# a table that reads its own stored rows ({{ this }}): keeps dbt-duckdb's rename path
HISTORY = """
{{ config(materialized='table') }}
select count(*) as events from raw.src
{% if adapter.get_relation(this.database, this.schema, this.identifier) %}
union all select events from {{ this }}
{% endif %}
"""
DOCS = """
version: 2
models:
  - name: totals
    description: Totals.
    columns:
      - name: events
        description: Rows of raw.src.
  - name: events
    description: One row per id.
    columns:
      - name: id
        description: The id.
      - name: amount
        description: The amount.
      - name: extra
        description: Added later.
"""


def project(root: Path) -> Path:
    """A one-model dbt project under `root` using the repo's materialization overrides."""
    (root / "models").mkdir(parents=True)
    shutil.copytree(REPO / "macros" / "materializations", root / "macros")
    (root / "dbt_project.yml").write_text(
        "name: mini\nversion: '1.0'\nconfig-version: 2\nprofile: mini\n"
        "flags: {send_anonymous_usage_stats: false}\n"
        "models:\n  mini:\n    +persist_docs: {relation: true, columns: true}\n")
    (root / "profiles.yml").write_text(
        "mini:\n  target: duckdb\n  outputs:\n    duckdb:\n      type: duckdb\n"
        "      path: \"{{ env_var('SEGMENT_DUCKDB_PATH') }}\"\n      schema: main\n      threads: 1\n")
    (root / "models" / "events.sql").write_text(MODEL)
    (root / "models" / "totals.sql").write_text(TOTALS)
    (root / "models" / "history.sql").write_text(HISTORY)
    (root / "models" / "_models.yml").write_text(DOCS)
    return root


def execute(db: Path, *sql: str) -> None:
    con = duckdb.connect(str(db))
    try:
        for statement in sql:
            con.execute(statement)
    finally:
        con.close()


def state(db: Path) -> tuple[list[tuple], list[tuple], str | None]:
    """Rows, (column, type, comment) in order, and the table comment of main.events."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("select * from main.events order by all").fetchall()
        columns = con.execute("""select column_name, data_type, comment from duckdb_columns()
            where schema_name = 'main' and table_name = 'events' order by column_index""").fetchall()
        comment = con.execute("""select comment from duckdb_tables()
            where schema_name = 'main' and table_name = 'events'""").fetchone()[0]
    finally:
        con.close()
    return rows, columns, comment


def dbt(root: Path, db: Path, run: str, *args: str, check: bool = True, select: str = "events",
        **variables: object):
    """`dbt run` of the mini project (own target and log dirs per `run`); returns the result
    and the SQL statements dbt sent for the model (its debug log)."""
    cli = ["run", "--select", select, *args] + (["--vars", json.dumps(variables)] if variables else [])
    result = run_dbt(cli, db, root / run, check=check, project=root)
    return result, (root / run / "logs" / "dbt.log").read_text()


@pytest.fixture(scope="module")
def built_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The mini project built on batch 1 (ids 1, 2)."""
    tmp = tmp_path_factory.mktemp("materializations")
    root, db = project(tmp / "p"), tmp / "built.duckdb"
    execute(db, "create schema raw",
            "create table raw.src as select * from (values (1, 10, 1), (2, 20, 1)) t(id, amount, batch)")
    dbt(root, db, "build", select="*")
    return root, db


@pytest.fixture
def built(built_once: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the built warehouse for one test (the project is shared: runs are sequential)."""
    return built_once[0], copy_db(built_once[1], tmp_path / "w.duckdb")


DOCUMENTED = [("id", "INTEGER", "The id."), ("amount", "INTEGER", "The amount."), ("batch", "INTEGER", None)]


def test_first_build_writes_every_comment(built):
    rows, columns, comment = state(built[1])
    assert rows == [(1, 10, 1), (2, 20, 1)]
    assert columns == DOCUMENTED
    assert comment == "One row per id."


def test_the_fast_path_inserts_and_replaces_rows_and_skips_the_unchanged_steps(built):
    root, db = built
    execute(db, "insert into raw.src values (2, 21, 2), (3, 30, 2)")
    _, log = dbt(root, db, "fast")
    rows, columns, comment = state(db)
    assert rows == [(1, 10, 1), (2, 21, 2), (3, 30, 2)]  # id 2 replaced, id 3 added
    assert (columns, comment) == (DOCUMENTED, "One row per id.")
    # the fast path ran: no describe of either table, no comment written again
    assert "from (describe" not in log and "comment on" not in log
    assert "duckdb_tables() as t" in log
    # nothing new: the rows stay
    dbt(root, db, "noop")
    assert state(db)[0] == rows


def test_the_append_strategy_takes_the_fast_path_too(built):
    root, db = built
    execute(db, "insert into raw.src values (2, 22, 2)")
    _, log = dbt(root, db, "append", strategy="append")
    assert state(db)[0] == [(1, 10, 1), (2, 20, 1), (2, 22, 2)]
    assert "from (describe" not in log


def test_a_stale_comment_is_written_again(built):
    root, db = built
    execute(db, "comment on column main.events.amount is 'stale'", "comment on table main.events is 'old'",
            "insert into raw.src values (4, 40, 2)")
    _, log = dbt(root, db, "stale")
    assert state(db)[1:] == (DOCUMENTED, "One row per id.")
    assert "comment on column" in log
    assert state(db)[0][-1] == (4, 40, 2)


def test_schema_changes_follow_on_schema_change(built):
    root, db = built
    execute(db, "insert into raw.src values (5, 50, 2)")
    # a new column: fail stops the run and leaves the table as it was
    result, _ = dbt(root, db, "fail", check=False, extra=True, on_schema_change="fail")
    assert result.returncode != 0 and "out of sync" in result.output
    assert state(db)[0] == [(1, 10, 1), (2, 20, 1)]
    # a changed type fails too (dbt compares the types, not only the names)
    result, _ = dbt(root, db, "retype", check=False, retype=True, on_schema_change="fail")
    assert result.returncode != 0 and "out of sync" in result.output
    # append_new_columns adds it (old rows NULL) and comments it
    dbt(root, db, "append_col", extra=True)
    rows, columns, _ = state(db)
    assert rows == [(1, 10, 1, None), (2, 20, 1, None), (5, 50, 2, "x5")]
    assert columns == [*DOCUMENTED, ("extra", "VARCHAR", "Added later.")]
    # sync_all_columns drops it again
    execute(db, "insert into raw.src values (6, 60, 3)")
    dbt(root, db, "sync", on_schema_change="sync_all_columns")
    assert state(db)[1] == DOCUMENTED
    assert state(db)[0][-1] == (6, 60, 3)


def test_full_refresh_rebuilds_the_table(built):
    root, db = built
    execute(db, "delete from main.events where id = 1", "alter table main.events add column junk int",
            "insert into raw.src values (7, 70, 2)")
    dbt(root, db, "full", "--full-refresh")
    rows, columns, comment = state(db)
    assert rows == [(1, 10, 1), (2, 20, 1), (7, 70, 2)]
    assert (columns, comment) == (DOCUMENTED, "One row per id.")


def test_a_table_is_rebuilt_in_place_and_a_failed_build_keeps_the_old_one(built):
    root, db = built
    execute(db, "insert into raw.src values (8, 80, 2)")
    _, log = dbt(root, db, "table", select="totals history")
    assert query(db, "select * from main.totals") == [(3, 110)]
    assert query(db, """select t.comment, c.comment from duckdb_tables() t join duckdb_columns() c
        using (database_name, schema_name, table_name) where table_name = 'totals'
        order by c.column_index""") == [("Totals.", "Rows of raw.src."), ("Totals.", None)]
    # in place: the old table dropped inside the model's transaction, nothing renamed or left over
    assert 'drop table if exists "w"."main"."totals" cascade' in log
    assert '"totals__dbt_tmp"' not in log and "totals__dbt_backup" not in log
    # a model reading {{ this }} keeps the rename path and so still sees its old rows
    assert '"history__dbt_tmp" rename to' in log
    assert sorted(query(db, "select * from main.history")) == [(2,), (3,)]
    # a build that fails at run time rolls back: the old table and its rows stay
    execute(db, "insert into raw.src values (9, 90, 3)")
    result, _ = dbt(root, db, "broken", check=False, select="totals", **{"break": True})
    assert result.returncode != 0 and "boom" in result.output
    assert query(db, "select * from main.totals") == [(3, 110)]
    assert query(db, """select table_name from duckdb_tables()
        where table_name like 'totals%' order by 1""") == [("totals",)]
