"""sample_data/generate.py: deterministic bytes and the story the tests rely on."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

from dbt_helpers import REPO, SAMPLE_LOGS

spec = importlib.util.spec_from_file_location("sample_generate", REPO / "sample_data" / "generate.py")
generate = importlib.util.module_from_spec(spec)
sys.modules["sample_generate"] = generate  # dataclasses need their module registered
spec.loader.exec_module(generate)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.gz"))}


def test_generator_reproduces_the_committed_archive_byte_for_byte(tmp_path):
    generate.main_archive().write(tmp_path)
    assert files(tmp_path / "segment-logs") == files(SAMPLE_LOGS)


def test_late_archive_is_deterministic(tmp_path):
    generate.late_archive().write(tmp_path / "a", files_per_day=1)
    generate.late_archive().write(tmp_path / "b", files_per_day=1)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert len(files(tmp_path / "a")) == 2


def lines(root: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(root.rglob("*.gz")):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            out.append((str(path.relative_to(root)), line))
    return out


def test_archive_contains_the_pathologies_the_story_promises():
    parsed, bad_by_file, total_by_file = [], Counter(), Counter()
    for name, line in lines(SAMPLE_LOGS):
        total_by_file[name] += 1
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            bad_by_file[name] += 1
            continue
        if not isinstance(message, dict) or "messageId" not in message or message.get("type") not in {
            "track", "identify", "page", "screen", "group", "alias"} or (
            message.get("type") == "track" and "event" not in message) or not (
            "userId" in message or "anonymousId" in message):
            bad_by_file[name] += 1
            continue
        parsed.append(message)
    assert len(bad_by_file) == 1 and sum(bad_by_file.values()) == 6
    ((name, bad),) = bad_by_file.items()
    assert bad / total_by_file[name] < 0.2
    assert {m["type"] for m in parsed} == {"track", "identify", "page", "screen", "group", "alias"}
    events = Counter(m.get("event") for m in parsed)
    assert events["Order Completed"] == 11 and events["order_completed"] == 1
    assert events["Order Refunded"] == 4 and events["Order Cancelled"] == 1
    assert {"users", "select", "2FA Enabled"} <= set(events)
    ids = Counter(m["messageId"] for m in parsed)
    assert sorted(ids.values())[-2:] == [2, 2]  # a retried batch and a repeated line
    assert any("projectId" not in m for m in parsed) and any("projectId" in m for m in parsed)
    currencies = {m["properties"].get("currency") for m in parsed if m.get("event") == "Order Completed"}
    assert {"USD", "EUR", "GBP"} <= currencies
