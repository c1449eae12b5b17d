"""A one-million-message warehouse builds and attributes every event (models only).

How long it takes is measured in bench/ (bench/dbt_incremental.py), never asserted here: a
timed test fails on a busy machine and proves nothing about the code."""

from __future__ import annotations

import duckdb
import pytest
from dbt_helpers import run_dbt
from synthetic import build_synthetic

pytestmark = pytest.mark.slow


def test_one_million_messages_build_and_attribute_every_event(tmp_path):
    db = tmp_path / "big.duckdb"
    build_synthetic(db, 1_000_000)
    run_dbt(["seed"], db, tmp_path)  # the exchange rates the orders mart reads
    run_dbt(["run"], db, tmp_path)  # fails the test unless every model succeeds
    con = duckdb.connect(str(db), read_only=True)
    try:
        messages, persons, unattributed = con.execute("""
            select count(*), count(distinct person_id), count(*) filter (where person_id is null)
            from analytics_intermediate.int_events_mapped_to_persons""").fetchone()
        mart_persons = con.execute("select count(*) from analytics.users").fetchone()[0]
    finally:
        con.close()
    assert messages >= 990_000 and unattributed == 0
    assert persons == mart_persons
