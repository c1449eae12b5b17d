"""End to end: the sample archive through the loader and `dbt build`, then the late archive.

Expected rows in tests/expected/ are worked out by hand from sample_data/README.md, never
produced by running the models. After the late archive, an incremental build must equal a
--full-refresh build, table by table.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from dbt_helpers import (
    INTERMEDIATE,
    MARTS,
    SAMPLE_LOGS,
    DbtResult,
    assert_matches_expected,
    copy_db,
    load_archive,
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


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_first_build_runs_models_data_tests_and_unit_tests(first_build):
    _, result = first_build
    kinds = {}
    for unique_id, status in result.statuses().items():
        kinds.setdefault(unique_id.split(".")[0], []).append(status)
    assert result.not_passing() == {}
    assert len(kinds["model"]) == 20
    assert len(kinds["unit_test"]) >= 17
    assert len(kinds["test"]) >= 140


@pytest.mark.parametrize("mart", MARTS)
def test_marts_match_hand_worked_rows(first_build, mart):
    assert_matches_expected(first_build[0], mart, mart)


def test_net_revenue_by_currency(first_build):
    # USD 34.80 + 32.00 + 32.40 + 86.39 + 25.59 + 64.80; EUR 53.55 + 0 + 0; GBP 24.10 + 60.50
    rows = query(first_build[0], "select currency, sum(net_total) from analytics.orders group by 1 order by 1")
    assert rows == [("EUR", Decimal("53.55")), ("GBP", Decimal("84.60")), ("USD", Decimal("275.98"))]


def test_every_sample_message_is_attributed_except_the_junk_only_ones(first_build):
    rows = query(first_build[0], """
        select attribution_rule, count(*) from analytics_intermediate.int_identity_event_persons
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
    assert "load_id > (select coalesce(max(load_id), -1)" in result.compiled_code("int_events_unioned")
    # the late archive holds 7 lines; one is a re-delivery the loader dedups
    assert query(db, """select load_id, count(*) from analytics_intermediate.int_events_unioned
                        group by 1 order by 1""") == [(1, 234), (2, 6)]
    # the offline event arrived two days late with its original event time
    assert query(db, """select count(*) from analytics_intermediate.int_events_unioned
                        where load_id = 2 and event_at < timestamptz '2024-05-08 00:00:00+00'""") == [(1,)]


def test_net_revenue_by_currency_after_the_late_archive(late_build):
    # USD: 275.98 - 5.00 (late partial refund of ORD-1001) + 32.40 (ORD-1003)
    rows = query(late_build[0], "select currency, sum(net_total) from analytics.orders group by 1 order by 1")
    assert rows == [("EUR", Decimal("53.55")), ("GBP", Decimal("84.60")), ("USD", Decimal("303.38"))]


@pytest.mark.parametrize("model", MARTS + INTERMEDIATE)
def test_incremental_build_equals_full_refresh(late_build, full_refresh_build, model):
    schema = "analytics" if model in MARTS else "analytics_intermediate"
    difference = table_difference(late_build[0], full_refresh_build, f"{schema}.{model}")
    assert difference == (0, 0), f"{model}: rows only incremental / only full refresh = {difference}"
