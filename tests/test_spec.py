"""The spec module and the dbt project state the same Segment contract.

The dbt side is read as text (its macros, sources and staging models), so a rename on either
side fails here rather than as NULL columns in the marts.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from loader import spec
from loader.naming import STANDARD_TABLES

ROOT = Path(__file__).resolve().parent.parent
STAGING = ROOT / "models" / "staging" / "segment"


def _from_columns(sql: str) -> set[str]:
    """Raw column names read by `segment_column(raw, <name or [names]>, <kind>)` calls."""
    names: set[str] = set()
    for listed in re.findall(r"segment_column\(\s*raw\s*,\s*(\[[^\]]*\]|'[^']*')", sql):
        names.update(re.findall(r"'([^']+)'", listed))
    return names


def _macro_body(sql: str, name: str) -> str:
    match = re.search(r"{%-?\s*macro\s+" + name + r"\(.*?{%-?\s*endmacro", sql, re.DOTALL)
    assert match, f"macro {name} not found"
    return match.group(0)


def test_staging_common_columns_read_exactly_the_common_and_loader_columns():
    sql = (ROOT / "macros" / "segment_staging.sql").read_text()
    used = _from_columns(_macro_body(sql, "segment_common_columns"))
    assert used == set(spec.COMMON_COLUMNS + spec.LOADER_COLUMNS)


def test_dbt_sources_declare_every_table_the_loader_writes():
    sources = yaml.safe_load((STAGING / "_segment__sources.yml").read_text())
    segment = next(s for s in sources["sources"] if s["name"] == "segment")
    declared = {t["name"] for t in segment["tables"]}
    assert {spec.TRACKS_TABLE, *spec.CALL_TABLES.values(), *spec.STATE_TABLES} <= declared


def test_staging_models_read_each_calls_extra_columns():
    tables = {"track": spec.TRACKS_TABLE, **spec.CALL_TABLES}
    for call, extra in spec.EXTRA_COLUMNS.items():
        model = STAGING / f"stg_segment__{tables[call]}.sql"
        used = _from_columns(model.read_text())
        assert set(extra) <= used, (call, set(extra) - used)


def test_standard_columns_have_one_type_and_one_source():
    for call in (*spec.CALL_TYPES, spec.TRACKS_TABLE):
        columns = spec.standard_columns(call)
        assert len(columns) == len(set(columns))
        assert set(columns) <= set(spec.STANDARD_TYPES)
        assert set(columns) - set(spec.LOADER_COLUMNS) <= set(spec.STANDARD_SOURCE)
    assert set(spec.STANDARD_SOURCE.values()) <= set(spec.ENVELOPE)
    assert {c for c, t in spec.STANDARD_TYPES.items() if t == spec.ColumnType.TIMESTAMPTZ} == {
        *spec.TIMESTAMP_COLUMNS, "uuid_ts"}


def test_reserved_tables_are_the_standard_and_state_tables():
    assert STANDARD_TABLES == {"tracks", "identifies", "users", "pages", "screens", "groups", "accounts", "aliases"}


def test_every_reason_the_normaliser_states_has_a_text():
    reasons = set(spec.Reason) - {spec.Reason.TRACKING_PLAN_VIOLATION, spec.Reason.OVERSIZED,
                                  spec.Reason.INVALID_UTF8, spec.Reason.GZIP_FAULT, spec.Reason.FILE_FAILED}
    assert reasons == set(spec.REASON_TEXT)
    assert all(spec.REASON_TEXT.values())
