"""Fitting values to column types, losslessly or not at all.

Vectorised with Polars and Arrow (no per-row Python): a value that cannot be cast without
loss becomes NULL, and the writer records it in `_loader.discards` with its raw text.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loader.spec import ISO_DATE_OR_TIME_RE

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
