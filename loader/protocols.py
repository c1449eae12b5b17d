"""Tracking plans (Segment Protocols): read a plan, compile its rules into vectorised checks,
and apply them to normalised batches.

A plan's JSON Schema rules become SQL expressions over the columns the normaliser already
produced (each value's text and JSON type, per warehouse table): one DuckDB query per table
of a batch, with a number of expressions bounded by the plan, never by the batch. `items`
rules on arrays run inside that query as a list lambda over the array's JSON.

Violations are data (`_loader.violations`). An event whose rules say `block` leaves the batch
and becomes a `tracking_plan_violation` reject holding its raw bytes, so nothing is lost and it
can be replayed (`python -m loader replay`) once the plan is fixed.

Values that are JSON `null` count as absent, as they do in the warehouse: a null property
fails `required` unless its `type` allows "null", and no other rule looks at it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from loader.errors import UsageError
from loader.normalize import ColumnStats, NameMapping, NormalizedBatch, TableSlice, Values, pointer
from loader.read import Rejection
from loader.sql import literal

ACTIONS = ("allow", "block")
REJECT_REASON = "tracking_plan_violation"
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
FORMAT_CASTS = {"date-time": "TIMESTAMPTZ", "date": "DATE"}
VIOLATION = "STRUCT(path VARCHAR, rule VARCHAR, value VARCHAR, expected VARCHAR)"
NO_VIOLATIONS = f"CAST([] AS {VIOLATION}[])"
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


@dataclass
class CheckedBatch(NormalizedBatch):
    """A batch after the tracking plan: blocked events moved to `rejections`, and every
    violation found (allowed and blocked) in `violations` (VIOLATION_SCHEMA)."""

    violations: pa.Table | None = None


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
    schema = rules.get(key)
    if ("type" in rules or "$schema" in rules) and isinstance(schema, dict) and isinstance(
            (schema.get("properties") or {}).get(key), dict):
        schema = schema["properties"][key]  # the message-level schema of the Config API
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
    """Patterns run in DuckDB (RE2): refuse the plan now, not in the middle of a load."""
    patterns: set[str] = set()

    def walk(schema: dict) -> None:
        if isinstance(schema.get("pattern"), str):
            patterns.add(schema["pattern"])
        for sub in (schema.get("properties") or {}).values():
            walk(sub)
        if isinstance(schema.get("items"), dict):
            walk(schema["items"])

    for rules in [*plan.events.values(), *plan.calls.values()]:
        walk(rules.schema)
    if not patterns:
        return
    con = duckdb.connect()
    try:
        for p in sorted(patterns):
            try:
                con.execute(f"SELECT regexp_matches('', {literal(p)})").fetchall()
            except duckdb.Error as exc:
                raise UsageError(f"{origin}: pattern {p!r} is not supported (RE2 syntax: no "
                                 f"lookaround or backreferences): {exc}") from exc
    finally:
        con.close()


# --- compiling rules into SQL ---------------------------------------------------------------


@dataclass
class _Val:
    text: str  # SQL: the value as text (strings unquoted), NULL when absent or null
    kind: str  # SQL: its JSON type (VARCHAR, BIGINT, UBIGINT, DOUBLE, BOOLEAN, ARRAY, OBJECT)


class _Checks:
    """Violation expressions for one row: single ones (a struct or NULL) and lists."""

    def __init__(self) -> None:
        self.singles: list[str] = []
        self.lists: list[str] = []

    def add(self, cond: str, path: str, rule: str, value: str, expected: str) -> None:
        self.singles.append(
            f"CASE WHEN {cond} THEN {{'path': {path}, 'rule': {literal(rule)}, "
            f"'value': CAST({value} AS VARCHAR), 'expected': {literal(expected)}}} END")

    def sql(self, depth: int) -> str:
        parts = []
        if self.singles:
            parts.append(f"list_filter([{', '.join(self.singles)}], lambda v{depth}: v{depth} IS NOT NULL)")
        parts += [f"coalesce({expr}, {NO_VIOLATIONS})" for expr in self.lists]
        if not parts:
            return NO_VIOLATIONS
        return parts[0] if len(parts) == 1 else f"list_concat({', '.join(parts)})"


class _SliceSource:
    """Values of a table slice, by key path under its payload root (`properties`/`traits`)."""

    depth = 0

    def __init__(self, slice_: TableSlice, root: str) -> None:
        self.root = root
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
        self.arrays: dict[str, pa.Array] = {}
        self._names: dict[int, str] = {}

    def _ref(self, values: Values) -> tuple[str, str]:
        name = self._names.get(id(values))
        if name is None:
            name = self._names[id(values)] = f"c{len(self._names)}"
            self.arrays[f"{name}_t"] = values.text
            self.arrays[f"{name}_k"] = values.kind
        return f'"{name}_t"', f'"{name}_k"'

    def _under(self, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        n = len(path)
        return [p for p in self.leaves if len(p) > n and p[:n] == path]

    def get(self, path: tuple[str, ...]) -> _Val | None:
        """None when no row of the slice has anything at `path`. An object is seen through the
        columns flattened out of it: it is there when any of them has a value."""
        if not path:
            return _Val("NULL", "'OBJECT'")  # the payload itself: a missing one counts as {}
        leaf = self.leaves.get(path)
        below = [self._ref(self.leaves[p])[1] for p in self._under(path)]
        if leaf is None and not below:
            return None
        text, kind = self._ref(leaf) if leaf is not None else ("NULL", "NULL")
        if below:
            kind = f"CASE WHEN {kind} IS NOT NULL THEN {kind} WHEN coalesce({', '.join(below)}) IS NOT NULL THEN 'OBJECT' END"
        return _Val(text, kind)

    def path_sql(self, path: tuple[str, ...]) -> str:
        return literal(pointer((self.root, *path)))

    def is_object(self, path: tuple[str, ...], val: _Val) -> str:
        return "true" if not path else f"{val.kind} = 'OBJECT'"  # a missing payload counts as {}

    def extra(self, path: tuple[str, ...], allowed: set[str], is_obj: str, out: _Checks) -> None:
        keys = sorted({p[len(path)] for p in self._under(path)} - allowed)
        for key in keys:
            val = self.get(path + (key,))
            out.add(f"{is_obj} AND {val.kind} IS NOT NULL", self.path_sql(path + (key,)),
                    "additionalProperties", val.text, _expected_keys(allowed))


class _JsonSource:
    """Values inside one JSON value (an array item), by key path; `prefix` is the SQL of the
    item's JSON pointer in the message."""

    def __init__(self, base: str, prefix: str, depth: int) -> None:
        self.base, self.prefix, self.depth = base, prefix, depth

    def get(self, path: tuple[str, ...]) -> _Val:
        where = literal(pointer(path) if path else "$")
        return _Val(f"({self.base} ->> {where})", f"nullif(json_type({self.base}, {where}), 'NULL')")

    def path_sql(self, path: tuple[str, ...]) -> str:
        return f"({self.prefix} || {literal(pointer(path))})" if path else self.prefix

    def is_object(self, path: tuple[str, ...], val: _Val) -> str:
        return f"{val.kind} = 'OBJECT'"

    def extra(self, path: tuple[str, ...], allowed: set[str], is_obj: str, out: _Checks) -> None:
        k = f"k{self.depth}"
        rel = pointer(path)
        escaped = f"replace(replace({k}, '~', '~0'), '/', '~1')"
        allowed_sql = "[" + ", ".join(literal(a) for a in sorted(allowed)) + "]::VARCHAR[]"
        struct = (f"{{'path': {self.prefix} || {literal(rel + '/')} || {escaped}, "
                  f"'rule': 'additionalProperties', "
                  f"'value': CAST({self.base} ->> ({literal(rel + '/')} || {escaped}) AS VARCHAR), "
                  f"'expected': {literal(_expected_keys(allowed))}}}")
        out.lists.append(
            f"CASE WHEN {is_obj} THEN list_transform(list_filter(json_keys({self.base}, "
            f"{literal(rel or '$')}), lambda {k}: NOT list_contains({allowed_sql}, {k})), "
            f"lambda {k}: {struct}) END")


def _expected_keys(allowed: set[str]) -> str:
    names = sorted(allowed)
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return f"only the planned properties ({shown})" if names else "no properties"


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    return [] if t is None else (t if isinstance(t, list) else [t])


def _number(value) -> str:
    return repr(float(value))


def _walk(src, schema: dict, path: tuple[str, ...], out: _Checks) -> None:
    """Append the checks of `schema` for the value at `path` to `out`."""
    val = src.get(path)
    if val is None:
        return  # nothing at this path in the batch: only `required` (the parent's) can fail
    where = src.path_sql(path)
    t, k = val.text, val.kind
    types = _types(schema)
    if types and (path or isinstance(src, _JsonSource)):
        kinds = sorted({kind for ty in types for kind in KIND_OF_TYPE[ty]})
        ok = f"{k} IN ({', '.join(literal(x) for x in kinds)})" if kinds else "false"
        if "integer" in types and "number" not in types:
            ok += f" OR ({k} = 'DOUBLE' AND TRY_CAST({t} AS DOUBLE) = trunc(TRY_CAST({t} AS DOUBLE)))"
        out.add(f"{k} IS NOT NULL AND NOT ({ok})", where, "type", t, " or ".join(types))
    if "enum" in schema or "const" in schema:
        options = schema["enum"] if "enum" in schema else [schema["const"]]
        rule = "enum" if "enum" in schema else "const"
        out.add(f"{k} IS NOT NULL AND NOT ({_enum_match(options, t, k)})", where, rule, t,
                json.dumps(options, ensure_ascii=False))
    _numeric(schema, val, where, out)
    _string(schema, val, where, out)
    if "properties" in schema or "required" in schema or schema.get("additionalProperties") is False:
        is_obj = src.is_object(path, val)
        props = schema.get("properties") or {}
        nullable = {name for name, sub in props.items() if isinstance(sub, dict) and "null" in _types(sub)}
        for name in schema.get("required") or []:
            if name in nullable:
                continue  # null and absent look alike: a nullable property may be missing
            child = src.get(path + (name,))
            missing = "true" if child is None else f"{child.kind} IS NULL"
            out.add(f"{is_obj} AND {missing}", src.path_sql(path + (name,)), "required", "NULL", "present")
        for name, sub in props.items():
            _walk(src, sub, path + (name,), out)
        if schema.get("additionalProperties") is False:
            src.extra(path, set(props), is_obj, out)
    if isinstance(schema.get("items"), dict) or "minItems" in schema or "maxItems" in schema:
        is_arr = f"{k} = 'ARRAY'"
        length = f"json_array_length(CAST({t} AS JSON))"
        if "minItems" in schema:
            out.add(f"{is_arr} AND {length} < {int(schema['minItems'])}", where, "minItems", t,
                    f"at least {schema['minItems']} items")
        if "maxItems" in schema:
            out.add(f"{is_arr} AND {length} > {int(schema['maxItems'])}", where, "maxItems", t,
                    f"at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            d = src.depth
            item, index = f"item{d}", f"i{d}"
            inner = _JsonSource(item, f"({where} || '/' || CAST({index} - 1 AS VARCHAR))", d + 1)
            sub = _Checks()
            _walk(inner, schema["items"], (), sub)
            if sub.singles or sub.lists:
                out.lists.append(
                    f"CASE WHEN {is_arr} THEN flatten(list_transform(json_extract(CAST({t} AS JSON), '$[*]'), "
                    f"lambda {item}, {index}: {sub.sql(d + 1)})) END")


def _enum_match(options: list, t: str, k: str) -> str:
    strings = [o for o in options if isinstance(o, str)]
    numbers = [o for o in options if isinstance(o, (int, float)) and not isinstance(o, bool)]
    booleans = [o for o in options if isinstance(o, bool)]
    other = [o for o in options if isinstance(o, (dict, list))]
    terms = []
    if strings:
        terms.append(f"({k} = 'VARCHAR' AND {t} IN ({', '.join(literal(s) for s in strings)}))")
    if numbers:
        terms.append(f"({k} IN {NUMERIC_KINDS} AND TRY_CAST({t} AS DOUBLE) IN ({', '.join(_number(n) for n in numbers)}))")
    if booleans:
        terms.append(f"({k} = 'BOOLEAN' AND {t} IN ({', '.join(literal(str(b).lower()) for b in booleans)}))")
    for o in other:
        terms.append(f"({k} IN ('OBJECT', 'ARRAY') AND json({t}) = json({literal(json.dumps(o))}))")
    return " OR ".join(terms) or "false"


def _numeric(schema: dict, val: _Val, where: str, out: _Checks) -> None:
    number = f"TRY_CAST({val.text} AS DOUBLE)"
    is_num = f"{val.kind} IN {NUMERIC_KINDS}"
    bounds = []
    for key, op, word in (("minimum", "<", ">="), ("maximum", ">", "<=")):
        if key in schema:
            exclusive = schema.get("exclusiveM" + key[1:]) is True  # draft-04
            bounds.append((key, op + ("=" if exclusive else ""), (word[0] if exclusive else word), schema[key]))
    for key, op, word in (("exclusiveMinimum", "<=", ">"), ("exclusiveMaximum", ">=", "<")):
        if key in schema and not isinstance(schema[key], bool):
            bounds.append((key, op, word, schema[key]))
    for key, op, word, limit in bounds:
        out.add(f"{is_num} AND {number} {op} {_number(limit)}", where, key, val.text, f"{word} {limit}")


def _string(schema: dict, val: _Val, where: str, out: _Checks) -> None:
    is_str = f"{val.kind} = 'VARCHAR'"
    t = val.text
    if "minLength" in schema:
        out.add(f"{is_str} AND length({t}) < {int(schema['minLength'])}", where, "minLength", t,
                f"at least {schema['minLength']} characters")
    if "maxLength" in schema:
        out.add(f"{is_str} AND length({t}) > {int(schema['maxLength'])}", where, "maxLength", t,
                f"at most {schema['maxLength']} characters")
    if "pattern" in schema:
        out.add(f"{is_str} AND NOT regexp_matches({t}, {literal(schema['pattern'])})", where,
                "pattern", t, schema["pattern"])
    fmt = schema.get("format")
    if fmt in FORMATS:
        bad = f"NOT regexp_matches({t}, {literal(FORMATS[fmt])})"
        if fmt in FORMAT_CASTS:
            bad += f" OR TRY_CAST({t} AS {FORMAT_CASTS[fmt]}) IS NULL"
        out.add(f"{is_str} AND ({bad})", where, "format", t, fmt)


def compile_rules(schema: dict, slice_: TableSlice, root: str) -> tuple[str, _SliceSource]:
    """One SQL expression (a list of violation structs per row) for a schema over a slice."""
    src = _SliceSource(slice_, root)
    out = _Checks()
    _walk(src, schema, (), out)
    return out.sql(0), src


# --- validating and blocking ----------------------------------------------------------------


def validate(con: duckdb.DuckDBPyConnection, plan: TrackingPlan, batch: NormalizedBatch) -> pa.Table:
    """Every violation of the batch's rows (VIOLATION_SCHEMA), one query per planned table."""
    parts = []
    for s in batch.slices:
        if s.call == "track":
            found = _validate_events(con, plan, s)
        elif s.call in plan.calls:
            found = _validate_call(con, plan.calls[s.call], s)
        else:
            continue
        if found.num_rows:
            parts.append(found)
    if not parts:
        return VIOLATION_SCHEMA.empty_table()
    return pa.concat_tables(parts)


def _validate_events(con, plan: TrackingPlan, s: TableSlice) -> pa.Table:
    names = s.values["event_text"].text
    present = [n for n in pc.unique(names).to_pylist() if n is not None]
    branches, actions, arrays = [], [], {}
    for name in present:
        rules = plan.events.get(name)
        if rules is None:
            continue
        expr, src = compile_rules(rules.schema, s, "properties")
        for col, arr in src.arrays.items():
            arrays.setdefault(col, arr)
        branches.append(f"WHEN {literal(name)} THEN {expr}")
        actions.append(f"WHEN {literal(name)} THEN {literal(rules.on_violation)}")
    unplanned = ("[{'path': '/event', 'rule': 'unplanned_event', 'value': event, "
                 "'expected': 'an event of the tracking plan'}]")
    if branches and len(branches) == len(present):
        unplanned = NO_VIOLATIONS
    checks = f"CASE event {' '.join(branches)} ELSE {unplanned} END" if branches else unplanned
    action = (f"CASE event {' '.join(actions)} ELSE {literal(plan.unplanned_events)} END"
              if actions else literal(plan.unplanned_events))
    return _run(con, s, {"event": names, **arrays}, checks, action, "track")


def _validate_call(con, rules: Rules, s: TableSlice) -> pa.Table:
    expr, src = compile_rules(rules.schema, s, "traits")
    if expr == NO_VIOLATIONS:
        return VIOLATION_SCHEMA.empty_table()
    return _run(con, s, {"event": pa.nulls(s.num_rows, pa.string()), **src.arrays}, expr,
                literal(rules.on_violation), s.call)


def _run(con, s: TableSlice, columns: dict, checks: str, action: str, call: str) -> pa.Table:
    rows = pa.table({"line": s.line, "message_id": s.message_id, **columns})
    con.register("plan_rows", rows)
    try:
        result = con.sql(
            "SELECT line, message_id, event, action, v.path AS property_path, v.rule, "
            "v.value AS offending_value, v.expected FROM ("
            f"SELECT line, message_id, event, {action} AS action, unnest({checks}) AS v FROM plan_rows)"
        ).to_arrow_table()
    finally:
        con.unregister("plan_rows")
    result = result.read_all() if hasattr(result, "read_all") else result
    n = result.num_rows
    return pa.table({
        "line": result["line"].cast(pa.int64()),
        "message_id": result["message_id"].cast(pa.string()),
        "call": pa.array([call] * n, pa.string()),
        "table_name": pa.array([s.table] * n, pa.string()),
        "event": result["event"].cast(pa.string()),
        "property_path": result["property_path"],
        "rule": result["rule"],
        "offending_value": result["offending_value"],
        "expected": result["expected"],
        "action": result["action"].cast(pa.string()),
    }, schema=VIOLATION_SCHEMA)


def check_batch(con: duckdb.DuckDBPyConnection, plan: TrackingPlan, batch: NormalizedBatch,
                lines: pa.Table) -> CheckedBatch:
    """Validate a batch; events to block leave every slice and become rejects with their raw
    bytes (from `lines`, the batch's text as normalised: after PII scrubbing)."""
    violations = validate(con, plan, batch)
    blocked = pc.unique(violations.filter(pc.equal(violations["action"], "block"))["line"])
    fields_now = {f.name: getattr(batch, f.name) for f in fields(NormalizedBatch)}
    if not len(blocked):
        return CheckedBatch(**fields_now, violations=violations)
    keep_slices = []
    for s in batch.slices:
        keep = pc.invert(pc.is_in(s.line, blocked))
        if pc.all(keep).as_py():
            keep_slices.append(s)
        elif pc.any(keep).as_py():
            keep_slices.append(_filter_slice(s, keep))
    tables = {s.table for s in keep_slices}
    raw = lines.filter(pc.is_in(lines["line_no"], blocked))
    details = _details(violations, blocked)
    rejections = list(batch.rejections) + [
        Rejection(line, text.encode("utf-8").removesuffix(b"\n"), REJECT_REASON, details.get(line, ""))
        for line, text in zip(raw["line_no"].to_pylist(), raw["raw"].to_pylist())
    ]
    rejections.sort(key=lambda r: r.line)
    fields_now.update(
        slices=keep_slices,
        messages=batch.messages.filter(pc.invert(pc.is_in(batch.messages["line_no"], blocked))),
        rejections=rejections,
        name_map=[m for m in batch.name_map if _still_named(m, tables)],
        valid=batch.valid - len(blocked),
    )
    return CheckedBatch(**fields_now, violations=violations)


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
        text = pa.concat_arrays([_combine(values[c].text) for c in names])
        kind = pa.concat_arrays([_combine(values[c].kind) for c in names])
        counts = _type_counts(text, kind, pa.chunked_array([pa.array([s.table] * len(line), pa.string())]), len(names))
        for i, c in enumerate(names):
            columns[c] = ColumnStats(types=counts.get(i, {}).get(s.table, {}), sources=s.columns[c].sources)
    return TableSlice(s.table, s.call, line, s.message_id.filter(keep), values, columns, unnamed)


def _filter_values(v: Values, keep: pa.Array) -> Values:
    """Every array a Values carries (text, kind, and any typed form), filtered alike."""
    arrays = {f.name: getattr(v, f.name) for f in fields(v)}
    return replace(v, **{k: a.filter(keep) for k, a in arrays.items() if isinstance(a, (pa.Array, pa.ChunkedArray))})


def _combine(array) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def parse_pointer(ptr: str) -> tuple[str, ...]:
    """The key path of a JSON pointer (inverse of `normalize.pointer`)."""
    if not ptr:
        return ()
    return tuple(k.replace("~1", "/").replace("~0", "~") for k in ptr[1:].split("/"))
