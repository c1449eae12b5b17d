"""How `--memory-limit-mb` is shared between the two reader connections and the warehouse."""

from __future__ import annotations

import pytest

from loader.cli import _parser
from loader.config import LoadConfig

# memory_limit_mb -> (each reader, warehouse): readers get a third up to 256 MB, the
# warehouse the rest; the three always add up to the limit or less.
SPLITS = [
    (640, 213, 214),  # the default: the warehouse cache no bigger than a reader's share
    (768, 256, 256),
    (1024, 256, 512),
    (512, 170, 172),
    (48, 16, 16),  # tests/test_reliability.py's tight cap
]


@pytest.mark.parametrize(("limit", "reader", "warehouse"), SPLITS)
def test_memory_split(limit, reader, warehouse):
    config = LoadConfig(memory_limit_mb=limit)
    assert (config.reader_memory_mb, config.warehouse_memory_mb) == (reader, warehouse)
    assert 2 * reader + warehouse <= limit


@pytest.mark.parametrize("command", ["load", "replay"])
def test_cli_default_is_the_config_default(command):
    args = _parser().parse_args([command, "x"] if command == "load" else [command])
    assert args.memory_limit_mb == LoadConfig().memory_limit_mb == 640
