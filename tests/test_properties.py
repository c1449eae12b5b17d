"""Properties over arbitrary input: the loader never crashes, and every line is accounted
for as a row, a duplicate or a reject."""

import json
import tempfile
from pathlib import Path

from conftest import query, run_load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

keys = st.text(min_size=0, max_size=12)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4), max_leaves=12)

messages = st.fixed_dictionaries(
    {
        "messageId": st.sampled_from(["a", "b", "c", "d", "e"]) | st.text(max_size=8),
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "bogus"]),
        "event": st.sampled_from(["Order Completed", "users", "select", "", "🎉", "a" * 90]) | st.text(max_size=10),
        "userId": st.none() | st.text(max_size=6) | st.integers(),
        "anonymousId": st.none() | st.text(max_size=6),
        "groupId": st.none() | st.text(max_size=4),
        "receivedAt": st.sampled_from(["2024-03-01T10:00:00Z", "2024-03-01T09:00:00.5Z", "garbage", None]),
        "properties": st.dictionaries(keys, json_values, max_size=5),
        "traits": st.dictionaries(keys, json_values, max_size=3),
        "context": st.dictionaries(keys, json_values, max_size=3),
    }
)
lines = st.lists(
    messages.map(lambda m: json.dumps(m).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    min_size=0,
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(lines, min_size=1, max_size=3))
def test_every_line_is_a_row_a_duplicate_or_a_reject(batches):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i, batch in enumerate(batches):
            path = tmp / f"{i}.ndjson"
            path.write_bytes(b"".join(line + b"\n" for line in batch))
            files.append(path)
        db = tmp / "w.duckdb"
        result = run_load(files, db, max_reject_ratio=1.0)
        assert not result.failed, [f.reason for f in result.failed]
        for f, batch in zip(result.files, batches):
            if f.status == "skipped":  # same bytes as an earlier file
                continue
            assert f.lines == len(batch)
            assert f.lines == f.rows_loaded + f.duplicates + f.rejects
        loaded = sum(f.rows_loaded for f in result.files)
        assert query(db, "SELECT count(*), count(DISTINCT message_id) FROM _loader.seen_messages")[0] == (loaded, loaded)
        assert query(db, "SELECT count(*) FROM _loader.rejects")[0][0] == sum(f.rejects for f in result.files)
