"""PII controls: drop and hash at load time, before anything is written; the raw values are
nowhere in the database file, not even in rejects, discards or violations."""

import hashlib
import json

import duckdb
import pytest
from conftest import SAMPLE, cli, event, query, run_load, write_ndjson

from loader.errors import UsageError
from loader.pii import parse_policy

SALT = "pepper"
EMAIL, PHONE, IP = "alice.pii@example.com", "+1-555-0199", "203.0.113.99"
CONFIG = {"salt": SALT, "hash": ["email"], "drop": ["phone", "context.ip"]}


def sha(value: str) -> str:
    return hashlib.sha256((SALT + value).encode()).hexdigest()


def config_file(tmp_path, doc=CONFIG, name="pii.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def pii_messages():
    """PII in every place a value can end up: columns, users, a reject of each kind, a
    blocked event and a discarded value."""
    context = {"ip": IP, "traits": {"email": EMAIL, "phone": PHONE}}
    return [
        event(1, type="identify", traits={"email": EMAIL, "phone": PHONE, "plan": "pro"}, context=context),
        event(2, event="Order Completed", properties={"email": EMAIL, "total": 5}, context=context),
        event(3, event="Order Completed", properties={"email": EMAIL, "total": "lots"}, context=context),
        event(5, properties={"email": EMAIL, "n": "many"}),  # a discard: n is BIGINT by now
        f'{{"messageId": "m6", "email": "{EMAIL}", "phone": "{PHONE}", broken',  # not JSON
        json.dumps({"type": "track", "event": "X", "userId": "u", "properties": {"email": EMAIL}}),  # no messageId
        json.dumps(event(8, properties={"email": EMAIL, "pad": "x" * 3000})),  # oversized
        b'{"messageId": "m9", "email": "' + EMAIL.encode() + b'", "bad": "\xff"}',  # not UTF-8
    ]


def load_with_pii(tmp_path, db, pii=True, **options):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"rules": {"events": [{"name": "Order Completed", "rules": {"properties": {
        "properties": {"total": {"type": "number"}}}}}]}}))
    first = write_ndjson(tmp_path / "a.ndjson", [event(4, properties={"email": EMAIL, "n": 1})])
    archive = write_ndjson(tmp_path / "b.ndjson", pii_messages())
    result = run_load([first, archive], db, max_reject_ratio=1.0, max_event_bytes=2000, tracking_plan=str(plan),
                      on_violation="block", pii_config=str(config_file(tmp_path)) if pii else None, **options)
    s = result.summary()
    assert s["files_loaded"] == 2, result.files
    assert (s["lines"], s["rows_loaded"], s["rejects"], s["blocked"], s["discards"]) == (9, 4, 5, 1, 1)


def database_bytes(db) -> bytes:
    con = duckdb.connect(str(db))
    con.execute("CHECKPOINT")
    con.close()
    data = db.read_bytes()
    wal = db.with_name(db.name + ".wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def test_raw_pii_is_nowhere_in_the_database_file(tmp_path, db):
    # Control: without the config the same bytes search finds every raw value, so the check
    # below can see them when they are there.
    plain = tmp_path / "plain.duckdb"
    load_with_pii(tmp_path, plain, pii=False)
    raw = database_bytes(plain)
    for value in (EMAIL, PHONE, IP):
        assert value.encode() in raw, value

    load_with_pii(tmp_path, db)
    scrubbed = database_bytes(db)
    for value in (EMAIL, PHONE, IP, "alice.pii", "555-0199", "113.99"):
        assert value.encode() not in scrubbed, value
    # ...while what the policy keeps is there: the hashes, and the rejects and violations
    assert query(db, "SELECT reason FROM _loader.rejects ORDER BY line") == [
        ("tracking_plan_violation",), ("malformed_json",), ("missing_message_id",), ("oversized",), ("invalid_utf8",)]
    assert query(db, "SELECT offending_value FROM _loader.violations WHERE rule = 'type'") == [("lots",)]
    assert query(db, "SELECT raw_value FROM _loader.discards") == [("many",)]


def test_hash_and_drop_in_columns_and_users(tmp_path, db):
    load_with_pii(tmp_path, db)
    assert query(db, "SELECT email, context_traits_email, plan FROM segment.identifies") == [
        (sha(EMAIL), sha(EMAIL), "pro")]
    assert query(db, "SELECT email FROM segment.users") == [(sha(EMAIL),)]
    assert query(db, "SELECT email FROM segment.order_completed") == [(sha(EMAIL),)]
    columns = {r[0] for r in query(db, "SELECT DISTINCT column_name FROM information_schema.columns "
                                       "WHERE table_schema = 'segment'")}
    assert not {"phone", "context_ip", "context_traits_phone"} & columns  # dropped: never a column
    # a hash can be joined with one computed in SQL from the same salt
    assert query(db, f"SELECT sha256('{SALT}' || '{EMAIL}') = email FROM segment.users") == [(True,)]


def test_rejected_lines_are_scrubbed_the_same_way(tmp_path, db):
    load_with_pii(tmp_path, db)
    rejects = dict(query(db, "SELECT reason, raw FROM _loader.rejects"))
    blocked = json.loads(rejects["tracking_plan_violation"])
    assert blocked["properties"]["email"] == sha(EMAIL) and "ip" not in blocked["context"]
    assert blocked["context"]["traits"] == {"email": sha(EMAIL)}
    assert json.loads(rejects["missing_message_id"])["properties"]["email"] == sha(EMAIL)
    assert json.loads(rejects["oversized"])["properties"]["email"] == sha(EMAIL)
    # not JSON: "key": value of every configured key is redacted
    assert rejects["malformed_json"] == b'{"messageId": "m6", "email": "[redacted]", "phone": "[redacted]", broken'
    assert rejects["invalid_utf8"] == b'{"messageId": "m9", "email": "[redacted]", "bad": "\xff"}'


def test_lines_without_pii_keep_their_bytes(tmp_path, db):
    config = config_file(tmp_path)
    line = '{"messageId": "m1",   "type": "track", "userId": "u", "event": "E", "properties": {"n": 1e3}}'
    archive = write_ndjson(tmp_path / "in.ndjson", [line, '{"messageId": "m2", "type": "teleport", "userId": "u"}'])
    run_load([archive], db, pii_config=str(config), max_reject_ratio=1.0)
    assert query(db, "SELECT decode(raw) FROM _loader.rejects") == [('{"messageId": "m2", "type": "teleport", "userId": "u"}',)]
    assert query(db, "SELECT n FROM segment.e") == [(1000.0,)]


def test_rules_scoped_to_events_and_calls(tmp_path, db):
    config = config_file(tmp_path, {"rules": [
        {"path": "properties.coupon", "action": "drop", "events": ["Order Completed"]},
        {"path": "traits.address.street", "action": "drop", "calls": ["identify"]},
    ]})
    messages = [
        event(1, event="Order Completed", properties={"coupon": "SECRET", "total": 1}),
        event(2, event="Coupon Shown", properties={"coupon": "PUBLIC"}),
        event(3, type="identify", traits={"address": {"street": "1 Main St", "city": "Springfield"}}),
        event(4, type="group", groupId="g", traits={"address": {"street": "2 Office Rd"}}),
    ]
    run_load([write_ndjson(tmp_path / "in.ndjson", messages)], db, pii_config=str(config))
    assert query(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'order_completed' "
                     "AND column_name = 'coupon'") == [(0,)]
    assert query(db, "SELECT coupon FROM segment.coupon_shown") == [("PUBLIC",)]
    assert query(db, "SELECT address_city FROM segment.identifies") == [("Springfield",)]
    assert query(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'identifies' "
                     "AND column_name = 'address_street'") == [(0,)]
    assert query(db, "SELECT address_street FROM segment.groups") == [("2 Office Rd",)]


def test_hashing_twice_changes_nothing(tmp_path, db):
    policy = parse_policy(CONFIG)
    import pyarrow as pa

    from loader.normalize import compute_connection
    from loader.pii import scrub_lines

    con = compute_connection()
    lines = pa.table({"line_no": pa.array([1], pa.int64()),
                      "raw": [json.dumps(event(1, type="identify", traits={"email": EMAIL, "n": 123456789012345678901234567890}))]})
    once = scrub_lines(con, policy, lines)
    twice = scrub_lines(con, policy, once)
    assert once["raw"].to_pylist() == twice["raw"].to_pylist()
    traits = json.loads(once["raw"][0].as_py())["traits"]
    assert traits == {"email": sha(EMAIL), "n": 123456789012345678901234567890}  # big numbers kept exact


def test_salt_from_the_environment_and_yaml_config(tmp_path, db):
    yaml_config = tmp_path / "pii.yaml"
    yaml_config.write_text("hash:\n  - email\n")
    archive = write_ndjson(tmp_path / "in.ndjson", [event(1, type="identify", traits={"email": EMAIL})])
    no_salt = cli("load", str(archive), "--db", str(db), "--pii-config", str(yaml_config),
                  env={"SEGMENT_LOADER_PII_SALT": ""})
    assert no_salt.returncode == 2 and "hashing needs a salt" in no_salt.stderr
    proc = cli("load", str(archive), "--db", str(db), "--pii-config", str(yaml_config),
               env={"SEGMENT_LOADER_PII_SALT": SALT})
    assert proc.returncode == 0, proc.stderr
    assert query(db, "SELECT email FROM segment.identifies") == [(sha(EMAIL),)]


@pytest.mark.parametrize("doc, message", [
    ({"drop": ["properties"]}, "names a whole root"),
    ({"hash": ["email"]}, "needs a salt"),
    ({"rules": [{"path": "email", "action": "mask"}]}, "drop or hash"),
    ({"rules": [{"path": "email", "action": "drop", "calls": ["click"]}]}, "calls must be"),
    ({"remove": ["email"]}, "unknown key"),
])
def test_bad_configs_are_usage_errors(doc, message):
    with pytest.raises(UsageError, match=message):
        parse_policy(doc, env={})


def test_sample_pii_config(tmp_path, db):
    run_load([SAMPLE / "segment-logs"], db, pii_config=str(SAMPLE / "pii.json"))
    assert query(db, "SELECT count(*) FROM segment.users WHERE email LIKE '%@%'") == [(0,)]
    assert query(db, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'segment' "
                     "AND column_name IN ('context_ip', 'context_traits_phone', 'phone', 'last_name')") == [(0,)]
    assert b"alice@example.com" not in database_bytes(db)
