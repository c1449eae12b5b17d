"""Tracking plans (Segment Protocols): read a plan, check normalised batches against it.

A plan's JSON Schema rules run as Arrow compute kernels over the columns the normaliser
already produced (each value's text and JSON type, per warehouse table): a handful of kernel
calls per rule and table, whatever the number of events, never Python per event. `items`
rules on arrays take one DuckDB query per array column, which unnests the items and extracts
every path the item schema names in one parse per item; the same rules then run over them.

Violations are data (`_loader.violations`). An event whose rules say `block` leaves the batch
and becomes a `tracking_plan_violation` reject holding its raw bytes, so nothing is lost and it
can be replayed (`python -m loader replay`) once the plan is fixed.

Values that are JSON `null` count as absent, as they do in the warehouse: a null property
fails `required` unless its `type` allows "null", and no other rule looks at it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loader.errors import UsageError
from loader.normalize import (
    ColumnStats,
    NameMapping,
    TableSlice,
    Values,
    combine_chunks,
    json_kinds,
    pointer,
)
from loader.read import Rejection
from loader.spec import Reason
from loader.sql import literal

if TYPE_CHECKING:
    from loader.stages import Batch

ACTIONS = ("allow", "block")
REJECT_REASON = Reason.TRACKING_PLAN_VIOLATION
# Calls whose traits a plan can describe (`rules.identify.traits`, `rules.group.traits`).
TRAIT_CALLS = {"identify": "identifies", "group": "groups"}
NUMERIC_KINDS = ("BIGINT", "UBIGINT", "HUGEINT", "DOUBLE")
INTEGER_KINDS = ("BIGINT", "UBIGINT", "HUGEINT")
KIND_OF_TYPE = {"string": ("VARCHAR",), "boolean": ("BOOLEAN",), "array": ("ARRAY",), "object": ("OBJECT",),
                "number": NUMERIC_KINDS, "integer": INTEGER_KINDS, "null": ()}
# Keywords compiled into checks, and keywords that only annotate (ignored silently).
CHECKED = {"type", "required", "properties", "items", "enum", "const", "pattern", "minimum",
           "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "format",
           "additionalProperties", "minItems", "maxItems"}
ANNOTATIONS = {"$schema", "$id", "id", "$comment", "title", "description", "default", "examples",
               "readOnly", "writeOnly", "deprecated", "on_violation"}
# RFC 3339 shapes (JSON Schema's formats); date-time and date must also be real dates.
FORMATS = {
    "date-time": r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "time": r"^\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    "email": r"^[^@\s]+@[^@\s]+$",
    "uri": r"^[A-Za-z][A-Za-z0-9+.\-]*:\S*$",
    "uuid": r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
    "ipv4": r"^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$",
}
VIOLATION_SCHEMA = pa.schema([
    ("line", pa.int64()), ("message_id", pa.string()), ("call", pa.string()),
    ("table_name", pa.string()), ("event", pa.string()), ("property_path", pa.string()),
    ("rule", pa.string()), ("offending_value", pa.string()), ("expected", pa.string()),
    ("action", pa.string()),
])


@dataclass(frozen=True)
class Rules:
    """The rules of one planned event (its properties), or of identify/group traits."""

    call: str  # track, identify, group
    event: str | None
    schema: dict  # JSON Schema of `properties` (track) or `traits`
    on_violation: str  # allow or block


@dataclass
class TrackingPlan:
    name: str
    events: dict[str, Rules]  # by exact event name, as Protocols matches them
    calls: dict[str, Rules]  # identify / group traits
    unplanned_events: str  # allow or block
    ignored: dict[str, list[str]] = field(default_factory=dict)  # keyword -> where (not checked)

    def warnings(self) -> list[str]:
        return [f"tracking plan: '{k}' is not checked (at {', '.join(sorted(set(w))[:3])})"
                for k, w in sorted(self.ignored.items())]


# --- reading a plan -------------------------------------------------------------------------


def read_document(path: str | Path, what: str) -> dict:
    """A JSON file, or YAML when the name says so (PyYAML is installed with dbt-core)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:
                raise UsageError(f"the {what} {path} is YAML but PyYAML is not installed; use JSON") from exc
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, ImportError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"the {what} {path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError
        raise UsageError(f"the {what} {path} cannot be parsed: {exc}") from exc


def load_plan(path: str | Path, *, on_violation: str = "allow", unplanned_events: str = "allow") -> TrackingPlan:
    """Read a tracking plan (Segment's format, JSON or YAML) and check that it compiles."""
    return parse_plan(read_document(path, "tracking plan"), on_violation=on_violation,
                      unplanned_events=unplanned_events, origin=str(path))


def parse_plan(doc, *, on_violation: str = "allow", unplanned_events: str = "allow",
               origin: str = "tracking plan") -> TrackingPlan:
    """Accepts `{"rules": {"events": [...], "identify": ...}}`, `{"events": [...]}` or a bare
    list of events. Each event's `rules.properties` is the JSON Schema of its properties; the
    Config API's message-level form (`rules.properties.properties`) is accepted too."""
    for name, value in (("on_violation", on_violation), ("unplanned_events", unplanned_events)):
        if value not in ACTIONS:
            raise UsageError(f"{name} must be allow or block, not {value!r}")
    if isinstance(doc, list):
        doc = {"events": doc}
    if not isinstance(doc, dict):
        raise UsageError(f"{origin}: a tracking plan is a JSON object with rules.events[]")
    rules = doc.get("rules") if isinstance(doc.get("rules"), dict) else doc
    events_doc = rules.get("events", doc.get("events", []))
    if not isinstance(events_doc, list):
        raise UsageError(f"{origin}: rules.events must be a list")
    ignored: dict[str, list[str]] = {}
    events: dict[str, Rules] = {}
    versions: dict[str, int] = {}
    for i, ev in enumerate(events_doc):
        where = f"{origin}: rules.events[{i}]"
        if not isinstance(ev, dict) or not isinstance(ev.get("name"), str) or not ev["name"]:
            raise UsageError(f"{where}: every event needs a name")
        name = ev["name"]
        version = ev.get("version", 0) if isinstance(ev.get("version", 0), int) else 0
        if name in events and version == versions[name]:
            raise UsageError(f"{where}: event {name!r} is listed twice")
        if name in events and version < versions[name]:
            continue  # an older version of an event listed again: the newest one counts
        schema = _payload_schema(ev.get("rules") or {}, "properties", where)
        _check_schema(schema, f"{where}.rules.properties", ignored)
        action = ev.get("on_violation", (ev.get("rules") or {}).get("on_violation", on_violation))
        if action not in ACTIONS:
            raise UsageError(f"{where}: on_violation must be allow or block, not {action!r}")
        events[name] = Rules("track", name, schema, action)
        versions[name] = version
    calls: dict[str, Rules] = {}
    for call in TRAIT_CALLS:
        spec = rules.get(call)
        if spec is None:
            continue
        where = f"{origin}: rules.{call}"
        if not isinstance(spec, dict):
            raise UsageError(f"{where} must be an object with traits")
        schema = _payload_schema(spec, "traits", where)
        _check_schema(schema, f"{where}.traits", ignored)
        action = spec.get("on_violation", on_violation)
        if action not in ACTIONS:
            raise UsageError(f"{where}: on_violation must be allow or block, not {action!r}")
        calls[call] = Rules(call, None, schema, action)
    plan = TrackingPlan(str(doc.get("display_name") or doc.get("name") or origin), events, calls,
                        unplanned_events, ignored)
    _check_patterns(plan, origin)
    return plan


def _payload_schema(rules: dict, key: str, where: str) -> dict:
    if not isinstance(rules, dict):
        raise UsageError(f"{where}: rules must be an object")
    if "type" in rules or "$schema" in rules:  # the Config API's schema of the whole message
        message = rules.get("properties")
        schema = message.get(key) if isinstance(message, dict) else None
    else:
        schema = rules.get(key)
    if schema is None:
        return {}
    if not isinstance(schema, dict):
        raise UsageError(f"{where}: rules.{key} must be a JSON Schema object")
    return schema


def _check_schema(schema, where: str, ignored: dict[str, list[str]]) -> None:
    """Reject malformed keywords with their place in the plan; note the ones not checked."""
    if not isinstance(schema, dict):
        raise UsageError(f"{where}: a schema must be an object")
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key not in CHECKED:
            ignored.setdefault(key, []).append(where)
            continue
        bad = None
        if key == "type":
            types = value if isinstance(value, list) else [value]
            if not types or any(t not in KIND_OF_TYPE for t in types):
                bad = f"type must be one of {', '.join(KIND_OF_TYPE)} or a list of them"
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                bad = "required must be a list of property names"
        elif key == "properties":
            if not isinstance(value, dict):
                bad = "properties must be an object"
            else:
                for name, sub in value.items():
                    _check_schema(sub, f"{where}.properties.{name}", ignored)
        elif key == "items":
            if isinstance(value, dict):
                _check_schema(value, f"{where}.items", ignored)
            else:
                ignored.setdefault("items (list form)", []).append(where)
        elif key == "enum":
            if not isinstance(value, list) or not value:
                bad = "enum must be a non-empty list"
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(value, bool) and key.startswith("exclusive"):
                pass  # draft-04 form: modifies minimum / maximum
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                bad = f"{key} must be a number"
        elif key in ("minLength", "maxLength", "minItems", "maxItems"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                bad = f"{key} must be a non-negative integer"
        elif key == "pattern":
            if not isinstance(value, str):
                bad = "pattern must be a string"
        elif key == "format":
            if not isinstance(value, str):
                bad = "format must be a string"
            elif value not in FORMATS:
                ignored.setdefault(f"format {value}", []).append(where)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                if value:
                    ignored.setdefault("additionalProperties (schema form)", []).append(where)
            elif not isinstance(value, bool):
                bad = "additionalProperties must be true, false or a schema"
        if bad:
            raise UsageError(f"{where}: {bad}")


def _check_patterns(plan: TrackingPlan, origin: str) -> None:
    """Patterns run as RE2 regular expressions (Arrow's): refuse the plan now, not mid-load."""

    def walk(schema: dict) -> None:
        if isinstance(schema.get("pattern"), str):
            try:
                pc.match_substring_regex(pa.array([""]), schema["pattern"])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise UsageError(f"{origin}: pattern {schema['pattern']!r} is not supported (RE2 syntax: "
                                 f"no lookaround or backreferences): {exc}") from exc
        for sub in (schema.get("properties") or {}).values():
            walk(sub)
        if isinstance(schema.get("items"), dict):
            walk(schema["items"])

    for rules in [*plan.events.values(), *plan.calls.values()]:
        walk(rules.schema)


# --- checking rules: vectorised over a slice's columns ---------------------------------------


@dataclass
class _Val:
    text: pa.Array  # the value as text (strings unquoted); null when absent or JSON null
    kind: pa.Array  # its JSON type: VARCHAR, BIGINT, UBIGINT, DOUBLE, BOOLEAN, ARRAY, OBJECT


class _Found:
    """Violations as they are found: per check, the frame rows that break it."""

    def __init__(self) -> None:
        self.parts: list[pa.Table] = []

    def add(self, frame, mask, path: tuple[str, ...], rule: str, value, expected: str) -> None:
        mask = pc.fill_null(mask, False)
        if not pc.any(mask).as_py():
            return
        idx = pc.indices_nonzero(mask)
        n = len(idx)
        self.parts.append(pa.table({
            "row": frame.row.take(idx),
            "property_path": frame.pointers(path, idx),
            "rule": pa.array([rule] * n, pa.string()),
            "offending_value": pa.nulls(n, pa.string()) if value is None else value.take(idx),
            "expected": pa.array([expected] * n, pa.string()),
        }))


class _SliceFrame:
    """Rows of a table slice (those of one event); values by key path under the payload root
    (`properties` or `traits`). An object is seen through the columns flattened out of it:
    it is there when any of them has a value."""

    def __init__(self, slice_: TableSlice, root: str, rows: pa.Array | None) -> None:
        self.root = root
        self.rows = rows
        n = slice_.num_rows if rows is None else len(rows)
        self.row = pa.array(np.arange(n, dtype=np.int64)) if rows is None else rows
        self.n = n
        self.leaves: dict[tuple[str, ...], Values] = {}
        for col, stats in slice_.columns.items():
            for ptr in stats.sources:
                path = parse_pointer(ptr)
                if path[:1] == (root,):
                    self.leaves[path[1:]] = slice_.values[col]
        for ptr, values in slice_.unnamed.items():
            path = parse_pointer(ptr)
            if path[:1] == (root,):
                self.leaves[path[1:]] = values
        self._cache: dict[tuple[str, ...], _Val | None] = {}

    def _take(self, array) -> pa.Array:
        array = combine_chunks(array)
        return array if self.rows is None else array.take(self.rows)

    def _under(self, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        n = len(path)
        return [p for p in self.leaves if len(p) > n and p[:n] == path]

    def get(self, path: tuple[str, ...]) -> _Val | None:
        """None when no row has anything at `path`."""
        if path not in self._cache:
            self._cache[path] = self._get(path)
        return self._cache[path]

    def _get(self, path: tuple[str, ...]) -> _Val | None:
        if not path:  # the payload itself: a missing one counts as {}
            return _Val(pa.nulls(self.n, pa.string()), pa.array(["OBJECT"] * self.n, pa.string()))
        leaf = self.leaves.get(path)
        below = [self._take(self.leaves[p].kind) for p in self._under(path)]
        if leaf is None and not below:
            return None
        text = self._take(leaf.text) if leaf is not None else pa.nulls(self.n, pa.string())
        kind = self._take(leaf.kind) if leaf is not None else pa.nulls(self.n, pa.string())
        if below:
            has_keys = functools.reduce(pc.or_, [pc.is_valid(k) for k in below])
            kind = pc.if_else(pc.is_valid(kind), kind, pc.if_else(has_keys, "OBJECT", None))
        return _Val(text, kind)

    def is_object(self, path: tuple[str, ...], val: _Val) -> pa.Array:
        return pc.equal(val.kind, "OBJECT")

    def pointers(self, path: tuple[str, ...], idx: pa.Array) -> pa.Array:
        return pa.array([pointer((self.root, *path))] * len(idx), pa.string())

    def extra(self, path: tuple[str, ...], allowed: set[str], is_obj: pa.Array, found: _Found) -> None:
        for key in sorted({p[len(path)] for p in self._under(path)} - allowed):
            val = self.get(path + (key,))
            found.add(self, pc.and_(is_obj, pc.is_valid(val.kind)), path + (key,), "additionalProperties",
                      val.text, _expected_keys(allowed))


class _ItemFrame:
    """The items of the arrays at one path of a parent frame: one DuckDB query unnests them
    and extracts every path the item schema names in one parse per item."""

    def __init__(self, con, parent, path: tuple[str, ...], val: _Val, schema: dict) -> None:
        arrays = pc.indices_nonzero(pc.fill_null(pc.equal(val.kind, "ARRAY"), False))
        self.paths = sorted(_schema_paths(schema))
        self.extra_paths = sorted(_extra_paths(schema))
        con.register("plan_arrays", pa.table({"a": arrays, "t": val.text.take(arrays)}))
        try:
            result = con.sql(_items_query(json.dumps(schema, sort_keys=True))).to_arrow_table()
        finally:
            con.unregister("plan_arrays")
        result = result.read_all() if hasattr(result, "read_all") else result
        self.n = result.num_rows
        parent_rows = self.parents = combine_chunks(result["a"])
        self.row = parent.row.take(parent_rows)
        prefix = parent.pointers(path, parent_rows)
        self.prefix = pc.binary_join_element_wise(prefix, pc.cast(combine_chunks(result["i"]), pa.string()), "/")
        self.values: dict[tuple[str, ...], _Val] = {(): _Val(*json_kinds(combine_chunks(result["item"])))}
        for j, p in enumerate(self.paths):
            self.values[p] = _Val(*json_kinds(pc.list_element(combine_chunks(result["vals"]), j)))
        self.keys = {p: (combine_chunks(result[f"x{i}"]), combine_chunks(result[f"v{i}"])) for i, p in enumerate(self.extra_paths)}

    def get(self, path: tuple[str, ...]) -> _Val | None:
        return self.values.get(path)

    def is_object(self, path: tuple[str, ...], val: _Val) -> pa.Array:
        return pc.equal(val.kind, "OBJECT")

    def pointers(self, path: tuple[str, ...], idx: pa.Array) -> pa.Array:
        return pc.binary_join_element_wise(self.prefix.take(idx), pointer(path), "")

    def extra(self, path: tuple[str, ...], allowed: set[str], is_obj: pa.Array, found: _Found) -> None:
        if path not in self.keys:
            return
        keys, values = self.keys[path]
        owners = pc.list_parent_indices(keys)
        flat = pc.list_flatten(keys)
        if not len(flat):
            return
        escaped = pc.replace_substring(pc.replace_substring(flat, "~", "~0"), "/", "~1")
        pointers = pc.binary_join_element_wise(self.prefix.take(owners), pointer(path) + "/", escaped, "")
        n = len(flat)
        found.parts.append(pa.table({
            "row": self.row.take(owners),
            "property_path": pointers,
            "rule": pa.array(["additionalProperties"] * n, pa.string()),
            "offending_value": json_kinds(pc.list_flatten(values))[0],
            "expected": pa.array([_expected_keys(allowed)] * n, pa.string()),
        }))


@functools.lru_cache(maxsize=256)
def _items_query(schema_json: str) -> str:
    """The query that unnests the arrays of `plan_arrays` (a: parent row, t: JSON text) and
    extracts, per item, every path its schema names and the keys it does not plan."""
    schema = json.loads(schema_json)
    paths = sorted(_schema_paths(schema))
    extract = ", ".join(literal(pointer(p)) for p in paths)
    select = [f"json_extract(item, [{extract}])::VARCHAR[] AS vals"] if paths else []
    for i, p in enumerate(sorted(_extra_paths(schema))):
        allowed = "[" + ", ".join(literal(a) for a in sorted(_properties_at(schema, p))) + "]::VARCHAR[]"
        keys = f"list_filter(json_keys(item, {literal(pointer(p) or '$')}), lambda k: NOT list_contains({allowed}, k))"
        child = f"{literal(pointer(p) + '/')} || replace(replace(k, '~', '~0'), '/', '~1')"
        select.append(f"{keys} AS x{i}")
        select.append(f"list_transform({keys}, lambda k: json_extract(item, {child})::VARCHAR) AS v{i}")
    return (f"SELECT a, i, item::VARCHAR AS item{''.join(', ' + s for s in select)} FROM ("
            "SELECT a, unnest(items) AS item, generate_subscripts(items, 1) - 1 AS i "
            "FROM (SELECT a, json_extract(CAST(t AS JSON), '$[*]') AS items FROM plan_arrays))")


def _schema_paths(schema: dict, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path an (item) schema looks at, not descending into nested `items`."""
    paths = {path} if path else set()
    for name in schema.get("required") or []:
        paths.add(path + (name,))
    for name, sub in (schema.get("properties") or {}).items():
        paths |= _schema_paths(sub, path + (name,)) | {path + (name,)}
    return paths


def _extra_paths(schema: dict, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths = {path} if schema.get("additionalProperties") is False else set()
    for name, sub in (schema.get("properties") or {}).items():
        paths |= _extra_paths(sub, path + (name,))
    return paths


def _properties_at(schema: dict, path: tuple[str, ...]) -> set[str]:
    for key in path:
        schema = (schema.get("properties") or {}).get(key) or {}
    return set(schema.get("properties") or {})


def _expected_keys(allowed: set[str]) -> str:
    names = sorted(allowed)
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return f"only the planned properties ({shown})" if names else "no properties"


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    return [] if t is None else (t if isinstance(t, list) else [t])


def _numbers(val: _Val) -> tuple[pa.Array, pa.Array]:
    """Whether each value is a JSON number, and its value as a double (null otherwise)."""
    is_num = pc.fill_null(pc.is_in(val.kind, pa.array(NUMERIC_KINDS)), False)
    text = pc.if_else(is_num, val.text, None)
    return is_num, pl.from_arrow(text).cast(pl.Float64, strict=False).to_arrow()


def _walk(con, frame, schema: dict, path: tuple[str, ...], found: _Found) -> None:
    """Record in `found` where the values at `path` break `schema`."""
    val = frame.get(path)
    if val is None:
        return  # nothing at this path in the batch: only `required` (the parent's) can fail
    t, k = val.text, val.kind
    present = pc.is_valid(k)
    types = _types(schema)
    if types and (path or isinstance(frame, _ItemFrame)):
        kinds = sorted({kind for ty in types for kind in KIND_OF_TYPE[ty]})
        ok = pc.is_in(k, pa.array(kinds, pa.string()))
        if "integer" in types and "number" not in types:
            _, number = _numbers(val)
            whole = pc.and_(pc.equal(k, "DOUBLE"), pc.equal(number, pc.trunc(number)))
            ok = pc.or_(ok, pc.fill_null(whole, False))
        found.add(frame, pc.and_(present, pc.invert(ok)), path, "type", t, " or ".join(types))
    if "enum" in schema or "const" in schema:
        options = schema["enum"] if "enum" in schema else [schema["const"]]
        found.add(frame, pc.and_(present, pc.invert(_enum_match(options, val))), path,
                  "enum" if "enum" in schema else "const", t, json.dumps(options, ensure_ascii=False))
    _numeric(frame, schema, val, path, found)
    _string(frame, schema, val, path, found)
    if "properties" in schema or "required" in schema or schema.get("additionalProperties") is False:
        is_obj = pc.fill_null(frame.is_object(path, val), False)
        props = schema.get("properties") or {}
        nullable = {name for name, sub in props.items() if isinstance(sub, dict) and "null" in _types(sub)}
        for name in schema.get("required") or []:
            if name in nullable:
                continue  # null and absent look alike: a nullable property may be missing
            child = frame.get(path + (name,))
            missing = is_obj if child is None else pc.and_(is_obj, pc.is_null(child.kind))
            found.add(frame, missing, path + (name,), "required", None, "present")
        for name, sub in props.items():
            _walk(con, frame, sub, path + (name,), found)
        if schema.get("additionalProperties") is False:
            frame.extra(path, set(props), is_obj, found)
    is_arr = pc.fill_null(pc.equal(k, "ARRAY"), False)
    if not (("minItems" in schema or "maxItems" in schema or isinstance(schema.get("items"), dict))
            and pc.any(is_arr).as_py()):
        return
    items = _ItemFrame(con, frame, path, val, schema.get("items") or {})
    if "minItems" in schema or "maxItems" in schema:
        counts = np.bincount(items.parents.to_numpy(), minlength=len(k))
        length = pc.if_else(is_arr, pa.array(counts), None)
        for key, compare, word in (("minItems", pc.less, "at least"), ("maxItems", pc.greater, "at most")):
            if key in schema:
                found.add(frame, compare(length, schema[key]), path, key, t, f"{word} {schema[key]} items")
    if isinstance(schema.get("items"), dict) and items.n:
        _walk(con, items, schema["items"], (), found)


def _enum_match(options: list, val: _Val) -> pa.Array:
    t, k = val.text, val.kind
    strings = [o for o in options if isinstance(o, str)]
    numbers = [float(o) for o in options if isinstance(o, (int, float)) and not isinstance(o, bool)]
    booleans = [str(o).lower() for o in options if isinstance(o, bool)]
    others = [json.dumps(o, separators=(",", ":")) for o in options if isinstance(o, (dict, list))]
    match = pa.array([False] * len(k))
    if strings:
        match = pc.or_(match, pc.and_(pc.equal(k, "VARCHAR"), pc.is_in(t, pa.array(strings, pa.string()))))
    if numbers:
        is_num, number = _numbers(val)
        match = pc.or_(match, pc.and_(is_num, pc.is_in(number, pa.array(numbers, pa.float64()))))
    if booleans:
        match = pc.or_(match, pc.and_(pc.equal(k, "BOOLEAN"), pc.is_in(t, pa.array(booleans))))
    if others:  # arrays and objects compared as minified JSON text
        match = pc.or_(match, pc.is_in(pc.replace_substring_regex(t, r"\s+", ""), pa.array(others)))
    return pc.fill_null(match, False)


def _numeric(frame, schema: dict, val: _Val, path, found: _Found) -> None:
    bounds = []
    for key, compare, word in (("minimum", pc.less, ">="), ("maximum", pc.greater, "<=")):
        if key in schema:
            if schema.get("exclusiveM" + key[1:]) is True:  # draft-04 form
                compare, word = (pc.less_equal, ">") if key == "minimum" else (pc.greater_equal, "<")
            bounds.append((key, compare, word, schema[key]))
    for key, compare, word in (("exclusiveMinimum", pc.less_equal, ">"), ("exclusiveMaximum", pc.greater_equal, "<")):
        if key in schema and not isinstance(schema[key], bool):
            bounds.append((key, compare, word, schema[key]))
    if not bounds:
        return
    is_num, number = _numbers(val)
    for key, compare, word, limit in bounds:
        found.add(frame, pc.and_(is_num, compare(number, float(limit))), path, key, val.text, f"{word} {limit}")


def _string(frame, schema: dict, val: _Val, path, found: _Found) -> None:
    keys = [k for k in ("minLength", "maxLength", "pattern", "format") if k in schema]
    if not keys:
        return
    t = val.text
    is_str = pc.fill_null(pc.equal(val.kind, "VARCHAR"), False)
    if "minLength" in schema:
        found.add(frame, pc.and_(is_str, pc.less(pc.utf8_length(t), schema["minLength"])), path,
                  "minLength", t, f"at least {schema['minLength']} characters")
    if "maxLength" in schema:
        found.add(frame, pc.and_(is_str, pc.greater(pc.utf8_length(t), schema["maxLength"])), path,
                  "maxLength", t, f"at most {schema['maxLength']} characters")
    if "pattern" in schema:
        found.add(frame, pc.and_(is_str, pc.invert(pc.match_substring_regex(t, schema["pattern"]))), path,
                  "pattern", t, schema["pattern"])
    fmt = schema.get("format")
    if fmt in FORMATS:
        ok = pc.match_substring_regex(t, FORMATS[fmt])
        if fmt in ("date-time", "date"):
            ok = pc.and_(ok, _real_dates(t))
        found.add(frame, pc.and_(is_str, pc.invert(ok)), path, "format", t, fmt)


def _real_dates(text: pa.Array) -> pa.Array:
    """Whether the leading yyyy-mm-dd[Thh:mm:ss] names a real date and time (false otherwise)."""
    parts = pc.extract_regex(text, r"^(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?:[Tt](?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2}))?")
    ok = pc.is_valid(parts)

    def number(name: str) -> np.ndarray:
        field_ = pc.if_else(ok, pc.struct_field(parts, name), "0")
        return pl.from_arrow(field_).cast(pl.Int64, strict=False).fill_null(0).to_numpy()

    y, m, d = number("y"), number("m"), number("d")
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(m, 1, 12) - 1] + (leap & (m == 2))
    valid = (m >= 1) & (m <= 12) & (d >= 1) & (d <= days)
    valid &= (number("H") <= 23) & (number("M") <= 59) & (number("S") <= 60)
    return pc.and_(pc.fill_null(ok, False), pa.array(valid))


# --- validating and blocking ----------------------------------------------------------------


def validate(con: duckdb.DuckDBPyConnection, plan: TrackingPlan, batch: Batch) -> pa.Table:
    """Every violation of the batch's rows (VIOLATION_SCHEMA): per table, a handful of Arrow
    kernels per rule, and one DuckDB query per array whose items have rules."""
    parts = []
    for s in batch.slices:
        if s.call == "track":
            events = combine_chunks(s.values["event_text"].text)
            names = [n for n in pc.unique(events).to_pylist() if n is not None]
            planned = [n for n in names if n in plan.events]
            found = _Found()
            for name in planned:
                rows = None if len(names) == 1 else pc.indices_nonzero(pc.equal(events, name)).cast(pa.int64())
                _walk(con, _SliceFrame(s, "properties", rows), plan.events[name].schema, (), found)
            if len(planned) < len(names):
                known = pc.fill_null(pc.is_in(events, pa.array(planned, pa.string())), False)
                unplanned = pc.indices_nonzero(pc.invert(known)).cast(pa.int64())
                n = len(unplanned)
                found.parts.append(pa.table({
                    "row": unplanned, "property_path": pa.array(["/event"] * n, pa.string()),
                    "rule": pa.array(["unplanned_event"] * n, pa.string()),
                    "offending_value": events.take(unplanned),
                    "expected": pa.array(["an event of the tracking plan"] * n, pa.string())}))
            actions = {name: plan.events[name].on_violation for name in planned}
            parts += _located(s, found, events, actions, plan.unplanned_events, "track")
        elif s.call in plan.calls:
            rules = plan.calls[s.call]
            found = _Found()
            _walk(con, _SliceFrame(s, "traits", None), rules.schema, (), found)
            parts += _located(s, found, None, {}, rules.on_violation, s.call)
    return pa.concat_tables(parts) if parts else VIOLATION_SCHEMA.empty_table()


def _located(s: TableSlice, found: _Found, events, actions: dict[str, str], default: str, call: str) -> list[pa.Table]:
    """Violations of one slice with their line, message id, event and action."""
    if not found.parts:
        return []
    table = pa.concat_tables(found.parts)
    rows = combine_chunks(table["row"])
    n = table.num_rows
    if events is None:
        event, action = pa.nulls(n, pa.string()), pa.array([default] * n, pa.string())
    else:
        event = events.take(rows)
        names = list(actions)
        position = pc.index_in(event, pa.array(names, pa.string()))
        action = pc.fill_null(pa.array([actions[x] for x in names], pa.string()).take(position), default) \
            if names else pa.array([default] * n, pa.string())
    return [pa.table({
        "line": combine_chunks(s.line).take(rows).cast(pa.int64()),
        "message_id": combine_chunks(s.message_id).take(rows).cast(pa.string()),
        "call": pa.array([call] * n, pa.string()),
        "table_name": pa.array([s.table] * n, pa.string()),
        "event": event.cast(pa.string()),
        "property_path": table["property_path"],
        "rule": table["rule"],
        "offending_value": table["offending_value"],
        "expected": table["expected"],
        "action": action,
    }, schema=VIOLATION_SCHEMA)]


def check_batch(con: duckdb.DuckDBPyConnection, plan: TrackingPlan, batch: Batch) -> Batch:
    """The batch after the plan: every violation found (allowed and blocked) in `violations`
    (VIOLATION_SCHEMA); events to block leave every slice and become rejects with their raw
    bytes (from `batch.lines`, the batch's text as shaped: after PII scrubbing)."""
    violations = validate(con, plan, batch)
    blocked = pc.unique(violations.filter(pc.equal(violations["action"], "block"))["line"])
    if not len(blocked):
        return replace(batch, violations=violations)
    keep_slices = []
    for s in batch.slices:
        keep = pc.invert(pc.is_in(s.line, blocked))
        if pc.all(keep).as_py():
            keep_slices.append(s)
        elif pc.any(keep).as_py():
            keep_slices.append(_filter_slice(s, keep))
    tables = {s.table for s in keep_slices}
    lines = batch.lines
    raw = lines.filter(pc.is_in(lines["line_no"], blocked))
    details = _details(violations, blocked)
    rejections = list(batch.rejections) + [
        Rejection(line, text.encode("utf-8").removesuffix(b"\n"), REJECT_REASON, details.get(line, ""))
        for line, text in zip(raw["line_no"].to_pylist(), raw["raw"].to_pylist())
    ]
    rejections.sort(key=lambda r: r.line)
    return replace(
        batch,
        slices=keep_slices,
        messages=batch.messages.filter(pc.invert(pc.is_in(batch.messages["line_no"], blocked))),
        rejections=rejections,
        name_map=[m for m in batch.name_map if _still_named(m, tables)],
        valid=batch.valid - len(blocked),
        violations=violations,
    )


def _still_named(m: NameMapping, tables: set[str]) -> bool:
    return (m.name if m.kind == "table" else m.table) in tables


def _details(violations: pa.Table, blocked: pa.Array) -> dict[int, str]:
    """Reject detail per blocked line: how many violations and the first three."""
    frame = pl.from_arrow(violations.filter(pc.is_in(violations["line"], blocked)))
    summary = frame.group_by("line", maintain_order=True).agg(
        pl.len().alias("n"),
        pl.first("event"),
        pl.first("call"),
        pl.concat_str([pl.col("property_path"), pl.lit(" "), pl.col("rule")]).head(3).str.join("; ").alias("first"),
    )
    return {
        row["line"]: f"{row['n']} violation(s) of the tracking plan for "
                     f"{row['event'] if row['event'] is not None else row['call']}: {row['first']}"
        for row in summary.iter_rows(named=True)
    }


def _filter_slice(s: TableSlice, keep: pa.Array) -> TableSlice:
    """The slice without blocked rows; column statistics recomputed from the rows kept, so a
    blocked event's values never type or widen a warehouse column."""
    from loader.normalize import _type_counts

    values = {c: _filter_values(v, keep) for c, v in s.values.items()}
    unnamed = {p: _filter_values(v, keep) for p, v in s.unnamed.items()}
    line = s.line.filter(keep)
    columns: dict[str, ColumnStats] = {}
    names = list(s.columns)
    if names and len(line):
        text = pa.concat_arrays([combine_chunks(values[c].text) for c in names])
        kind = pa.concat_arrays([combine_chunks(values[c].kind) for c in names])
        rows = len(line)
        counts = _type_counts(text, kind, np.repeat(np.arange(len(names), dtype=np.int32), rows),
                              np.zeros(rows * len(names), dtype=np.int32), [s.table])
        for i, c in enumerate(names):
            columns[c] = ColumnStats(types=counts.get(i, {}).get(s.table, {}), sources=s.columns[c].sources)
    return TableSlice(s.table, s.call, line, s.message_id.filter(keep), values, columns, unnamed)


def _filter_values(v: Values, keep: pa.Array) -> Values:
    """Every array a Values carries (text, kind, and any typed form), filtered alike."""
    arrays = {f.name: getattr(v, f.name) for f in fields(v)}
    return replace(v, **{k: a.filter(keep) for k, a in arrays.items() if isinstance(a, (pa.Array, pa.ChunkedArray))})


def parse_pointer(ptr: str) -> tuple[str, ...]:
    """The key path of a JSON pointer (inverse of `normalize.pointer`)."""
    if not ptr:
        return ()
    return tuple(k.replace("~1", "/").replace("~0", "~") for k in ptr[1:].split("/"))
