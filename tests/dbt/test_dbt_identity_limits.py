"""The identity graph resolves long alias chains in one build, and fails loudly when capped."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import run_dbt

pytestmark = pytest.mark.slow
SELECT = ["run", "--select", "+int_identifiers_mapped_to_persons"]


def chain_warehouse(db: Path, links: int) -> list[str]:
    """Users u0..u<links> linked by aliases in shuffled order (a chain, not a star)."""
    users = [f"user-{i:04d}" for i in range(links + 1)]
    random.Random(7).shuffle(users)  # ids ordered against the chain
    con = duckdb.connect(str(db))
    con.execute("create schema segment")
    con.execute("""create table segment.aliases (id varchar, anonymous_id varchar, user_id varchar,
        previous_id varchar, "timestamp" timestamptz, received_at timestamptz, load_id bigint,
        source_id varchar)""")
    rows = [(f"a{i}", None, users[i + 1], users[i], f"2024-05-06 10:{i % 60:02d}:00+00",
             f"2024-05-06 10:{i % 60:02d}:00+00", 1, "s") for i in range(links)]
    con.executemany("insert into segment.aliases values (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute("""create table segment.identifies as select 'i0' as id, 'anon-first' as anonymous_id,
        ? as user_id, timestamptz '2024-05-01 00:00:00+00' as "timestamp",
        timestamptz '2024-05-01 00:00:00+00' as received_at, 1::bigint as load_id, 's' as source_id""",
                [users[0]])
    con.close()
    return users


def working_tables(db: Path) -> list[str]:
    """Tables the identity rounds write beside int_identifiers_mapped_to_persons."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("""select table_name from information_schema.tables
            where table_name like 'int_identifiers_mapped_to_persons\\_\\_%' escape '\\'""").fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def test_a_400_link_alias_chain_is_one_person(tmp_path):
    db = tmp_path / "chain.duckdb"
    users = chain_warehouse(db, 400)
    result = run_dbt(SELECT, db, tmp_path)
    con = duckdb.connect(str(db), read_only=True)
    try:
        persons = con.execute("""select distinct person_id
            from analytics_intermediate.int_identifiers_mapped_to_persons""").fetchall()
    finally:
        con.close()
    # the earliest-seen user id (identified on 2024-05-01) names the person
    assert persons == [(users[0],)]
    # rounds are separate tables read by the model, dropped once it is built
    assert "__cc_labels_" in result.compiled_code("int_identifiers_mapped_to_persons")
    assert working_tables(db) == []


def test_iteration_limit_fails_loudly(tmp_path):
    db = tmp_path / "chain.duckdb"
    chain_warehouse(db, 400)
    result = run_dbt([*SELECT, "--vars", "{identity_max_iterations: 2}"], db, tmp_path, check=False)
    assert result.returncode != 0
    assert "identity graph did not converge within 2 iterations" in result.output
    assert result.statuses()["model.segment_warehouse.int_identifiers_mapped_to_persons"] == "error"
    assert working_tables(db) == []
