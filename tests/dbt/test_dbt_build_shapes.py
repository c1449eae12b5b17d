"""The dbt project builds on any warehouse the loader can produce: empty, partial, odd types."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import MARTS, load_archive, run_dbt

pytestmark = pytest.mark.slow
BUILD = ["build", "--exclude-resource-type", "unit_test"]


def count(db: Path, relation: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"select count(*) from {relation}").fetchone()[0]
    finally:
        con.close()


def test_empty_warehouse_builds(tmp_path):
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()  # no segment schema at all
    result = run_dbt(BUILD, db, tmp_path)
    assert result.not_passing() == {}
    for mart in MARTS:
        assert count(db, f"analytics.{mart}") == 0


def test_warehouse_with_only_pages_builds(tmp_path):
    archive = tmp_path / "segment-logs" / "src_web" / "1714953600000"
    archive.mkdir(parents=True)
    lines = [
        {"messageId": f"p{i}", "type": "page", "anonymousId": "anon-1" if i < 3 else "anon-2",
         "userId": "u1" if i == 2 else None, "properties": {"path": "/", "title": "Home"},
         "timestamp": f"2024-05-06T10:0{i}:00.000Z", "receivedAt": f"2024-05-06T10:0{i}:00.100Z"}
        for i in range(5)
    ]
    with gzip.open(archive / "part.gz", "wt") as fh:
        fh.write("".join(json.dumps({k: v for k, v in m.items() if v is not None}) + "\n" for m in lines))
    db = tmp_path / "pages.duckdb"
    load_archive(tmp_path / "segment-logs", db)
    result = run_dbt(BUILD, db, tmp_path)
    assert result.not_passing() == {}
    con = duckdb.connect(str(db), read_only=True)
    try:
        users = con.execute("select person_id, anonymous_ids, message_count from analytics.users order by 1").fetchall()
    finally:
        con.close()
    # anonymous_ids is a native list
    assert users == [("anon-2", ["anon-2"], 2), ("u1", ["anon-1"], 3)]
    assert count(db, "analytics.orders") == 0


def test_amounts_stored_as_text_are_parsed(tmp_path):
    """A loader batch of string-only amounts gives VARCHAR columns; staging still parses them."""
    db = tmp_path / "text_amounts.duckdb"
    con = duckdb.connect(str(db))
    common = """'u1' as user_id, timestamptz '2024-05-06 10:00:00+00' as "timestamp",
        timestamptz '2024-05-06 10:00:00+00' as received_at, 1::bigint as load_id, 's' as source_id"""
    con.execute("create schema segment")
    con.execute(f"""create table segment.tracks as
        select 'oc1' as id, {common}, 'order_completed' as event, 'Order Completed' as event_text
        union all select 'or1', {common}, 'order_refunded', 'Order Refunded'
        union all select 'or2', {common}, 'order_refunded', 'Order Refunded'""")
    con.execute(f"""create table segment.order_completed as select 'oc1' as id, {common},
        'O1' as order_id, ' 57.30 ' as total, '52.50' as subtotal, 'usd' as currency,
        cast('[{{"product_id":"P1","price":"20","quantity":"2"}},{{"product_id":"P2","price":12.5}}]' as json) as products""")
    con.execute(f"""create table segment.order_refunded as
        select 'or1' as id, {common}, 'O1' as order_id, '12.50' as total
        union all select 'or2', {common}, 'O1', 'ten'""")
    con.close()
    result = run_dbt(BUILD, db, tmp_path)
    assert result.not_passing() == {}
    con = duckdb.connect(str(db), read_only=True)
    try:
        order = con.execute("""select currency, total, subtotal, refunded_amount, net_total, status,
            item_count, items_subtotal from analytics.orders""").fetchall()
        flags = con.execute("""select refund_id, is_full_refund, is_unparsed_amount
            from analytics_intermediate.int_refunds_matched_to_orders order by 1""").fetchall()
    finally:
        con.close()
    assert order == [("USD", Decimal("57.30"), Decimal("52.50"), Decimal("12.50"), Decimal("44.80"),
                      "partially_refunded", 3, Decimal("52.50"))]
    assert flags == [("or1", False, False), ("or2", False, True)]
