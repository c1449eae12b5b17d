"""Contract-shaped synthetic Segment warehouses built with SQL (no loader), for dbt tests.

`build_synthetic(path, events)` writes schema `segment` with tracks, pages, screens,
identifies, aliases, order_completed and order_refunded, shaped like the loader's output
(see the brief's warehouse contract): about `events` messages in total.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def build_synthetic(path: Path, events: int = 1_000_000, load_id: int = 1) -> None:
    """Create a warehouse of roughly `events` messages (deterministic)."""
    n_tracks = events * 55 // 100
    n_pages = events * 30 // 100
    n_screens = events * 8 // 100
    n_identifies = events * 6 // 100
    n_aliases = max(events // 1000, 10)
    n_orders = max(events // 50, 10)
    n_refunds = max(n_orders // 10, 2)
    anons = max(events // 10, 10)
    users = max(anons * 4 // 10, 5)
    con = duckdb.connect(str(path))
    common = f"""
        cast(to_timestamp(1714953600 + (i * 37) % (30 * 86400)) as timestamptz) as "timestamp",
        cast(to_timestamp(1714953600 + (i * 37) % (30 * 86400) + 1) as timestamptz) as received_at,
        cast(to_timestamp(1714953600 + (i * 37) % (30 * 86400)) as timestamptz) as sent_at,
        cast(to_timestamp(1714953600 + (i * 37) % (30 * 86400)) as timestamptz) as original_timestamp,
        case when i % 2 = 0 then 'src_web' else 'src_ios' end as source_id,
        now() as uuid_ts,
        {load_id}::bigint as load_id,
        'analytics.js' as context_library_name,
        '203.0.113.' || (i % 250) as context_ip
    """
    anon = f"'anon-' || ((i * 7919) % {anons})"
    user = f"case when i % 3 = 0 then 'user-' || (((i * 7919) % {anons}) % {users}) end"
    con.execute("create schema if not exists segment")
    con.execute(f"""create or replace table segment.tracks as select 't-' || i as id, {anon} as anonymous_id,
        {user} as user_id, {common},
        case when i < {n_orders} then 'order_completed' when i < {n_orders + n_refunds} then 'order_refunded'
             else 'product_viewed' end as event,
        case when i < {n_orders} then 'Order Completed' when i < {n_orders + n_refunds} then 'Order Refunded'
             else 'Product Viewed' end as event_text
        from range({n_tracks}) r(i)""")
    con.execute("""create or replace table segment.order_completed as select * exclude (i),
        'ord-' || i as order_id, 20.0 + (i % 100) as subtotal, 25.0 + (i % 100) as total,
        20.0 + (i % 100) as revenue, 2.0 as tax, 3.0 as shipping, 0.0 as discount,
        case when i % 5 = 0 then 'EUR' else 'USD' end as currency,
        cast('[{"product_id":"p-' || (i % 40) || '","sku":"s","name":"n","price":' || (20 + i % 100)
             || ',"quantity":1,"category":"c"}]' as json) as products
        from (select *, cast(substr(id, 3) as bigint) as i from segment.tracks where event = 'order_completed')""")
    con.execute(f"""create or replace table segment.order_refunded as select * exclude (i),
        'ord-' || (i * 3 % {n_orders}) as order_id, case when i % 4 = 0 then null else 5.0 end as total,
        'USD' as currency
        from (select *, cast(substr(id, 3) as bigint) as i from segment.tracks where event = 'order_refunded')""")
    con.execute(f"""create or replace table segment.pages as select 'p-' || i as id, {anon} as anonymous_id,
        {user} as user_id, {common}, 'Home' as name, '/' as path, 'Example' as title,
        'https://shop.example.com/' as url from range({n_pages}) r(i)""")
    con.execute(f"""create or replace table segment.screens as select 's-' || i as id, {anon} as anonymous_id,
        {user} as user_id, {common}, 'Home' as name from range({n_screens}) r(i)""")
    con.execute(f"""create or replace table segment.identifies as select 'i-' || i as id, {anon} as anonymous_id,
        'user-' || (((i * 7919) % {anons}) % {users}) as user_id, {common},
        'u' || i || '@example.com' as email, 'free' as plan from range({n_identifies}) r(i)""")
    con.execute(f"""create or replace table segment.aliases as select 'a-' || i as id, null::varchar as anonymous_id,
        'user-' || ((i * 2 + 1) % {users}) as user_id, {common},
        'user-' || ((i * 2) % {users}) as previous_id from range({n_aliases}) r(i)""")
    con.close()
