"""PII controls: drop or hash configured properties, traits and context fields in the raw lines,
before the normaliser (or anything else) sees them, so raw PII never reaches the warehouse:
not its tables, not `_loader.rejects`, not `_loader.discards` or `_loader.violations`.

Lines that are JSON objects are rewritten in DuckDB, one `json_merge_patch` statement per
configured path over only the lines that mention a configured key. Lines that are not JSON
(they become rejects) have every `"key": value` of a configured key redacted by a regex.
Hashing is SHA-256 of salt + value (the value as text: strings unquoted), in lowercase hex; a
value that already is 64 lowercase hex digits is left as is, so scrubbing twice (a replay)
changes nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pyarrow as pa

from loader.errors import UsageError
from loader.normalize import pointer
from loader.protocols import parse_pointer, read_document
from loader.read import Rejection
from loader.spec import CALL_TYPES
from loader.sql import literal

SALT_ENV = "SEGMENT_LOADER_PII_SALT"
ACTIONS = ("drop", "hash")
ROOTS = ("properties", "traits", "context")
# A bare key (`email`) means that key at the top of each payload: properties, traits, and the
# traits a client copies into context.
PAYLOAD_ROOTS = (("properties",), ("traits",), ("context", "traits"))
REDACTED = "[redacted]"
HASHED_RE = "[0-9a-f]{64}"


@dataclass(frozen=True)
class PiiRule:
    path: tuple[str, ...]  # from the message root: ("context", "ip")
    action: str  # drop or hash
    events: tuple[str, ...] = ()  # only these track events (exact names); () with no calls: all
    calls: tuple[str, ...] = ()  # only these call types (track, identify, page...)


@dataclass(frozen=True)
class PiiPolicy:
    rules: tuple[PiiRule, ...]
    salt: str

    @property
    def keys(self) -> list[str]:
        """The last key of every configured path: what the regex redaction looks for."""
        return sorted({r.path[-1] for r in self.rules})


def load_policy(path: str | Path, env: dict | None = None) -> PiiPolicy:
    """Read a PII config (JSON, or YAML by its name)."""
    return parse_policy(read_document(path, "PII config"), origin=str(path), env=env)


def parse_policy(doc, *, origin: str = "PII config", env: dict | None = None) -> PiiPolicy:
    """`{"drop": [paths], "hash": [paths], "rules": [{"path", "action", "events", "calls"}],
    "salt": "..."}`. A path is dotted (`context.ip`, `properties.address.street`) or a JSON
    pointer (`/properties/a.b`); one that does not start with properties, traits or context
    means that key in properties, traits and context.traits."""
    if not isinstance(doc, dict):
        raise UsageError(f"{origin}: a PII config is an object with drop, hash or rules")
    unknown = set(doc) - {"drop", "hash", "rules", "salt", "description"}
    if unknown:
        raise UsageError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))} (expected drop, hash, rules, salt)")
    specs: list[dict] = []
    for action in ACTIONS:
        paths = doc.get(action, [])
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise UsageError(f"{origin}: {action} must be a list of paths")
        specs += [{"path": p, "action": action} for p in paths]
    if not isinstance(doc.get("rules", []), list):
        raise UsageError(f"{origin}: rules must be a list")
    specs += doc.get("rules", [])
    rules: list[PiiRule] = []
    for i, spec in enumerate(specs):
        where = f"{origin}: rule {i + 1}"
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise UsageError(f"{where}: needs a path")
        if spec.get("action") not in ACTIONS:
            raise UsageError(f"{where}: action must be drop or hash, not {spec.get('action')!r}")
        events, calls = spec.get("events", []), spec.get("calls", [])
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise UsageError(f"{where}: events must be a list of event names")
        if not isinstance(calls, list) or any(c not in CALL_TYPES for c in calls):
            raise UsageError(f"{where}: calls must be a list of {', '.join(CALL_TYPES)}")
        for path in _expand(spec["path"], where):
            rules.append(PiiRule(path, spec["action"], tuple(events), tuple(calls)))
    env = os.environ if env is None else env
    salt = env.get(SALT_ENV) or doc.get("salt") or ""
    if not isinstance(salt, str):
        raise UsageError(f"{origin}: salt must be a string")
    if any(r.action == "hash" for r in rules) and not salt:
        raise UsageError(f"{origin}: hashing needs a salt (set {SALT_ENV} or \"salt\" in the config); "
                         "an unsalted hash of an email address is easy to reverse")
    return PiiPolicy(tuple(rules), salt)


def _expand(text: str, where: str) -> list[tuple[str, ...]]:
    path = parse_pointer(text) if text.startswith("/") else tuple(text.split("."))
    if not path or any(k == "" for k in path):
        raise UsageError(f"{where}: {text!r} is not a path")
    if path[0] in ROOTS:
        if len(path) == 1:
            raise UsageError(f"{where}: {text!r} names a whole root; list the keys inside it")
        return [path]
    return [root + path for root in PAYLOAD_ROOTS]


def _scope(rule: PiiRule) -> str:
    call = "trim(raw ->> '$.type')"
    terms = []
    if rule.calls:
        terms.append(f"{call} IN ({', '.join(literal(c) for c in rule.calls)})")
    if rule.events:
        terms.append(f"({call} = 'track' AND trim(raw ->> '$.event') IN "
                     f"({', '.join(literal(e) for e in rule.events)}))")
    return "(" + " OR ".join(terms) + ")" if terms else "true"


def _rewrite(rule: PiiRule) -> tuple[str, str]:
    """SET and WHERE of the UPDATE that applies one rule to JSON lines that hold its path.
    Every parent must be an object, so a patch never turns an array or a string into one."""
    ptr = literal(pointer(rule.path))
    parents = " AND ".join(f"json_type(raw, {literal(pointer(rule.path[:i]))}) = 'OBJECT'"
                           for i in range(1, len(rule.path)))
    # A line that does not spell the key (nor holds an escape that could) is not parsed.
    mentions = literal('"' + re.escape(json.dumps(rule.path[-1])[1:-1]) + '"|\\\\u')
    where = (f"is_json AND regexp_matches(raw, {mentions}) AND json_exists(raw, {ptr}) "
             f"AND {parents or 'true'} AND {_scope(rule)}")
    if rule.action == "drop":
        patch: object = None
        for key in reversed(rule.path):
            patch = {key: patch}
        return f"json_merge_patch(raw, {literal(json.dumps(patch))})::VARCHAR", where
    value = f"(raw ->> {ptr})"
    new = f"CASE WHEN regexp_full_match({value}, '{HASHED_RE}') THEN {value} ELSE sha256($salt || {value}) END"
    for key in reversed(rule.path):
        new = f"json_object({literal(key)}, {new})"
    return f"json_merge_patch(raw, {new})::VARCHAR", f"{where} AND {value} IS NOT NULL"


def _redact_re(policy: PiiPolicy) -> str:
    keys = "|".join(re.escape(json.dumps(k)[1:-1]) for k in policy.keys)  # as spelled in JSON text
    # "key": then a string (possibly cut off by the end of the line) or a bare token.
    return r'("(?:' + keys + r')"\s*:\s*)("(?:[^"\\]|\\.)*(?:"|$)|[^,}\]\s]+)'


def scrub_lines(con: duckdb.DuckDBPyConnection, policy: PiiPolicy, lines: pa.Table) -> pa.Table:
    """Lines (line_no, raw) with the policy applied. Lines that mention no configured key
    (and hold no \\u escape that could spell one) are returned untouched, byte for byte."""
    if not policy.rules or not lines.num_rows:
        return lines
    mentions = r'"(?:' + "|".join(re.escape(json.dumps(k)[1:-1]) for k in policy.keys) + r')"|\\u'
    con.register("pii_lines", lines)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE pii_work AS SELECT line_no, raw::VARCHAR AS raw, "
            "json_valid(raw) AND left(ltrim(raw), 1) = '{' AS is_json "
            "FROM pii_lines WHERE regexp_matches(raw, $mentions)", {"mentions": mentions})
        if not con.execute("SELECT count(*) FROM pii_work").fetchall()[0][0]:
            return lines
        con.execute("UPDATE pii_work SET raw = regexp_replace(raw, $re, $to, 'g') WHERE NOT is_json",
                    {"re": _redact_re(policy), "to": '\\1"' + REDACTED + '"'})
        for rule in policy.rules:
            new, where = _rewrite(rule)
            params = {"salt": policy.salt} if rule.action == "hash" else {}
            con.execute(f"UPDATE pii_work SET raw = {new} WHERE {where}", params)
        result = con.sql(
            "SELECT l.line_no, coalesce(w.raw, l.raw::VARCHAR) AS raw FROM pii_lines l "
            "LEFT JOIN pii_work w USING (line_no) ORDER BY l.line_no").to_arrow_table()
        result = result.read_all() if hasattr(result, "read_all") else result
        return result.cast(pa.schema([("line_no", pa.int64()), ("raw", pa.string())]))
    finally:
        con.unregister("pii_lines")
        con.execute("DROP TABLE IF EXISTS pii_work")


def scrub_rejections(con: duckdb.DuckDBPyConnection, policy: PiiPolicy,
                     rejections: list[Rejection]) -> list[Rejection]:
    """Rejected lines get the same treatment: JSON is scrubbed, anything else redacted; bytes
    that are not UTF-8 are redacted by the same regex in Python (rejects are few)."""
    if not policy.rules or not rejections:
        return rejections
    out = list(rejections)
    index, texts = [], []
    for i, r in enumerate(rejections):
        try:
            texts.append(r.raw.decode("utf-8"))
            index.append(i)
        except UnicodeDecodeError:
            out[i] = replace(r, raw=redact_bytes(policy, r.raw))
    if texts:
        table = pa.table({"line_no": pa.array(index, pa.int64()), "raw": pa.array(texts, pa.string())})
        scrubbed = scrub_lines(con, policy, table)
        for i, text in zip(scrubbed["line_no"].to_pylist(), scrubbed["raw"].to_pylist()):
            out[i] = replace(rejections[i], raw=text.encode("utf-8"))
    return out


def redact_bytes(policy: PiiPolicy, raw: bytes) -> bytes:
    pattern = re.compile(_redact_re(policy).encode("utf-8"))
    return pattern.sub(b'\\1"' + REDACTED.encode() + b'"', raw)


def scrub(con: duckdb.DuckDBPyConnection, policy: PiiPolicy | None, lines: pa.Table,
          rejections: list[Rejection]) -> tuple[pa.Table, list[Rejection]]:
    """A raw batch with the policy applied to its lines and to the lines already rejected."""
    if policy is None:
        return lines, rejections
    return scrub_lines(con, policy, lines), scrub_rejections(con, policy, rejections)
