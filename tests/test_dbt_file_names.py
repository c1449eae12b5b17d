"""Every file under models/ follows dbt's "How we structure our dbt projects" naming.

The convention (docs.getdbt.com/best-practices/how-we-structure, README "dbt project layout"):
- staging/<source>/stg_<source>__<entities>.sql;
- intermediate/<area>/int_<entities>_<verb>ed[_<more>].sql (int_payments_pivoted_to_orders);
- YAML and doc files start with `_`, then the folder (`int_`-prefixed in intermediate), a
  double underscore and what they hold: _segment__models.yml, _int_identity__unit_tests.yml,
  _marts__docs.md;
- marts keep their plain entity names (they are the public API) and carry no layer prefix.
The checker is a function of a root folder, so the test also proves it rejects bad names.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = r"(models|sources|unit_tests)\.yml|docs\.md"
# int_ + entity words, one of them plural (…s), then a past-participle verb (…ed), then
# optionally what it was done to/by: int_events_sessionized, int_refunds_matched_to_orders.
INTERMEDIATE_SQL = re.compile(r"int_(?:[a-z0-9]+_)*[a-z0-9]+s_[a-z0-9]+ed(?:_[a-z0-9]+)*\.sql")
PLAIN_SQL = re.compile(r"[a-z][a-z0-9_]*\.sql")


def misnamed_files(models: Path) -> list[str]:
    """Paths under `models` (relative) whose name breaks the convention, with the rule broken."""
    problems: list[str] = []
    for path in sorted(p for p in models.rglob("*") if p.is_file()):
        rel = path.relative_to(models)
        layer, folder, name = rel.parts[0], path.parent.name, path.name
        nested = len(rel.parts) == 3
        if name.startswith("_"):
            prefix = f"int_{folder}" if layer == "intermediate" else folder
            if not re.fullmatch(rf"_{prefix}__(?:{KINDS})", name):
                problems.append(f"{rel}: YAML/docs are _{prefix}__<{KINDS}>")
        elif layer == "staging":
            if not (nested and re.fullmatch(rf"stg_{folder}__[a-z0-9_]+\.sql", name)):
                problems.append(f"{rel}: staging/<source>/stg_<source>__<entities>.sql")
        elif layer == "intermediate":
            if not (nested and INTERMEDIATE_SQL.fullmatch(name)):
                problems.append(f"{rel}: intermediate/<area>/int_<entities>_<verb>ed[_...].sql")
        elif layer == "marts":
            if not PLAIN_SQL.fullmatch(name) or name.startswith(("stg_", "int_")):
                problems.append(f"{rel}: marts are <entity>.sql without a layer prefix")
        else:
            problems.append(f"{rel}: models/ holds only staging/, intermediate/ and marts/")
    return problems


def test_every_file_under_models_follows_the_naming_convention():
    assert misnamed_files(ROOT / "models") == []


def test_the_checker_rejects_each_kind_of_misnamed_file(tmp_path: Path):
    good = [
        "staging/segment/stg_segment__pages.sql",
        "staging/segment/_segment__sources.yml",
        "staging/segment/_segment__docs.md",
        "intermediate/orders/int_refunds_matched_to_orders.sql",
        "intermediate/orders/_int_orders__unit_tests.yml",
        "marts/orders.sql",
        "marts/_marts__models.yml",
        "marts/analytics/_analytics__models.yml",
    ]
    bad = [
        "staging/segment/stg_pages.sql",  # no source
        "staging/segment/_segment__ecommerce.yml",  # not a known kind
        "intermediate/orders/int_order_refunds.sql",  # no verb
        "intermediate/orders/int_orders_latest.sql",  # no past-participle verb
        "intermediate/orders/_orders.yml",  # neither int_ nor __kind
        "intermediate/analytics/_analytics__models.yml",  # intermediate YAML needs int_
        "marts/analytics/_analytics.yml",
        "marts/int_orders_joined.sql",  # layer prefix in marts
        "utilities/all_dates.sql",
    ]
    for rel in good + bad:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    flagged = [p.split(":")[0] for p in misnamed_files(tmp_path)]
    assert sorted(flagged) == sorted(bad)
