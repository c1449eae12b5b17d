"""Tracking plans: every JSON Schema keyword the plan format uses, allow vs block, unplanned
events, identify traits, plan formats and the CLI, all through real loads into DuckDB files."""

import json

import pytest
from conftest import REPO, SAMPLE, cli, event, query, run_load, write_ndjson

from loader.errors import UsageError
from loader.protocols import parse_plan

VIOLATIONS = ("SELECT table_name, event, property_path, rule, offending_value, action "
              "FROM _loader.violations ORDER BY line, property_path, rule")


def plan_file(tmp_path, properties_schema, name="Order Completed", **event_options):
    plan = {"rules": {"events": [{"name": name, "rules": {"properties": properties_schema}, **event_options}]}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def order(i, **props):
    return event(i, event="Order Completed", properties=props)


def load_checked(tmp_path, db, schema, messages, **options):
    plan = plan_file(tmp_path, schema)
    archive = write_ndjson(tmp_path / "in.ndjson", messages)
    result = run_load([archive], db, tracking_plan=str(plan), max_reject_ratio=1.0, **options)
    (f,) = result.files
    assert f.status == "loaded", f.reason
    assert f.lines == f.rows_loaded + f.duplicates + f.rejects == len(messages)
    return f


def prop(schema):
    """A plan whose only rule is on property `p`."""
    return {"type": "object", "properties": {"p": schema}}


PRODUCTS = {"type": "object", "properties": {"products": {"type": "array", "items": {
    "type": "object", "required": ["product_id", "price"], "additionalProperties": False,
    "properties": {"product_id": {"type": "string"}, "price": {"type": "number", "minimum": 0}}}}}}

# (keyword, properties schema, properties that pass, properties that violate,
#  the violation: (property path, rule, offending value))
KEYWORDS = [
    ("type string", prop({"type": "string"}), {"p": "x"}, {"p": 5}, ("/properties/p", "type", "5")),
    ("type number", prop({"type": "number"}), {"p": 2.5}, {"p": "2.5"}, ("/properties/p", "type", "2.5")),
    ("type integer", prop({"type": "integer"}), {"p": 3.0}, {"p": 3.5}, ("/properties/p", "type", "3.5")),
    ("integer is a number", prop({"type": "number"}), {"p": 3}, {"p": True}, ("/properties/p", "type", "true")),
    ("type boolean", prop({"type": "boolean"}), {"p": False}, {"p": "false"}, ("/properties/p", "type", "false")),
    ("type array", prop({"type": "array"}), {"p": [1]}, {"p": {"a": 1}}, ("/properties/p", "type", None)),
    ("type object", prop({"type": "object"}), {"p": {"a": 1}}, {"p": [1]}, ("/properties/p", "type", "[1]")),
    ("type list with null", prop({"type": ["string", "null"]}), {"p": None}, {"p": 1}, ("/properties/p", "type", "1")),
    ("required", {"type": "object", "required": ["p"]}, {"p": 1}, {"q": 1}, ("/properties/p", "required", None)),
    ("required but null", {"type": "object", "required": ["p"]}, {"p": 0}, {"p": None}, ("/properties/p", "required", None)),
    ("nested properties and required",
     {"type": "object", "properties": {"addr": {"type": "object", "required": ["zip"],
                                                "properties": {"zip": {"type": "string"}}}}},
     {"addr": {"zip": "10115"}}, {"addr": {"city": "Berlin"}}, ("/properties/addr/zip", "required", None)),
    ("nested type", {"type": "object", "properties": {"addr": {"properties": {"zip": {"type": "string"}}}}},
     {"addr": {"zip": "10115"}}, {"addr": {"zip": 10115}}, ("/properties/addr/zip", "type", "10115")),
    ("items type", PRODUCTS, {"products": [{"product_id": "a", "price": 1}]},
     {"products": [{"product_id": "a", "price": 1}, {"product_id": "b", "price": "9.99"}]},
     ("/properties/products/1/price", "type", "9.99")),
    ("items required", PRODUCTS, {"products": []}, {"products": [{"product_id": "a"}]},
     ("/properties/products/0/price", "required", None)),
    ("items minimum", PRODUCTS, {"products": [{"product_id": "a", "price": 0}]},
     {"products": [{"product_id": "a", "price": -1}]}, ("/properties/products/0/price", "minimum", "-1")),
    ("items additionalProperties", PRODUCTS, {"products": [{"product_id": "a", "price": 1}]},
     {"products": [{"product_id": "a", "price": 1, "colour": "red"}]},
     ("/properties/products/0/colour", "additionalProperties", "red")),
    ("items not an object", PRODUCTS, {"products": [{"product_id": "a", "price": 1}]}, {"products": ["a"]},
     ("/properties/products/0", "type", "a")),
    ("enum", prop({"enum": ["USD", "EUR"]}), {"p": "EUR"}, {"p": "GBP"}, ("/properties/p", "enum", "GBP")),
    ("enum of numbers", prop({"enum": [1, 2]}), {"p": 2.0}, {"p": 3}, ("/properties/p", "enum", "3")),
    ("const", prop({"const": "x"}), {"p": "x"}, {"p": "y"}, ("/properties/p", "const", "y")),
    ("pattern", prop({"pattern": "^ORD-\\d{4}$"}), {"p": "ORD-1234"}, {"p": "ord-1"}, ("/properties/p", "pattern", "ord-1")),
    ("minimum", prop({"minimum": 0}), {"p": 0}, {"p": -0.5}, ("/properties/p", "minimum", "-0.5")),
    ("maximum", prop({"maximum": 5}), {"p": 5}, {"p": 6}, ("/properties/p", "maximum", "6")),
    ("exclusiveMinimum", prop({"exclusiveMinimum": 0}), {"p": 0.01}, {"p": 0}, ("/properties/p", "exclusiveMinimum", "0")),
    ("minLength", prop({"minLength": 2}), {"p": "ab"}, {"p": "a"}, ("/properties/p", "minLength", "a")),
    ("maxLength counts characters", prop({"maxLength": 3}), {"p": "Ñäé"}, {"p": "abcd"}, ("/properties/p", "maxLength", "abcd")),
    ("format date-time", prop({"format": "date-time"}), {"p": "2024-05-06T16:02:00.150Z"},
     {"p": "2024-02-30T10:00:00Z"}, ("/properties/p", "format", "2024-02-30T10:00:00Z")),
    ("format date-time needs a zone", prop({"format": "date-time"}), {"p": "2024-05-06T16:02:00+02:00"},
     {"p": "2024-05-06 16:02"}, ("/properties/p", "format", "2024-05-06 16:02")),
    ("additionalProperties", {"type": "object", "additionalProperties": False, "properties": {"p": {}}},
     {"p": 1}, {"p": 1, "q": "extra"}, ("/properties/q", "additionalProperties", "extra")),
    ("additionalProperties on an object", {"type": "object", "additionalProperties": False, "properties": {"p": {}}},
     {"p": {"a": 1}}, {"p": 1, "meta": {"a": 1}}, ("/properties/meta", "additionalProperties", None)),
    ("minItems", prop({"type": "array", "minItems": 1}), {"p": [1]}, {"p": []}, ("/properties/p", "minItems", "[]")),
]


@pytest.mark.parametrize("keyword, schema, good, bad, violation", KEYWORDS, ids=[k[0] for k in KEYWORDS])
def test_each_keyword_records_its_violation(tmp_path, db, keyword, schema, good, bad, violation):
    f = load_checked(tmp_path, db, schema, [order(1, **good), order(2, **bad)])
    assert f.rows_loaded == 2 and f.violations == 1  # allow: both load, the bad one is recorded
    assert query(db, "SELECT line, message_id, property_path, rule, offending_value, action, event, "
                     "table_name FROM _loader.violations") == [
        (2, "m2", *violation, "allow", "Order Completed", "order_completed")]


def test_allow_loads_everything_and_records_every_violation(tmp_path, db):
    schema = {"type": "object", "required": ["total"], "properties": {
        "total": {"type": "number"}, "currency": {"enum": ["USD"]}}}
    f = load_checked(tmp_path, db, schema, [order(1, total=1, currency="USD"), order(2, currency="GBP"),
                                            order(3, total="x", currency="EUR")])
    assert (f.rows_loaded, f.rejects, f.violations, f.blocked) == (3, 0, 4, 0)
    assert query(db, VIOLATIONS) == [
        ("order_completed", "Order Completed", "/properties/currency", "enum", "GBP", "allow"),
        ("order_completed", "Order Completed", "/properties/total", "required", None, "allow"),
        ("order_completed", "Order Completed", "/properties/currency", "enum", "EUR", "allow"),
        ("order_completed", "Order Completed", "/properties/total", "type", "x", "allow"),
    ]
    assert query(db, "SELECT count(*) FROM segment.order_completed") == [(3,)]


def test_block_moves_violating_events_to_rejects_with_their_raw_bytes(tmp_path, db):
    schema = {"type": "object", "properties": {"rating": {"type": "number"}}}
    good, bad = order(1, rating=4), order(2, rating="N/A")
    f = load_checked(tmp_path, db, schema, [good, bad, order(3, rating=5)], on_violation="block")
    assert (f.rows_loaded, f.duplicates, f.rejects, f.blocked, f.violations) == (2, 0, 1, 1, 1)
    assert query(db, "SELECT line, reason, decode(raw), detail FROM _loader.rejects") == [
        (2, "tracking_plan_violation", json.dumps(bad),
         "1 violation(s) of the tracking plan for Order Completed: /properties/rating type")]
    assert query(db, "SELECT id FROM segment.order_completed ORDER BY id") == [("m1",), ("m3",)]
    assert query(db, "SELECT id FROM segment.tracks ORDER BY id") == [("m1",), ("m3",)]
    assert query(db, "SELECT count(*) FROM _loader.seen_messages WHERE message_id = 'm2'") == [(0,)]
    # the blocked value never typed the column: no VARCHAR widening, no discard
    assert query(db, "SELECT data_type FROM information_schema.columns WHERE table_name = 'order_completed' "
                     "AND column_name = 'rating'") == [("BIGINT",)]
    assert query(db, "SELECT count(*) FROM _loader.discards") == [(0,)]
    assert query(db, VIOLATIONS) == [
        ("order_completed", "Order Completed", "/properties/rating", "type", "N/A", "block")]
    assert query(db, "SELECT lines, rows_loaded, duplicates, rejects FROM _loader.files") == [(3, 2, 0, 1)]


def test_an_event_whose_rows_are_all_blocked_creates_no_table(tmp_path, db):
    f = load_checked(tmp_path, db, {"type": "object", "required": ["x"]}, [order(1), event(2)],
                     on_violation="block")
    assert (f.rows_loaded, f.blocked) == (1, 1)
    tables = {r[0] for r in query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'segment'")}
    assert "order_completed" not in tables and "signed_up" in tables
    assert query(db, "SELECT count(*) FROM _loader.name_map WHERE name = 'order_completed'") == [(0,)]


def test_per_event_on_violation_overrides_the_option(tmp_path, db):
    plan = {"rules": {"events": [
        {"name": "Order Completed", "on_violation": "block",
         "rules": {"properties": {"required": ["total"]}}},
        {"name": "Signed Up", "rules": {"properties": {"required": ["total"]}}},
    ]}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    archive = write_ndjson(tmp_path / "in.ndjson", [order(1), event(2)])
    (f,) = run_load([archive], db, tracking_plan=str(path), max_reject_ratio=1.0).files
    assert (f.rows_loaded, f.blocked, f.violations) == (1, 1, 2)
    assert query(db, "SELECT event, action FROM _loader.violations ORDER BY line") == [
        ("Order Completed", "block"), ("Signed Up", "allow")]


@pytest.mark.parametrize("unplanned", ["allow", "block"])
def test_unplanned_events(tmp_path, db, unplanned):
    messages = [order(1, total=1), event(2, event="Coupon Applied"), event(3, event="order completed")]
    f = load_checked(tmp_path, db, {}, messages, unplanned_events=unplanned)
    assert query(db, "SELECT line, property_path, rule, offending_value, action FROM _loader.violations ORDER BY line") == [
        (2, "/event", "unplanned_event", "Coupon Applied", unplanned),
        (3, "/event", "unplanned_event", "order completed", unplanned),  # names match exactly
    ]
    if unplanned == "allow":
        assert (f.rows_loaded, f.rejects) == (3, 0)
    else:
        assert (f.rows_loaded, f.rejects, f.blocked) == (1, 2, 2)
        assert query(db, "SELECT count(*) FROM segment.tracks") == [(1,)]


def test_events_sharing_a_table_are_checked_by_their_own_name(tmp_path, db):
    plan = {"rules": {"events": [{"name": "Order Completed", "on_violation": "block", "rules": {
        "properties": {"properties": {"total": {"type": "number"}}}}}]}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    messages = [order(1, total="x"), event(2, event="order_completed", properties={"total": "x"}), order(3, total=2)]
    archive = write_ndjson(tmp_path / "in.ndjson", messages)
    (f,) = run_load([archive], db, tracking_plan=str(path)).files
    assert (f.rows_loaded, f.blocked) == (2, 1)
    assert query(db, "SELECT line, event, rule, action FROM _loader.violations ORDER BY line") == [
        (1, "Order Completed", "type", "block"), (2, "order_completed", "unplanned_event", "allow")]
    assert query(db, "SELECT id FROM segment.order_completed ORDER BY id") == [("m2",), ("m3",)]


def test_identify_traits_rules(tmp_path, db):
    plan = {"rules": {"events": [], "identify": {"traits": {
        "type": "object", "required": ["email"],
        "properties": {"email": {"type": "string", "format": "email"}, "plan": {"enum": ["free", "pro"]}}}}}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    messages = [
        event(1, type="identify", userId="u1", traits={"email": "a@example.com", "plan": "pro"}),
        event(2, type="identify", userId="u2", traits={"plan": "gold"}),
        event(3, type="identify", userId="u3", traits={"email": "not an address"}),
        event(4, event="Anything"),  # no event rules in the plan: every track event is unplanned
    ]
    archive = write_ndjson(tmp_path / "in.ndjson", messages)
    (f,) = run_load([archive], db, tracking_plan=str(path), on_violation="block").files
    assert (f.rows_loaded, f.blocked) == (2, 2)
    assert query(db, "SELECT line, table_name, property_path, rule, offending_value, action FROM _loader.violations ORDER BY line, rule") == [
        (2, "identifies", "/traits/plan", "enum", "gold", "block"),
        (2, "identifies", "/traits/email", "required", None, "block"),
        (3, "identifies", "/traits/email", "format", "not an address", "block"),
        (4, "anything", "/event", "unplanned_event", "Anything", "allow"),
    ]
    assert query(db, "SELECT id FROM segment.users") == [("u1",)]


def test_group_traits_rules(tmp_path, db):
    plan = {"rules": {"group": {"traits": {"properties": {"employees": {"type": "integer", "minimum": 1}}}}}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    messages = [event(1, type="group", groupId="g1", traits={"employees": 10}),
                event(2, type="group", groupId="g2", traits={"employees": 0})]
    archive = write_ndjson(tmp_path / "in.ndjson", messages)
    run_load([archive], db, tracking_plan=str(path))
    assert query(db, "SELECT table_name, property_path, rule, offending_value FROM _loader.violations") == [
        ("groups", "/traits/employees", "minimum", "0")]


def test_blocked_events_do_not_count_towards_the_reject_ratio(tmp_path, db):
    messages = [order(i, total="x") for i in range(8)] + [order(9, total=1), "not json"]
    plan = plan_file(tmp_path, {"properties": {"total": {"type": "number"}}})
    archive = write_ndjson(tmp_path / "in.ndjson", messages)
    (f,) = run_load([archive], db, tracking_plan=str(plan), on_violation="block").files
    assert f.status == "loaded" and (f.rows_loaded, f.rejects, f.blocked) == (1, 9, 8)


def test_violations_are_recorded_once_per_loaded_row(tmp_path, db):
    plan = plan_file(tmp_path, {"properties": {"total": {"type": "number"}}})
    archive = write_ndjson(tmp_path / "in.ndjson", [order(1, total="x"), order(1, total="x")])
    run_load([archive], db, tracking_plan=str(plan))
    run_load([archive], db, tracking_plan=str(plan), force=True)  # duplicates: not recorded again
    assert query(db, "SELECT count(*) FROM _loader.violations") == [(1,)]


def test_a_big_batch_and_many_events_in_one_query(tmp_path, db):
    plan = {"rules": {"events": [
        {"name": f"E{k}", "rules": {"properties": {"required": ["n"], "properties": {
            "n": {"type": "integer", "maximum": 900}}}}} for k in range(10)]}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    messages = [event(i, event=f"E{i % 12}", properties={"n": i}) for i in range(1000)]
    archive = write_ndjson(tmp_path / "in.ndjson", messages)
    (f,) = run_load([archive], db, tracking_plan=str(path)).files
    expected = sum(1 for i in range(1000) if i % 12 < 10 and i > 900) + sum(1 for i in range(1000) if i % 12 >= 10)
    assert f.violations == expected
    assert query(db, "SELECT rule, count(*) FROM _loader.violations GROUP BY 1 ORDER BY 1") == [
        ("maximum", sum(1 for i in range(901, 1000) if i % 12 < 10)),
        ("unplanned_event", sum(1 for i in range(1000) if i % 12 >= 10))]


def test_sample_plan_reports_the_archive_s_known_problems(db):
    result = run_load([SAMPLE / "segment-logs"], db, tracking_plan=str(SAMPLE / "tracking_plan.json"))
    s = result.summary()
    assert (s["rows_loaded"], s["rejects"], s["blocked"]) == (252, 6, 0)  # allow: the story unchanged
    found = query(db, "SELECT event, property_path, rule, offending_value FROM _loader.violations "
                      "WHERE rule <> 'unplanned_event' ORDER BY 1, 2")
    assert found == [
        ("Order Refunded", "/properties/total", "type", "12.50"),
        ("Product Viewed", "/properties/rating", "type", "N/A"),
        (None, "/traits/Favorite Color", "additionalProperties", "blue"),
    ]
    unplanned = {r[0] for r in query(db, "SELECT event FROM _loader.violations WHERE rule = 'unplanned_event'")}
    assert {"order_completed", "2FA Enabled", "select", "users", "🎉 Confetti Shown"} <= unplanned


def test_sample_plan_with_block(db):
    result = run_load([SAMPLE / "segment-logs"], db, tracking_plan=str(SAMPLE / "tracking_plan.json"),
                      on_violation="block")
    s = result.summary()
    assert (s["rows_loaded"], s["blocked"], s["rejects"]) == (249, 3, 9)
    for f in result.files:
        assert f.lines == f.rows_loaded + f.duplicates + f.rejects
    assert query(db, "SELECT rating FROM segment.product_viewed ORDER BY rating") == [(4,), (4,), (5,), (None,), (None,)]


# --- plan formats and the command line ------------------------------------------------------


def test_plan_formats_top_level_events_config_api_and_yaml(tmp_path, db):
    schema = {"type": "object", "properties": {"total": {"type": "number"}}}
    top_level = {"events": [{"name": "Order Completed", "rules": {"properties": schema}}]}
    config_api = {"rules": {"events": [{"name": "Order Completed", "version": 1, "rules": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "properties": {"context": {}, "traits": {}, "properties": schema}}}]}}
    for doc in (top_level, config_api):
        plan = parse_plan(doc)
        assert plan.events["Order Completed"].schema == schema
    traits = {"type": "object", "required": ["email"]}
    assert parse_plan({"rules": {"identify": {"traits": traits}}}).calls["identify"].schema == traits
    assert parse_plan({"rules": {"identify": {"type": "object", "properties": {"traits": traits}}}}
                      ).calls["identify"].schema == traits
    yaml_plan = tmp_path / "plan.yaml"
    yaml_plan.write_text(
        "rules:\n  events:\n    - name: Order Completed\n      rules:\n        properties:\n"
        "          type: object\n          properties:\n            total: {type: number}\n")
    archive = write_ndjson(tmp_path / "in.ndjson", [order(1, total="x")])
    run_load([archive], db, tracking_plan=str(yaml_plan))
    assert query(db, "SELECT property_path, rule FROM _loader.violations") == [("/properties/total", "type")]


@pytest.mark.parametrize("doc, message", [
    ({"rules": {"events": [{"rules": {}}]}}, "needs a name"),
    ({"rules": {"events": [{"name": "A", "rules": {"properties": {"type": "text"}}}]}}, "type must be one of"),
    ({"rules": {"events": [{"name": "A", "rules": {"properties": {"properties": {"p": {"pattern": "(?=x)"}}}}}]}}, "RE2"),
    ({"rules": {"events": [{"name": "A"}, {"name": "A"}]}}, "listed twice"),
    ({"rules": {"events": [{"name": "A", "on_violation": "drop"}]}}, "on_violation"),
    ({"rules": {"events": [{"name": "A", "rules": {"properties": {"minimum": "0"}}}]}}, "minimum must be a number"),
])
def test_bad_plans_are_usage_errors(doc, message):
    with pytest.raises(UsageError, match=message):
        parse_plan(doc)


def test_unchecked_keywords_are_named_not_silently_dropped():
    plan = parse_plan({"rules": {"events": [{"name": "A", "rules": {"properties": {
        "properties": {"p": {"oneOf": [{"type": "string"}], "format": "hostname", "description": "ok"}}}}}]}})
    assert [w.split(" (at")[0] for w in plan.warnings()] == [
        "tracking plan: 'format hostname' is not checked", "tracking plan: 'oneOf' is not checked"]


def test_cli_load_block_json_status_and_usage_errors(tmp_path, db):
    plan = plan_file(tmp_path, {"properties": {"total": {"type": "number", "minimum": 0}}})
    archive = write_ndjson(tmp_path / "in.ndjson", [order(1, total=5), order(2, total=-5)])
    proc = cli("load", str(archive), "--db", str(db), "--tracking-plan", str(plan), "--on-violation", "block", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["rows_loaded"], out["rejects"], out["blocked"], out["violations"]) == (1, 1, 1, 1)
    status = cli("status", "--db", str(db))
    assert "Tracking plan violations:" in status.stdout and "/properties/total" in status.stdout
    assert json.loads(cli("status", "--db", str(db), "--json").stdout)["violations"] == [{
        "event": "Order Completed", "property_path": "/properties/total", "rule": "minimum", "loaded": 0,
        "blocked": 1, "example": "-5", "expected": ">= 0"}]
    missing = cli("load", str(archive), "--db", str(db), "--tracking-plan", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read the tracking plan" in missing.stderr
    no_plan = cli("load", str(archive), "--db", str(db), "--unplanned-events", "block")
    assert no_plan.returncode == 2 and "needs a tracking plan" in no_plan.stderr
    assert "--tracking-plan" in cli("load", "--help").stdout


def test_status_of_a_database_without_plans_shows_no_violation_section(tmp_path, db):
    run_load([write_ndjson(tmp_path / "in.ndjson", [event(1)])], db)
    assert "Tracking plan" not in cli("status", "--db", str(db)).stdout
    assert (REPO / "sample_data" / "tracking_plan.json").exists()
