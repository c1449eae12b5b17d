"""Segment's contract in one place: calls and their tables, the envelope, the standard
columns, reject reasons and the type vocabulary.

Every stage imports these facts from here, never spells them itself; the dbt project reads
the same names (tests/test_spec.py checks that the staging macros and sources agree).
Sources: Segment's Spec (Common fields, Track, Page, Screen, Identify, Group, Alias) and its
warehouse schema docs (`/work/shared/spec/design.md` of this project).
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """The JSON type of one value as the normaliser sees it. StrEnum: a Kind equals its
    name, so Arrow string columns of kinds compare against members directly."""

    VARCHAR = "VARCHAR"  # a JSON string
    BOOLEAN = "BOOLEAN"
    BIGINT = "BIGINT"  # a negative integer (fits a signed 64-bit integer or does not: see HUGEINT)
    UBIGINT = "UBIGINT"  # a non-negative integer
    HUGEINT = "HUGEINT"  # an integer beyond 64 bits (type statistics only)
    DOUBLE = "DOUBLE"  # a number with a fraction or an exponent
    ARRAY = "ARRAY"
    OBJECT = "OBJECT"
    TIMESTAMP = "TIMESTAMP"  # strings that are all ISO-8601 timestamps (type statistics only)


class ColumnType(StrEnum):
    """Warehouse column types the loader creates (DuckDB names)."""

    VARCHAR = "VARCHAR"
    JSON = "JSON"
    BIGINT = "BIGINT"
    DOUBLE = "DOUBLE"
    BOOLEAN = "BOOLEAN"
    TIMESTAMPTZ = "TIMESTAMPTZ"


INTEGER_KINDS = frozenset({Kind.BIGINT, Kind.UBIGINT})
NUMBER_KINDS = INTEGER_KINDS | {Kind.DOUBLE}

# Calls other than track and the table each writes; a track goes to `tracks` and to a table
# named after its event.
CALL_TABLES = {
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
TRACKS_TABLE = "tracks"
CALL_TYPES = ("track", *CALL_TABLES)
# Which root object becomes a call's columns (identify and group: traits).
PAYLOAD_ROOT = {"track": "properties", "page": "properties", "screen": "properties"}
TRAITS_ROOT = "traits"

# Envelope fields read from every message, in the order the normaliser extracts them.
ENVELOPE = (
    "messageId",
    "type",
    "event",
    "userId",
    "anonymousId",
    "receivedAt",
    "sentAt",
    "originalTimestamp",
    "timestamp",
    "projectId",
    "groupId",
    "previousId",
    "name",
    "category",
    "properties",
    "traits",
    "context",
)

# Standard columns: every table has COMMON_COLUMNS, each call adds its EXTRA_COLUMNS, the
# writer stamps LOADER_COLUMNS.
COMMON_COLUMNS = (
    "id",
    "anonymous_id",
    "user_id",
    "received_at",
    "sent_at",
    "original_timestamp",
    "timestamp",
    "source_id",
)
EXTRA_COLUMNS = {
    "track": ("event", "event_text"),
    "page": ("name", "category"),
    "screen": ("name", "category"),
    "group": ("group_id",),
    "alias": ("previous_id",),
    "identify": (),
}
LOADER_COLUMNS = ("uuid_ts", "load_id")
ALL_STANDARD = frozenset(
    COMMON_COLUMNS + LOADER_COLUMNS + tuple(c for cols in EXTRA_COLUMNS.values() for c in cols)
)
# Per call, the column names a user key must not take (it gets a `_` prefix instead).
RESERVED_FOR = {
    call: frozenset(COMMON_COLUMNS + LOADER_COLUMNS + extra) for call, extra in EXTRA_COLUMNS.items()
}
TIMESTAMP_COLUMNS = ("received_at", "sent_at", "original_timestamp", "timestamp")
STANDARD_TYPES: dict[str, ColumnType] = {
    **{c: ColumnType.VARCHAR for c in ALL_STANDARD},
    **{c: ColumnType.TIMESTAMPTZ for c in (*TIMESTAMP_COLUMNS, "uuid_ts")},
    "load_id": ColumnType.BIGINT,
}
# Where each standard column comes from: an envelope field (`event` is the routed table
# name, `event_text` the event name exactly as sent).
STANDARD_SOURCE = {
    "id": "messageId",
    "anonymous_id": "anonymousId",
    "user_id": "userId",
    "received_at": "receivedAt",
    "sent_at": "sentAt",
    "original_timestamp": "originalTimestamp",
    "timestamp": "timestamp",
    "source_id": "projectId",
    "event": "event",
    "event_text": "event",
    "name": "name",
    "category": "category",
    "group_id": "groupId",
    "previous_id": "previousId",
}


def standard_columns(call: str) -> list[str]:
    """The standard columns of a call's table, in table order (`tracks` as track)."""
    extra = EXTRA_COLUMNS["track" if call == TRACKS_TABLE else call]
    return [*COMMON_COLUMNS, *extra, *LOADER_COLUMNS]


# Derived "latest state" tables: source table, key column, source columns they leave out.
STATE_TABLES = {
    "users": ("identifies", "user_id", ("id", "user_id", "anonymous_id")),
    "accounts": ("groups", "group_id", ("id", "group_id", "user_id", "anonymous_id")),
}

MAX_MESSAGE_ID_LENGTH = 100  # Segment's documented limit

# ISO-8601 shapes. A column is typed TIMESTAMPTZ only when every string is a full timestamp;
# a value of an existing TIMESTAMPTZ column may also be a bare date.
ISO_TIMESTAMP_RE = (
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)?"
)
ISO_DATE_OR_TIME_RE = (
    r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)?)?\s*$"
)


# Fields of a batch envelope (the body of Segment's HTTP /v1/batch) that apply to each of its
# messages that has none of its own (loader/http_batch.py).
BATCH_SHARED_FIELDS = ("context", "integrations", "sentAt", "receivedAt", "writeKey")


class Reason(StrEnum):
    """Why a line was rejected (`_loader.rejects.reason`)."""

    EMPTY_LINE = "empty_line"
    OVERSIZED = "oversized"
    INVALID_UTF8 = "invalid_utf8"
    GZIP_FAULT = "gzip_fault"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_MESSAGE_ID = "invalid_message_id"
    MISSING_MESSAGE_ID = "missing_message_id"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_EVENT = "missing_event"
    MISSING_IDENTITY = "missing_identity"
    MISSING_GROUP_ID = "missing_group_id"
    TRACKING_PLAN_VIOLATION = "tracking_plan_violation"
    EMPTY_BATCH = "empty_batch"  # a batch envelope with no messages (loader/http_batch.py)
    FILE_FAILED = "file_failed"  # a line of a file that failed as a whole; detail: the file's error


# The text stored as `detail` for reasons whose detail does not depend on the line.
REASON_TEXT = {
    Reason.MALFORMED_JSON: "the line is not valid JSON",
    Reason.EMPTY_LINE: "the line is blank",
    Reason.NOT_AN_OBJECT: "the line is JSON but not an object",
    Reason.INVALID_MESSAGE_ID: f"messageId is not a string of at most {MAX_MESSAGE_ID_LENGTH} characters",
    Reason.MISSING_MESSAGE_ID: "messageId is missing or empty",
    Reason.MISSING_TYPE: "type is missing",
    Reason.UNKNOWN_TYPE: f"type is not one of {', '.join(CALL_TYPES)}",
    Reason.MISSING_EVENT: "a track call without an event name",
    Reason.MISSING_IDENTITY: "neither userId nor anonymousId is set",
    Reason.MISSING_GROUP_ID: "a group call without groupId",
    Reason.EMPTY_BATCH: "a batch envelope with no messages",
}
