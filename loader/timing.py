"""Where a load's time goes: seconds per stage, summed over the threads that ran it.

Readers run in parallel with the writer, so the stages add up to more than the wall time;
each figure says how busy that stage kept a core. Reported in `--json` (`stage_seconds`)
and in `_loader.loads.stage_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# read: decompress, split lines, expand batch envelopes, PII; parse: validation and the
# envelope; shape: routing, flattening, typing statistics and the tracking plan; dedup: the
# group's checks and its probe of history; write: schema changes, casts, inserts, state
# tables, manifest; commit: COMMIT and CHECKPOINT.
STAGES = ("read", "parse", "shape", "dedup", "write", "commit")


class StageTimer:
    """Seconds per stage. One per thread; `merge` folds a reader's into the load's. A stage
    timed inside another counts only for itself (dedup inside write is not also write)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._open: list[str] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        self._open.append(name)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self._open:
                self.seconds[self._open[-1]] -= elapsed

    def timed(self, name: str, items: Iterator) -> Iterator:
        """Iterate `items`, counting the time spent producing each one under `name`."""
        while True:
            with self.stage(name):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item

    def merge(self, other: StageTimer) -> None:
        for name, s in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + s

    def rounded(self) -> dict[str, float]:
        return {name: round(s, 3) for name, s in self.seconds.items()}


@contextmanager
def maybe(timer: StageTimer | None, name: str) -> Iterator[None]:
    """`timer.stage(name)`, or nothing when there is no timer."""
    if timer is None:
        yield
    else:
        with timer.stage(name):
            yield
