"""End to end: the sample archive through the loader and `dbt build`, then the late archive.

Expected rows in tests/expected/ are worked out by hand from sample_data/README.md, never
produced by running the models. After the late archive, an incremental build must equal a
--full-refresh build, table by table.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import (
    ANALYST_INTERMEDIATE,
    ANALYST_MARTS,
    INTERMEDIATE,
    MARTS,
    REPO,
    SAMPLE_LOGS,
    DbtResult,
    assert_matches_expected,
    copy_db,
    load_archive,
    query,
    run_dbt,
    table_difference,
    write_late_archive,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, DbtResult]]:
    """Load + build, then late load + incremental build, then --full-refresh.

    Every dbt run uses the same database path (so dbt's partial parsing survives); the state
    after each stage is copied aside for the tests. Unit tests run in the first build only
    (they do not read the warehouse).
    """
    work = tmp_path_factory.mktemp("dbt_sample")
    db = work / "warehouse.duckdb"
    load_archive(SAMPLE_LOGS, db)
    first = run_dbt(["build"], db, work)
    first_db = copy_db(db, work / "first.duckdb")
    load_archive(write_late_archive(work / "late_archive"), db)
    late = run_dbt(["build", "--exclude-resource-type", "unit_test"], db, work)
    late_db = copy_db(db, work / "late.duckdb")
    full = run_dbt(["build", "--full-refresh", "--exclude-resource-type", "unit_test"], db, work)
    return {"first": (first_db, first), "late": (late_db, late), "full_refresh": (db, full)}


@pytest.fixture(scope="module")
def first_build(stages):
    return stages["first"]


@pytest.fixture(scope="module")
def late_build(stages):
    return stages["late"]


@pytest.fixture(scope="module")
def full_refresh_build(stages):
    return stages["full_refresh"][0]


def test_first_build_runs_models_data_tests_and_unit_tests(first_build):
    _, result = first_build
    kinds = {}
    for unique_id, status in result.statuses().items():
        kinds.setdefault(unique_id.split(".")[0], []).append(status)
    assert result.not_passing() == {}
    assert len(kinds["model"]) == 35
    assert len(kinds["unit_test"]) >= 24
    assert len(kinds["test"]) >= 260


@pytest.mark.parametrize("mart", MARTS)
def test_marts_match_hand_worked_rows(first_build, mart):
    assert_matches_expected(first_build[0], mart, mart)


def test_net_revenue_by_currency(first_build):
    # USD 34.80 + 32.00 + 32.40 + 86.39 + 25.59 + 64.80; EUR 53.55 + 0 + 0; GBP 24.10 + 60.50
    rows = query(first_build[0], "select currency, sum(net_total) from analytics.orders group by 1 order by 1")
    assert rows == [("EUR", Decimal("53.55")), ("GBP", Decimal("84.60")), ("USD", Decimal("275.98"))]


def test_every_sample_message_is_attributed_except_the_junk_only_ones(first_build):
    rows = query(first_build[0], """
        select attribution_rule, count(*) from analytics_intermediate.int_events_mapped_to_persons
        group by 1 order by 1""")
    rules = dict(rows)
    # two pages carry only junk ids ("null"; "  " + "Undefined")
    assert rules["unattributed"] == 2
    # Carol/Dave's laptop: 2 pages before anyone identified (-> Carol), then 2 (Carol) + 3 (Dave)
    assert rules["shared_device_before_first_identification"] == 2
    assert rules["shared_device_latest_identification"] == 5


@pytest.mark.parametrize("mart", MARTS)
def test_marts_after_the_late_archive_match_hand_worked_rows(late_build, mart):
    assert_matches_expected(late_build[0], mart, f"{mart}_after_late")


def test_late_build_was_incremental_and_read_only_the_new_load(late_build):
    db, result = late_build
    assert result.not_passing() == {}
    # the table's latest load (1) is written into the SQL as a number, so it filters the scans
    assert "where staged.load_id > 1" in result.compiled_code("int_events_unioned")
    # the late archive holds 8 lines; one is a re-delivery the loader dedups
    assert query(db, """select load_id, count(*) from analytics_intermediate.int_events_unioned
                        group by 1 order by 1""") == [(1, 252), (2, 7)]
    # the offline events arrived late with their original event times (Bob's from 05-07,
    # Henry's page view from 05-08)
    assert query(db, """select count(*) from analytics_intermediate.int_events_unioned
                        where load_id = 2 and event_at < timestamptz '2024-05-09 00:00:00+00'""") == [(2,)]


def test_net_revenue_by_currency_after_the_late_archive(late_build):
    # USD: 275.98 - 5.00 (late partial refund of ORD-1001) + 32.40 (ORD-1003)
    rows = query(late_build[0], "select currency, sum(net_total) from analytics.orders group by 1 order by 1")
    assert rows == [("EUR", Decimal("53.55")), ("GBP", Decimal("84.60")), ("USD", Decimal("303.38"))]


@pytest.mark.parametrize("model", MARTS + INTERMEDIATE + ANALYST_MARTS + ANALYST_INTERMEDIATE)
def test_incremental_build_equals_full_refresh(late_build, full_refresh_build, model):
    schema = "analytics" if model in MARTS + ANALYST_MARTS else "analytics_intermediate"
    difference = table_difference(late_build[0], full_refresh_build, f"{schema}.{model}")
    assert difference == (0, 0), f"{model}: rows only incremental / only full refresh = {difference}"


# --- analyst marts (issue 13) -----------------------------------------------------------------

ANALYST_EXPECTED = [
    ("sessions", "sessions"),
    ("funnel_daily", "funnel_daily"),
    ("active_persons_daily", "active_persons_daily"),
    ("identity_graph", "identity_graph"),
    ("orders", "orders_attribution"),
    ("users", "users_attribution"),
]


@pytest.mark.parametrize(("mart", "expected"), ANALYST_EXPECTED)
def test_analyst_marts_match_hand_worked_rows(first_build, mart, expected):
    assert_matches_expected(first_build[0], mart, expected)


@pytest.mark.parametrize(("mart", "expected"), ANALYST_EXPECTED)
def test_analyst_marts_after_the_late_archive_match_hand_worked_rows(late_build, mart, expected):
    assert_matches_expected(late_build[0], mart, f"{expected}_after_late")


def test_the_crawler_is_flagged_by_its_user_agent_and_left_out_of_the_marts(first_build):
    db = first_build[0]
    crawler = "b07b07b0-0000-4000-8000-0000000000b0"
    assert query(db, f"""select count(*), bool_and(is_bot_person), min(bot_reason), min(device_category)
                         from analytics_intermediate.int_events_sessionized
                         where person_id = '{crawler}'""") == [(12, True, "user_agent", "bot")]
    for mart in ("events", "sessions", "page_views"):
        assert query(db, f"select count(*) from analytics.{mart} where person_id = '{crawler}'") == [(0,)]
    # no one else is a bot: every other attributed event is in the events mart
    assert query(db, """select count(*) from analytics_intermediate.int_events_sessionized
                        where not is_bot_person""") == query(db, "select count(*) from analytics.events")


def test_henry_s_ad_click_is_read_from_the_landing_url(first_build):
    rows = query(first_build[0], """select utm_source, utm_medium, utm_campaign, gclid, referrer_host, channel
                                    from analytics.sessions where person_id = 'usr_henry' order by started_at""")
    assert rows == [("google", "cpc", "running_shoes", "EAIaIQobChMI", "www.google.com", "paid_search"),
                    (None, None, None, None, None, "direct")]


def test_every_order_is_placed_in_a_session(first_build):
    assert query(first_build[0], "select count(*), count(session_id) from analytics.orders") == [(11, 11)]


def test_late_build_rebuilt_only_the_sessions_whose_events_changed(late_build):
    _, result = late_build
    assert "kept_sessions" in result.compiled_code("int_events_sessionized")
    # sessions builds only the sessions its pre_hook deleted (changed) or never stored
    assert '"analytics"."sessions" as kept' in result.compiled_code("sessions")


def test_demo_summary_shows_sessions_channels_and_the_funnel(first_build):
    spec = importlib.util.spec_from_file_location("dbt_summary", REPO / "dbt_summary.py")
    dbt_summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dbt_summary)
    text = dbt_summary.summary(str(first_build[0]))
    # 32 sessions of 11 people (sessions.csv): 8 single-event ones, Henry's web+iPhone session
    assert "sessions: 32 by 11 people (8 single-event, 1 across devices)" in text
    assert "top channels (sessions): direct 29, paid_search 2, email 1" in text
    # funnel_daily.csv summed over the three days
    assert "product viewed 6 -> added 1 -> checkout 1 -> ordered 1 (conversion 3.1%)" in text
    assert "bots left out of the analyst marts: 1 (12 events)" in text


def test_incremental_sessions_rebuild_only_persons_whose_events_changed(first_build, tmp_path):
    """Mark every session row, load the late archive, build: only changed persons lose the mark."""
    db = copy_db(first_build[0], tmp_path / "marked.duckdb")
    con = duckdb.connect(str(db))
    try:
        con.execute("update analytics.sessions set device_category = 'marked'")
    finally:
        con.close()
    load_archive(write_late_archive(tmp_path / "late_archive"), db)
    run_dbt(["run", "--select", "+sessions"], db, tmp_path)
    rows = dict(query(db, """select person_id, bool_and(coalesce(device_category, '') = 'marked')
                             from analytics.sessions group by 1"""))
    # untouched by the late archive: the lurker, Carol, Dave, Frank
    assert {p for p, marked in rows.items() if marked} == {
        "10075000-0000-4000-8000-00000000000f", "usr_carol", "usr_dave", "usr_frank"}
    # rebuilt: new or late events (Alice, Bob, Henry), merged persons (Erin, Grace)
    assert {p for p, marked in rows.items() if not marked} == {
        "usr_alice", "usr_bob_legacy", "usr_henry", "usr_erin", "usr_grace"}


def _mart_descriptions(result: DbtResult) -> dict[str, tuple[str, dict[str, str]]]:
    """{mart: (table description, {column: description})} as dbt rendered them (doc blocks)."""
    nodes = json.loads((result.target / "manifest.json").read_text())["nodes"]
    return {
        node["name"]: (node["description"],
                       {c["name"]: c["description"] for c in node["columns"].values()})
        for node in nodes.values()
        if node["resource_type"] == "model" and node["name"] in MARTS + ANALYST_MARTS
    }


def test_persist_docs_writes_every_mart_and_column_description_to_duckdb(first_build):
    db, result = first_build
    described = _mart_descriptions(result)
    assert sorted(described) == sorted(MARTS + ANALYST_MARTS)
    con = duckdb.connect(str(db), read_only=True)
    try:
        for mart, (table_description, columns) in described.items():
            comment = con.execute(
                """select comment from duckdb_tables()
                   where schema_name = 'analytics' and table_name = ?
                   union all
                   select comment from duckdb_views()
                   where schema_name = 'analytics' and view_name = ?""",
                [mart, mart]).fetchall()
            assert comment == [(table_description,)], mart
            assert table_description.strip(), mart
            in_warehouse = dict(con.execute(
                """select column_name, comment from duckdb_columns()
                   where schema_name = 'analytics' and table_name = ?""", [mart]).fetchall())
            # every column of the mart is described in YAML, and that text is its comment
            assert set(in_warehouse) == set(columns), mart
            assert all(text.strip() for text in columns.values()), mart
            assert in_warehouse == columns, mart
    finally:
        con.close()


def _drift(project: Path, model_path: str, column: str) -> None:
    """Wrap a model so `column` becomes text: its SQL no longer matches its contract."""
    sql = project / model_path
    sql.write_text(f"select * replace (cast({column} as varchar) as {column}) from (\n"
                   f"{sql.read_text()}\n) as drifted\n")


def test_a_column_type_drift_fails_the_contract_and_leaves_the_mart_as_it_was(
    first_build, tmp_path,
):
    project = tmp_path / "project"
    for part in ["models", "macros", "seeds", "tests/dbt/singular"]:
        shutil.copytree(REPO / part, project / part)
    for name in ["dbt_project.yml", "profiles.yml"]:
        shutil.copy(REPO / name, project / name)
    _drift(project, "models/marts/users.sql", "order_count")
    _drift(project, "models/marts/analytics/funnel_daily.sql", "session_count")
    db = copy_db(first_build[0], tmp_path / "warehouse.duckdb")
    result = run_dbt(["build", "--select", "users", "funnel_daily"], db, tmp_path / "run",
                     check=False, project=project)
    assert result.returncode != 0
    statuses = result.statuses()
    assert statuses["model.segment_warehouse.users"] == "error"
    assert statuses["model.segment_warehouse.funnel_daily"] == "error"
    for node in result.results:
        if node["unique_id"].startswith("model."):
            assert "contract" in node["message"], node["message"]
    errors = {r["unique_id"].split(".")[-1]: r["message"] for r in result.results}
    assert "order_count" in errors["users"] and "session_count" in errors["funnel_daily"]
    types = query(db, """
        select table_name, data_type from duckdb_columns()
        where schema_name = 'analytics' and (table_name, column_name)
            in (('users', 'order_count'), ('funnel_daily', 'session_count'))
        order by 1""")
    assert types == [("funnel_daily", "BIGINT"), ("users", "BIGINT")]


def _views(db: Path) -> dict[str, tuple]:
    """{schema.view: (DuckDB's SQL text, comment, [(column, type, comment)])} of the project's views."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        views = con.execute("""select schema_name || '.' || view_name, sql, comment from duckdb_views()
                               where not internal and schema_name like 'analytics%'""").fetchall()
        return {name: (sql, comment, con.execute(
            """select column_name, data_type, comment from duckdb_columns()
               where schema_name || '.' || table_name = ? order by column_index""", [name]).fetchall())
            for name, sql, comment in views}
    finally:
        con.close()


def test_a_run_keeps_the_views_that_did_not_change_and_replaces_the_others(first_build, tmp_path):
    """macros/materializations/view.sql: a view equal to its new definition is kept (no rename,
    no comments written again); a view whose SQL, columns or comments differ is re-created."""
    db = copy_db(first_build[0], tmp_path / "views.duckdb")
    built = _views(db)
    assert len(built) == 15
    con = duckdb.connect(str(db))
    try:
        # three ways a stored view can differ from the project's: its SQL and columns, the
        # view's comment, one column's comment
        con.execute("create or replace view analytics_staging.stg_segment__groups as select 1 as x")
        con.execute("comment on view analytics.events is 'stale'")
        con.execute("comment on column analytics.page_views.page_url is 'stale'")
    finally:
        con.close()
    run_dbt(["run", "--select", "config.materialized:view"], db, tmp_path / "run")
    # every view is again what a build creates
    assert _views(db) == built
    log = (tmp_path / "run" / "logs" / "dbt.log").read_text()
    replaced = {name.split(".")[-1] for name in built
                if f'"{name.split(".")[-1]}__dbt_tmp" rename to' in log}
    assert replaced == {"stg_segment__groups", "events", "page_views"}
