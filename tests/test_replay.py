"""Replay: events blocked by a tracking plan load once the plan is fixed, in one transaction
with their removal from the rejects; every line stays accounted for."""

import json
import os
import subprocess
import sys

from conftest import REPO, event, query, run_load, table_snapshot, write_ndjson

from loader import LoadConfig
from loader.replay import replay

STRICT = {"type": "object", "properties": {"currency": {"enum": ["USD", "EUR"]}}}
FIXED = {"type": "object", "properties": {"currency": {"enum": ["USD", "EUR", "GBP"]}}}


def plan(tmp_path, schema, name="strict.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"rules": {
        "events": [{"name": "Order Completed", "rules": {"properties": schema}}],
        "identify": {"traits": {"properties": {"plan": {"enum": ["free", "pro"]}}}}}}))
    return str(path)


def archive(tmp_path):
    """Two files; GBP orders and an identify with an unknown plan violate the strict plan."""
    a = [event(i, event="Order Completed", userId=f"u{i}", properties={"currency": c, "total": i})
         for i, c in enumerate(["USD", "GBP", "EUR", "GBP"])]
    b = [event(10, type="identify", userId="u10", traits={"plan": "enterprise"}),
         event(11, event="Order Completed", properties={"currency": "GBP", "total": 2.5}),
         event(1, event="Order Completed", userId="u1", properties={"currency": "GBP", "total": 1}),  # a duplicate
         "not json"]
    return [write_ndjson(tmp_path / "logs" / "a.ndjson", a), write_ndjson(tmp_path / "logs" / "b.ndjson", b)]


def manifest_balances(db):
    for lines, rows, dups, rejects in query(db, "SELECT lines, rows_loaded, duplicates, rejects FROM _loader.files"):
        assert lines == rows + dups + rejects


def config(db, **options):
    return LoadConfig(db_path=str(db), **options)


def test_replay_after_fixing_the_plan_loads_the_blocked_events(tmp_path, db):
    run_load(archive(tmp_path), db, tracking_plan=plan(tmp_path, STRICT), on_violation="block", max_reject_ratio=1.0)
    # blocked: m1 and m3 (GBP), the identify, m11, and m1's copy in file b (m1 was not loaded)
    assert query(db, "SELECT reason, count(*) FROM _loader.rejects GROUP BY 1 ORDER BY 1") == [
        ("malformed_json", 1), ("tracking_plan_violation", 5)]
    assert query(db, "SELECT count(*) FROM _loader.violations WHERE action = 'block'") == [(5,)]
    manifest_balances(db)

    result = replay(config(db, tracking_plan=plan(tmp_path, FIXED, "fixed.json"), on_violation="block"))
    s = result.summary()
    # the identify breaks a rule the fixed plan keeps: blocked again; m1's copy in file b is a
    # duplicate now that the first copy is loaded
    assert (s["lines"], s["rows_loaded"], s["duplicates"], s["rejects"], s["blocked"]) == (5, 3, 1, 1, 1)
    assert query(db, "SELECT reason, count(*) FROM _loader.rejects GROUP BY 1 ORDER BY 1") == [
        ("malformed_json", 1), ("tracking_plan_violation", 1)]
    assert query(db, "SELECT count(*) FROM _loader.violations WHERE action = 'block'") == [(1,)]
    assert query(db, "SELECT id, currency FROM segment.order_completed ORDER BY id") == [
        ("m0", "USD"), ("m1", "GBP"), ("m11", "GBP"), ("m2", "EUR"), ("m3", "GBP")]
    assert query(db, "SELECT count(*) FROM segment.tracks") == [(5,)]
    # replayed rows carry the replay's load id, so incremental models pick them up
    assert query(db, "SELECT DISTINCT load_id FROM segment.order_completed WHERE currency = 'GBP'") == [
        (result.load_id,)]
    assert query(db, "SELECT count(*) - count(DISTINCT message_id) FROM _loader.seen_messages") == [(0,)]
    manifest_balances(db)


def test_replay_with_the_same_plan_changes_nothing_but_the_load_id(tmp_path, db):
    strict = plan(tmp_path, STRICT)
    run_load(archive(tmp_path), db, tracking_plan=strict, on_violation="block", max_reject_ratio=1.0)
    before = query(db, "SELECT file_id, line, reason, raw FROM _loader.rejects ORDER BY 1, 2")
    s = replay(config(db, tracking_plan=strict, on_violation="block")).summary()
    assert (s["rows_loaded"], s["rejects"], s["blocked"]) == (0, 5, 5)
    assert query(db, "SELECT file_id, line, reason, raw FROM _loader.rejects ORDER BY 1, 2") == before
    assert query(db, "SELECT count(*) FROM _loader.violations WHERE action = 'block'") == [(5,)]
    manifest_balances(db)


def test_replay_without_a_plan_equals_a_load_without_one(tmp_path, db):
    paths = archive(tmp_path)
    run_load(paths, db, tracking_plan=plan(tmp_path, STRICT), on_violation="block", max_reject_ratio=1.0)
    replay(config(db))
    clean = tmp_path / "clean.duckdb"
    run_load(paths, clean, max_reject_ratio=1.0)
    assert table_snapshot(db) == table_snapshot(clean)
    assert query(db, "SELECT reason FROM _loader.rejects") == [("malformed_json",)]
    manifest_balances(db)


def test_replay_of_a_message_loaded_meanwhile_counts_it_as_a_duplicate(tmp_path, db):
    strict = plan(tmp_path, STRICT)
    gbp = event(1, event="Order Completed", properties={"currency": "GBP"})
    run_load([write_ndjson(tmp_path / "a.ndjson", [gbp])], db, tracking_plan=strict, on_violation="block")
    run_load([write_ndjson(tmp_path / "b.ndjson", [gbp, event(2)])], db)  # the same message, no plan
    s = replay(config(db)).summary()
    assert (s["rows_loaded"], s["duplicates"], s["rejects"]) == (0, 1, 0)
    assert query(db, "SELECT count(*) FROM _loader.rejects") == [(0,)]
    manifest_balances(db)


def test_replay_applies_the_pii_config_without_hashing_twice(tmp_path, db):
    pii = tmp_path / "pii.json"
    pii.write_text(json.dumps({"salt": "s", "hash": ["email"], "drop": ["phone"]}))
    strict = plan(tmp_path, STRICT)
    message = event(1, event="Order Completed", properties={"currency": "GBP", "email": "a@b.c"})
    run_load([write_ndjson(tmp_path / "a.ndjson", [message])], db, tracking_plan=strict, on_violation="block",
             pii_config=str(pii))
    (hashed,) = query(db, "SELECT json_extract_string(decode(raw), '$.properties.email') FROM _loader.rejects")[0]
    replay(config(db, pii_config=str(pii)))
    assert query(db, "SELECT email FROM segment.order_completed") == [(hashed,)]


def test_replay_is_one_transaction_per_file_and_survives_a_kill(tmp_path, db):
    run_load(archive(tmp_path), db, tracking_plan=plan(tmp_path, STRICT), on_violation="block", max_reject_ratio=1.0)
    fixed = plan(tmp_path, FIXED, "fixed.json")
    command = [sys.executable, "-m", "loader", "replay", "--db", str(db), "--tracking-plan", fixed,
               "--on-violation", "block", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "SEGMENT_LOADER_CRASH_AT"}
    killed = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**env, "SEGMENT_LOADER_CRASH_AT": "before_commit:2"})
    assert killed.returncode == -9
    # the first file's replay committed, the second's rolled back: still every line accounted for
    assert query(db, "SELECT count(*) FROM _loader.rejects WHERE reason = 'tracking_plan_violation'") == [(3,)]
    manifest_balances(db)
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows_loaded"] == 1  # the identify stays blocked
    clean = tmp_path / "clean.duckdb"
    run_load(archive(tmp_path), clean, tracking_plan=fixed, on_violation="block", max_reject_ratio=1.0)
    assert table_snapshot(db) == table_snapshot(clean)
    assert query(db, "SELECT status FROM _loader.loads ORDER BY load_id") == [
        ("succeeded",), ("interrupted",), ("succeeded",)]


def test_cli_replay_by_reason(tmp_path, db):
    from conftest import cli

    run_load(archive(tmp_path), db, tracking_plan=plan(tmp_path, STRICT), on_violation="block", max_reject_ratio=1.0)
    proc = cli("replay", "--db", str(db), "--reason", "malformed_json")
    assert proc.returncode == 0, proc.stderr
    assert "1 rejected line(s) of 1 file(s) replayed" in proc.stdout and "rejected again 1" in proc.stdout
    assert query(db, "SELECT reason, count(*) FROM _loader.rejects GROUP BY 1 ORDER BY 1") == [
        ("malformed_json", 1), ("tracking_plan_violation", 5)]
    proc = cli("replay", "--db", str(db))
    assert proc.returncode == 0 and "rows 4 + duplicates 1 + rejected again 0" in proc.stdout
    manifest_balances(db)
