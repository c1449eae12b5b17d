"""Print a short summary of the dbt marts: people, orders, net revenue by currency.

    python dbt_summary.py [DB]      # DB defaults to $SEGMENT_DUCKDB_PATH, then warehouse.duckdb

Reads the marts built by `dbt build` (schema `analytics`) read-only. Money is shown per
currency, never summed across currencies.
"""

from __future__ import annotations

import os
import sys

import duckdb


def summary(db: str) -> str:
    """The summary text for the marts in database file `db`."""
    con = duckdb.connect(db, read_only=True)
    try:
        people, identified, shared = con.execute(
            "select count(*), count(*) filter (where is_identified),"
            " count(*) filter (where used_shared_device) from analytics.users"
        ).fetchone()
        orders, cancelled, refunded = con.execute(
            "select count(*), count(*) filter (where is_cancelled),"
            " count(*) filter (where refund_count > 0) from analytics.orders"
        ).fetchone()
        by_currency = con.execute(
            "select currency, count(*), sum(case when is_cancelled then 0 else total end),"
            " sum(refunded_amount), sum(net_total)"
            " from analytics.orders group by currency order by currency"
        ).fetchall()
        orphans = con.execute(
            "select count(*), string_agg(coalesce(order_id, '?'), ', ' order by order_id)"
            " from analytics.orphan_refunds"
        ).fetchone()
    finally:
        con.close()
    lines = [
        (f"people: {people} ({identified} identified, {people - identified} anonymous only,"
         f" {shared} on a shared device)"),
        f"orders: {orders} ({cancelled} cancelled, {refunded} with refunds)",
        "net revenue by currency (gross - refunds; cancelled orders count 0):",
        f"  {'currency':<8} {'orders':>6} {'gross':>12} {'refunded':>12} {'net':>12}",
    ]
    for currency, n, gross, refunded_amount, net in by_currency:
        lines.append(
            f"  {currency:<8} {n:>6} {gross or 0:>12.2f} {refunded_amount or 0:>12.2f} {net or 0:>12.2f}"
        )
    if orphans[0]:
        lines.append(f"refunds for orders not in the data: {orphans[0]} ({orphans[1]})")
    return "\n".join(lines)


def main() -> None:
    db = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SEGMENT_DUCKDB_PATH", "warehouse.duckdb")
    try:
        print(summary(db))
    except duckdb.Error as exc:
        sys.exit(f"dbt_summary: cannot read the marts in {db}: {exc} (run `dbt build` first)")


if __name__ == "__main__":
    main()
