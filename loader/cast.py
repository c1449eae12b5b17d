"""Fitting values to column types, losslessly or not at all (the `cast` stage).

Vectorised with Polars and Arrow (no per-row Python): a value that cannot be cast without
loss becomes NULL, and is kept as a discard with its raw text (`_loader.discards`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loader.spec import ISO_DATE_OR_TIME_RE, TRACKS_TABLE

if TYPE_CHECKING:
    from loader.normalize import TableSlice
    from loader.schema import Schema

ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}
INTEGER_RE = r"^\s*-?\d+\s*$"
MAX_EXACT_DOUBLE_INT = 2**53


# Value kinds that a plain Arrow cast of the text converts exactly (the common case).
PLAIN_CASTS = {
    "BIGINT": {"BIGINT", "UBIGINT"},
    "DOUBLE": {"BIGINT", "UBIGINT", "DOUBLE"},
    "JSON": {"ARRAY", "OBJECT"},
}


def cast_values(text: pa.Array, kind: pa.Array, column_type: str, kinds: set[str] | None = None) -> pa.Array:
    """`text` and `kind` as produced by the normaliser, into an Arrow array of the column type.
    `kinds`, when known, are all the value kinds present: it lets the common case skip the
    per-kind rules."""
    if column_type == "VARCHAR":
        return text
    if column_type == "TIMESTAMPTZ":
        return _timestamps(text, kind)
    if kinds is not None and kinds <= PLAIN_CASTS.get(column_type, set()):
        try:
            return pc.cast(text, ARROW_TYPES[column_type])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # e.g. 1e400: the per-kind rules below decide
    if kinds is not None and column_type == "BOOLEAN" and kinds <= {"BOOLEAN"}:
        return pc.equal(text, "true")
    frame = pl.DataFrame({"t": pl.from_arrow(text), "k": pl.from_arrow(kind)}, schema={"t": pl.Utf8, "k": pl.Utf8})
    t, k = pl.col("t"), pl.col("k")
    stripped = t.str.strip_chars()
    if column_type == "BIGINT":
        as_float = t.cast(pl.Float64, strict=False)
        expr = (
            pl.when(k.is_in(["BIGINT", "UBIGINT"])).then(t.cast(pl.Int64, strict=False))
            .when((k == "VARCHAR") & t.str.contains(INTEGER_RE)).then(stripped.cast(pl.Int64, strict=False))
            # An integral double such as 3.0 fits; 3.7 would round, so it does not.
            .when((k == "DOUBLE") & (as_float == as_float.floor()) & (as_float.abs() < MAX_EXACT_DOUBLE_INT))
            .then(as_float.cast(pl.Int64, strict=False))
            .otherwise(None)
        )
    elif column_type == "DOUBLE":
        expr = (
            pl.when(k.is_in(["BIGINT", "UBIGINT", "DOUBLE"])).then(t.cast(pl.Float64, strict=False))
            .when(k == "VARCHAR").then(stripped.cast(pl.Float64, strict=False))
            .otherwise(None)
        )
    elif column_type == "BOOLEAN":
        lowered = stripped.str.to_lowercase()
        expr = (
            pl.when(k == "BOOLEAN").then(t == "true")
            .when((k == "VARCHAR") & lowered.is_in(["true", "false"])).then(lowered == "true")
            .otherwise(None)
        )
    elif column_type == "JSON":
        # Arrays and objects are JSON already; a scalar is kept as its JSON value.
        quoted = t.map_elements(_json_string, return_dtype=pl.Utf8)
        expr = pl.when(k.is_in(["ARRAY", "OBJECT"])).then(t).when(k == "VARCHAR").then(quoted).otherwise(t)
    else:
        raise ValueError(f"unsupported column type {column_type}")
    out = frame.select(expr.alias("v"))["v"].to_arrow()
    return out.cast(ARROW_TYPES[column_type])


def _json_string(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _timestamps(text: pa.Array, kind: pa.Array) -> pa.Array:
    candidates = pc.and_(pc.equal(kind, "VARCHAR"), pc.match_substring_regex(text, ISO_DATE_OR_TIME_RE))
    clean = pc.if_else(pc.fill_null(candidates, False), pc.utf8_trim_whitespace(text), None)
    try:
        return pc.cast(clean, ARROW_TYPES["TIMESTAMPTZ"])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Rare: bare dates, nanoseconds or impossible dates such as 2024-13-45.
        return pa.array([_parse_timestamp(v) for v in clean.to_pylist()], ARROW_TYPES["TIMESTAMPTZ"])


def _parse_timestamp(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    text = value.replace(" ", "T", 1) if len(value) > 10 and value[10] == " " else value
    text = text.replace("z", "Z")
    if "." in text:  # Python keeps microseconds: drop further digits rather than fail
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def cast_slice(schema: Schema, slice_: TableSlice) -> tuple[pa.Table, list[pa.Table]]:
    """One table's rows cast to the column types of `schema` (columns with no type yet, that
    only nulls arrived for, are left out), and the discards: values that were not null and
    cast to null, and values of keys no column can be named after, with their raw text."""
    from loader.schema import may_discard

    columns = schema[slice_.table]
    arrays: dict[str, pa.Array] = {}
    discards: list[pa.Table] = []
    for col, values in slice_.values.items():
        col_type = columns.get(col)
        if col_type is None:
            continue
        text, kind = values.text, values.kind
        if values.typed is not None and col_type == "TIMESTAMPTZ":
            typed = values.typed
        else:
            stats = slice_.columns.get(col)
            kinds = {k for k, n in stats.types.items() if n} if stats is not None else None
            typed = cast_values(text, kind, col_type, kinds)
        arrays[col] = typed
        if slice_.call != TRACKS_TABLE and may_discard(col_type, slice_.columns.get(col)):
            lost = pc.and_(pc.is_valid(text), pc.is_null(typed))
            if pc.any(lost).as_py():
                reason = pc.binary_join_element_wise(
                    "cannot cast ", pc.utf8_lower(kind.filter(lost)), f" value to {col_type}", "")
                discards.append(_discards(slice_, col, text, lost, col_type, reason))
    for ptr, values in slice_.unnamed.items():
        lost = pc.is_valid(values.text)
        if pc.any(lost).as_py():
            discards.append(_discards(slice_, ptr, values.text, lost, None,
                                      "the key has no ASCII letter or digit to name a column"))
    return pa.table(arrays) if arrays else pa.table({"#rows": pa.nulls(slice_.num_rows)}).drop_columns(["#rows"]), discards


def _discards(slice_: TableSlice, column: str, text, lost, col_type: str | None, reason) -> pa.Table:
    n = pc.sum(lost).as_py()
    return pa.table({
        "table_name": pa.array([slice_.table] * n, pa.string()),
        "column_name": pa.array([column] * n, pa.string()),
        "message_id": slice_.message_id.filter(lost),
        "line": slice_.line.filter(lost),
        "raw_value": text.filter(lost),
        "column_type": pa.array([col_type] * n, pa.string()),
        "reason": reason if not isinstance(reason, str) else pa.array([reason] * n, pa.string()),
    })
