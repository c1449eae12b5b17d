"""Properties of the benchmark's archive generator (no timing: counts, layout, determinism).

    .venv/bin/python -m pytest -q bench/tests
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import generate

LAYOUT = re.compile(r"^segment-logs/[A-Za-z0-9]{10}/\d{13}/\d{13}\.[0-9a-f]{8}\.gz$")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.gz")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _lines(root: Path) -> list[bytes]:
    out = []
    for p in sorted(root.rglob("*.gz")):
        out.extend(gzip.decompress(p.read_bytes()).splitlines())
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "a"
    m = generate.generate(24_000, str(root), seed=7, extra_fraction=0.05, file_events=2_000,
                          processes=1, quiet=True)
    return root, m


def test_layout_and_gzip(archive):
    root, m = archive
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    gz = [f for f in files if f.endswith(".gz")]
    assert len(gz) == m["files"] == 12
    assert all(LAYOUT.match(f) for f in gz)
    for f in gz:  # the received-day folder is midnight UTC in milliseconds
        assert int(f.split("/")[2]) % 86_400_000 == 0
    assert (root.parent / "a.manifest.json").exists()
    assert not any(f.endswith((".json", ".tmp")) for f in files)


def test_counts_match_the_manifest(archive):
    root, m = archive
    lines = _lines(root)
    assert len(lines) == m["lines"] == 24_000
    parsed, bad = [], 0
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            bad += 1
    assert bad == m["bad_lines"]
    ids = [e["messageId"] for e in parsed]
    assert len(ids) - len(set(ids)) == m["retry_lines"] > 0
    assert len(set(ids)) == m["expected_unique_events"]


def test_realistic_content(archive):
    root, _ = archive
    events = []
    for line in _lines(root):
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    types = {e["type"] for e in events}
    assert types == {"track", "page", "screen", "identify", "group", "alias"}
    names = {e.get("event") for e in events if e["type"] == "track"}
    assert {"Product Viewed", "Product Added", "Checkout Started", "Order Completed",
            "Order Refunded"} <= names
    assert len(names) >= 40
    orders = [e for e in events if e.get("event") == "Order Completed"]
    assert all(isinstance(e["properties"]["products"], list) for e in orders)
    web = [e for e in events if e["context"]["library"]["name"] == "analytics.js"]
    assert {"ip", "library", "page", "userAgent", "locale", "screen"} <= set(web[0]["context"])
    mobile = [e for e in events if "device" in e["context"]]
    assert mobile and {"os", "app"} <= set(mobile[0]["context"])
    prices = [p.get("price") for e in events for p in e.get("properties", {}).get("products", [])
              if isinstance(p, dict)]
    assert "N/A" in prices  # type drift
    # a retry is the same event received again
    seen: dict[str, dict] = {}
    for e in events:
        if e["messageId"] in seen:
            first = seen[e["messageId"]]
            assert {k: v for k, v in e.items() if k != "receivedAt"} == {
                k: v for k, v in first.items() if k != "receivedAt"}
        seen[e["messageId"]] = e


def test_extra_files_are_new_and_later(archive):
    root, m = archive
    extra = Path(str(root) + ".extra")
    mx = generate.load_manifest(str(extra))
    assert mx["lines"] == 1_200 and mx["files"] == 1
    assert not set(mx["file_list"]) & set(m["file_list"])
    last_base_day = max(int(f.split("/")[2]) for f in m["file_list"])
    assert all(int(f.split("/")[2]) > last_base_day for f in mx["file_list"])


def test_deterministic_and_independent_of_processes(archive, tmp_path):
    root, _ = archive
    again = tmp_path / "b"
    generate.generate(24_000, str(again), seed=7, file_events=2_000, processes=2, quiet=True)
    assert _digest(again) == _digest(root)  # also: the extra files do not change the base
    other = tmp_path / "c"
    generate.generate(24_000, str(other), seed=8, file_events=2_000, processes=1, quiet=True)
    assert _digest(other) != _digest(root)
