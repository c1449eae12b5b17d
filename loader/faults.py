"""Named crash points for the reliability tests: SEGMENT_LOADER_CRASH_AT=<point>[:<n>] kills
the process with SIGKILL the n-th time (default 1st) the load reaches <point>
(SEGMENT_LOADER_CRASH_SIGNAL=INT sends Ctrl-C's SIGINT instead). Unset, it costs one
dictionary lookup per call."""

from __future__ import annotations

import os
import signal

CRASH_POINTS = (
    "after_schema_change",  # DDL applied inside the file's transaction
    "after_insert",  # a batch's rows written, manifest row not yet
    "before_manifest",  # all of a file's rows written
    "before_commit",  # manifest row written, transaction open
    "after_commit",  # the file is committed
)
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("SEGMENT_LOADER_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("SEGMENT_LOADER_CRASH_SIGNAL", "KILL")))
