"""The dbt benchmark's split of node time into SQL and dbt's Python (no timing asserted).

    .venv/bin/python -m pytest -q bench/tests
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dbt_incremental

# the shape of dbt 1.11's debug file log: two worker threads, interleaved
LOG = """\
\x1b[0m12:28:07.760049 [debug] [ThreadPool]: SQL status: OK in 0.034 seconds
\x1b[0m12:28:13.873168 [debug] [Thread-1 (]: Began running node model.segment_warehouse.users
\x1b[0m12:28:13.874168 [debug] [Thread-2 (]: Began running node model.segment_warehouse.orders
\x1b[0m12:28:13.900000 [debug] [Thread-1 (]: SQL status: OK in 1.166 seconds
\x1b[0m12:28:13.910000 [debug] [Thread-2 (]: SQL status: OK in 0.250 seconds
\x1b[0m12:28:14.037734 [debug] [Thread-1 (]: SQL status: OK in 0.282 seconds
\x1b[0m12:28:14.100000 [debug] [Thread-1 (]: Finished running node model.segment_warehouse.users
\x1b[0m12:28:14.200000 [debug] [Thread-1 (]: SQL status: OK in 0.500 seconds
\x1b[0m12:28:14.300000 [debug] [Thread-2 (]: SQL status: OK in 0.010 seconds
\x1b[0m12:28:14.400000 [debug] [Thread-2 (]: Finished running node model.segment_warehouse.orders
"""


def test_statements_count_for_the_node_their_thread_runs(tmp_path):
    log = tmp_path / "dbt.log"
    log.write_text("an earlier invocation\n" + LOG)
    offset = len("an earlier invocation\n")
    # statements outside a node (the pool's start, a thread between nodes) count for none
    assert dbt_incremental.node_sql_seconds(log, offset) == {"users": 1.448, "orders": 0.26}
    # only what was logged after the offset: this invocation, not the ones before it
    log.write_text(LOG + LOG)
    assert dbt_incremental.node_sql_seconds(log, len(LOG)) == {"users": 1.448, "orders": 0.26}
    assert dbt_incremental.node_sql_seconds(tmp_path / "missing.log", 0) == {}


def test_statements_are_counted_per_node_with_their_seconds(tmp_path):
    log = tmp_path / "dbt.log"
    log.write_text(LOG)
    assert dbt_incremental.node_sql(log, 0) == {"users": (1.448, 2), "orders": (0.26, 2)}


def test_a_log_that_rolled_over_is_an_error_not_zero_seconds(tmp_path):
    log = tmp_path / "dbt.log"
    log.write_text(LOG)  # shorter than the offset the command started from: a rollover
    with pytest.raises(RuntimeError, match="rolled over"):
        dbt_incremental.node_sql_seconds(log, len(LOG) + 100)
