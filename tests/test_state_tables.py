"""`users` / `accounts`: each column's latest non-null value by (timestamp, received_at, id),
NULLs ranking last as in a tuple comparison, whatever order the files arrive in."""

from __future__ import annotations

import duckdb

from tests.conftest import event, query, run_load, write_ndjson


def identify(i: str, user: str, traits: dict, **fields) -> dict:
    message = event(i, type="identify", userId=user, traits=traits)
    del message["event"], message["properties"]
    message.update(fields)
    return message


T1, T2 = "2024-03-01T10:00:00.000Z", "2024-03-02T10:00:00.000Z"
R1, R2 = "2024-03-03T10:00:00.000Z", "2024-03-04T10:00:00.000Z"
FIRST = [
    # u1: a later event wins; a NULL in the latest row keeps the earlier value
    identify("a1", "u1", {"plan": "free", "email": "old@x.io"}, timestamp=T1),
    identify("a2", "u1", {"plan": "pro", "email": None}, timestamp=T2),
    # u2: same timestamp, the later receivedAt wins
    identify("b1", "u2", {"plan": "late"}, timestamp=T1, receivedAt=R2),
    identify("b2", "u2", {"plan": "early"}, timestamp=T1, receivedAt=R1),
]
SECOND = [
    # u2: same timestamp and receivedAt as b1: the larger id wins
    identify("b0", "u2", {"plan": "smaller id"}, timestamp=T1, receivedAt=R2),
    # u3: a timestamp that does not parse is NULL, and NULL ranks above every time
    identify("c1", "u3", {"plan": "dated"}, timestamp=T2),
    identify("c2", "u3", {"plan": "undated"}, timestamp="not a time"),
    # u1 again, in a later file but an earlier event: history is not overwritten
    identify("a0", "u1", {"plan": "trial", "email": "older@x.io"}, timestamp="2024-02-01T00:00:00.000Z"),
]


def test_users_take_the_latest_value_per_column(tmp_path, db):
    run_load([write_ndjson(tmp_path / "1.ndjson", FIRST)], db)
    run_load([write_ndjson(tmp_path / "2.ndjson", SECOND)], db)
    assert query(db, "SELECT id, plan, email FROM segment.users ORDER BY id") == [
        ("u1", "pro", "old@x.io"),
        ("u2", "late", None),
        ("u3", "undated", None),
    ]


def test_users_equal_the_tuple_ordered_definition(tmp_path, db):
    """Differential: the loader's rank-based refresh against max_by over the tuple key,
    computed here from the identifies table it loaded, for both file orders."""
    for order in ((FIRST, SECOND), (SECOND, FIRST)):
        target = tmp_path / f"{len(order[0])}.duckdb"
        for k, part in enumerate(order):
            run_load([write_ndjson(tmp_path / f"{id(order)}-{k}.ndjson", part)], target)
        con = duckdb.connect(str(target), read_only=True)
        expected = con.execute(
            "SELECT user_id, max_by(plan, (\"timestamp\", received_at, id)) FILTER (WHERE plan IS NOT NULL), "
            "max_by(email, (\"timestamp\", received_at, id)) FILTER (WHERE email IS NOT NULL) "
            "FROM segment.identifies GROUP BY user_id ORDER BY user_id").fetchall()
        got = con.execute("SELECT id, plan, email FROM segment.users ORDER BY id").fetchall()
        con.close()
        assert got == expected
        assert got[0] == ("u1", "pro", "old@x.io")
