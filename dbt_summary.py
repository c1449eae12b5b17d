"""Print a short summary of the dbt marts: people, orders, net revenue by currency, sessions,
top channels and the e-commerce funnel.

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
        analyst = analyst_lines(con)
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
    return "\n".join(lines + analyst)


def analyst_lines(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Sessions, top channels, the funnel and the bots left out (analyst marts)."""
    sessions, persons, bounces, cross_device = con.execute(
        "select count(*), count(distinct person_id), count(*) filter (where is_bounce),"
        " count(*) filter (where is_cross_device) from analytics.sessions"
    ).fetchone()
    channels = con.execute(
        "select channel, count(*) from analytics.sessions group by channel order by 2 desc, 1 limit 5"
    ).fetchall()
    viewed, added, checkout, ordered = con.execute(
        "select count(*) filter (where furthest_step >= 1), count(*) filter (where furthest_step >= 2),"
        " count(*) filter (where furthest_step >= 3), count(*) filter (where furthest_step >= 4)"
        " from analytics.funnel_sessions"
    ).fetchone()
    bots, bot_events = con.execute(
        "select count(distinct person_id), count(*)"
        " from analytics_intermediate.int_events_sessionized where is_bot_person"
    ).fetchone()
    conversion = f"{100 * ordered / sessions:.1f}%" if sessions else "n/a"
    return [
        (f"sessions: {sessions} by {persons} people ({bounces} single-event,"
         f" {cross_device} across devices)"),
        "top channels (sessions): " + ", ".join(f"{c} {n}" for c, n in channels),
        (f"funnel (sessions): product viewed {viewed} -> added {added} -> checkout {checkout}"
         f" -> ordered {ordered} (conversion {conversion})"),
        f"bots left out of the analyst marts: {bots} ({bot_events} events)",
    ]


def main() -> None:
    db = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SEGMENT_DUCKDB_PATH", "warehouse.duckdb")
    try:
        print(summary(db))
    except duckdb.Error as exc:
        sys.exit(f"dbt_summary: cannot read the marts in {db}: {exc} (run `dbt build` first)")


if __name__ == "__main__":
    main()
