"""SensorThings ``$`` query options -> SQL with bound parameters.

Supported: ``$top`` (default 100, at most 10,000), ``$skip`` (at most 10,000: deeper pages come from
``@iot.nextLink``), ``$count``, ``$select``, ``$orderby`` (``prop [asc|desc]``, comma-separated),
``$expand`` (one level, with ``($select=..;$filter=..;$orderby=..;$top=..)``), ``$filter`` with ``eq ne gt
ge lt le``, ``and or not``, parentheses, literals (numbers, ``'strings'``, ISO 8601 times quoted or not,
``true false null``), properties, ``Nav/prop`` for to-one navigation (``Datastream/id``, ``Thing/name``)
and ``properties/key`` inside JSON properties. ``$skiptoken`` carries the keyset cursor of
``@iot.nextLink``: paging never uses a deep OFFSET. Any other ``$`` option, unknown property or malformed
expression is an ``InputError`` naming the option.

Identifiers only ever come from the entity model (``sta_shape``); every literal is a bound parameter.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from citytwin.errors import InputError
from citytwin.telemetry import sta_shape as shape
from citytwin.telemetry.sta_shape import EntitySet, Prop

DEFAULT_TOP = 100
MAX_TOP = 10_000
MAX_SKIP = 10_000
OPTIONS = {"$top", "$skip", "$count", "$select", "$orderby", "$expand", "$filter", "$skiptoken",
           "$resultFormat"}
EXPAND_OPTIONS = {"$top", "$skip", "$select", "$orderby", "$filter", "$count"}
COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
SQL_TYPES = {shape.ID: "bigint", shape.TEXT: "text", shape.NUMBER: "double precision",
             shape.TIME: "timestamptz", shape.FLAGS: "smallint"}
NULL_SENTINEL = {shape.NUMBER: "'NaN'::float8", shape.TIME: "'-infinity'::timestamptz", shape.TEXT: "''",
                 shape.FLAGS: "0"}


@dataclass
class Options:
    top: int = DEFAULT_TOP
    skip: int = 0
    count: bool = False
    select: list[str] | None = None
    orderby: list[tuple[Prop, bool]] = field(default_factory=list)     # (property, descending)
    orderby_text: str = ""
    filter_text: str | None = None
    expand: list[tuple[str, "Options"]] = field(default_factory=list)
    skiptoken: str | None = None
    raw: dict[str, str] = field(default_factory=dict)


def parse_options(es: EntitySet, params: Mapping[str, str], *, nested: bool = False) -> Options:
    """Check and parse the ``$`` options for entity set ``es`` (``nested``: inside ``$expand(...)``)."""
    allowed = EXPAND_OPTIONS if nested else OPTIONS
    opts = Options(raw={k: v for k, v in params.items() if k.startswith("$")})
    for key, value in opts.raw.items():
        if key not in allowed:
            where = "inside $expand" if nested else "here"
            raise InputError(f"query option {key} is not supported {where}; use {', '.join(sorted(allowed))}")
        if key == "$top":
            opts.top = _int_option(key, value, 0, MAX_TOP)
        elif key == "$skip":
            opts.skip = _int_option(key, value, 0, MAX_SKIP, hint="; page further with @iot.nextLink")
        elif key == "$count":
            if value not in ("true", "false"):
                raise InputError(f"$count must be true or false, got {value!r}")
            opts.count = value == "true"
        elif key == "$select":
            opts.select = _parse_select(es, value)
        elif key == "$orderby":
            opts.orderby, opts.orderby_text = _parse_orderby(es, value), value
        elif key == "$filter":
            opts.filter_text = value
            compile_filter(es, value, {}, "e")                 # fail early with a 400
        elif key == "$expand":
            opts.expand = _parse_expand(es, value)
        elif key == "$skiptoken":
            opts.skiptoken = value
        elif key == "$resultFormat" and value != "default":
            raise InputError("$resultFormat: only the default result format is supported")
    return opts


def _int_option(key: str, value: str, low: int, high: int, hint: str = "") -> int:
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"{key} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise InputError(f"{key} must be between {low} and {high}, got {number}{hint}")
    return number


def _parse_select(es: EntitySet, value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError("$select is empty")
    out = []
    for name in names:
        if name in es.navs:
            continue                                        # navigation links: nothing to select
        out.append(es.prop(name, "$select").name)
    return out


def _parse_orderby(es: EntitySet, value: str) -> list[tuple[Prop, bool]]:
    out = []
    for part in (p.strip() for p in value.split(",")):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise InputError(f"$orderby: expected 'property [asc|desc]', got {part!r}")
        prop = es.prop(words[0], "$orderby")
        if not prop.sortable:
            raise InputError(f"$orderby: {es.name} cannot be ordered by {prop.name}")
        out.append((prop, len(words) == 2 and words[1].lower() == "desc"))
    return out


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, []
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    if depth != 0:
        raise InputError(f"unbalanced parentheses in {text!r}")
    return [p.strip() for p in parts if p.strip()]


def _parse_expand(es: EntitySet, value: str) -> list[tuple[str, Options]]:
    out = []
    for item in split_top(value, ","):
        match = re.fullmatch(r"([A-Za-z]+)(?:\((.*)\))?", item, re.S)
        if match is None:
            if "/" in item:
                raise InputError(f"$expand: only one level of expansion is supported, got {item!r}")
            raise InputError(f"$expand: cannot read {item!r}")
        nav = es.nav(match.group(1), "$expand")
        target = shape.entity_set(nav.target)
        inner: dict[str, str] = {}
        for option in split_top(match.group(2) or "", ";"):
            key, sep, val = option.partition("=")
            if not sep:
                raise InputError(f"$expand: expected $option=value inside {item!r}, got {option!r}")
            if key.strip() == "$expand":
                raise InputError("$expand: only one level of expansion is supported")
            inner[key.strip()] = val.strip()
        out.append((nav.name, parse_options(target, inner, nested=True)))
    return out


# -- $filter ------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<lp>\() | (?P<rp>\)) | (?P<comma>,)
  | (?P<name>[A-Za-z_@$][A-Za-z0-9_@./$]*)
  )""", re.X)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise InputError(f"$filter: cannot read {text[pos:pos + 30]!r}")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _FilterCompiler:
    """Recursive descent over the tokens, emitting SQL and filling ``params``."""

    def __init__(self, es: EntitySet, text: str, params: dict, alias: str) -> None:
        self.es, self.text, self.params, self.alias = es, text, params, alias
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise InputError(f"$filter: unexpected end of {self.text!r}")
        self.i += 1
        return tok

    def compile(self) -> str:
        sql = self.or_expr()
        if self.peek() is not None:
            raise InputError(f"$filter: unexpected {self.peek()[1]!r} in {self.text!r}")
        return sql

    def or_expr(self) -> str:
        parts = [self.and_expr()]
        while self.peek() == ("name", "or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def and_expr(self) -> str:
        parts = [self.not_expr()]
        while self.peek() == ("name", "and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def not_expr(self) -> str:
        if self.peek() == ("name", "not"):
            self.take()
            return f"(NOT {self.not_expr()})"
        if self.peek() is not None and self.peek()[0] == "lp":
            self.take()
            inner = self.or_expr()
            if self.take()[0] != "rp":
                raise InputError(f"$filter: missing ')' in {self.text!r}")
            return f"({inner})"
        return self.comparison()

    def comparison(self) -> str:
        left = self.operand()
        op_tok = self.take()
        if op_tok[0] != "name" or op_tok[1] not in COMPARISONS:
            raise InputError(f"$filter: expected one of {', '.join(COMPARISONS)} after {left[1]!r}, "
                             f"got {op_tok[1]!r}")
        right = self.operand()
        return self.bind(left, op_tok[1], right)

    def operand(self) -> tuple:
        kind, value = self.take()
        if kind == "str":
            return ("lit", value[1:-1].replace("''", "'"))
        if kind == "dt":
            return ("lit", _parse_time(value))
        if kind == "num":
            return ("lit", float(value) if any(c in value for c in ".eE") else int(value))
        if kind == "name":
            if value in ("true", "false"):
                return ("lit", value == "true")
            if value == "null":
                return ("lit", None)
            if value in COMPARISONS or value in ("and", "or", "not"):
                raise InputError(f"$filter: expected a property or value, got {value!r}")
            if self.peek() is not None and self.peek()[0] == "lp":
                raise InputError(f"$filter: function {value}() is not supported")
            return self.property(value)
        raise InputError(f"$filter: unexpected {value!r}")

    def property(self, path: str) -> tuple:
        """('prop', sql, kind, label) for a property path."""
        a = self.alias
        head, _, rest = path.partition("/")
        if not rest:
            prop = self.es.prop(head, "$filter")
            if prop.kind in (shape.JSON, shape.GEOMETRY):
                raise InputError(f"$filter: compare inside {prop.name} with {prop.name}/<key>")
            return ("prop", prop.sql.format(a=a), prop.kind, path)
        if head in self.es.props and self.es.props[head].kind == shape.JSON:
            key = f"fp{len(self.params)}"
            self.params[key] = rest
            column = self.es.props[head].sql.format(a=a)
            return ("prop", f"({column} -> CAST(:{key} AS text))", shape.JSON, path)
        nav = self.es.navs.get(head)
        if nav is None or nav.kind != "to_one" or "/" in rest:
            raise InputError(f"$filter: {path!r} is not a property of {self.es.name} "
                             "(use Nav/property for to-one navigation, e.g. Datastream/id)")
        target = shape.entity_set(nav.target)
        prop = target.prop(rest, "$filter")
        if prop.kind in (shape.JSON, shape.GEOMETRY):
            raise InputError(f"$filter: {path!r} cannot be compared")
        if prop.name == "id":
            return ("prop", f"{a}.{nav.fk}", shape.ID, path)
        inner = f"n{len(self.params)}"
        return ("prop", f"(SELECT {prop.sql.format(a=inner)} FROM {target.table} {inner} "
                        f"WHERE {inner}.id = {a}.{nav.fk})", prop.kind, path)

    def bind(self, left: tuple, op: str, right: tuple) -> str:
        if left[0] == "lit" and right[0] == "prop":
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if left[0] != "prop":
            raise InputError("$filter: a comparison needs a property on one side")
        sql_op = COMPARISONS[op]
        if right[0] == "prop":
            if _family(left[2]) != _family(right[2]):
                raise InputError(f"$filter: cannot compare {left[3]} with {right[3]}")
            return f"{left[1]} {sql_op} {right[1]}"
        value = right[1]
        if value is None:
            if op not in ("eq", "ne"):
                raise InputError(f"$filter: null can only be compared with eq or ne ({left[3]})")
            return f"{left[1]} IS {'NOT ' if op == 'ne' else ''}NULL"
        key = f"f{len(self.params)}"
        kind = left[2]
        if kind == shape.JSON:
            self.params[key] = json.dumps(value if not isinstance(value, datetime) else shape.iso(value))
            return f"{left[1]} {sql_op} CAST(:{key} AS jsonb)"
        if kind == shape.OBS_ID:
            if op not in ("eq", "ne") or not isinstance(value, str):
                raise InputError("$filter: Observation ids compare with eq or ne and a quoted id")
            ds, micros = shape.parse_key(shape.ENTITY_SETS["Observations"], value)
            self.params[key], self.params[key + "t"] = ds, micros
            cond = (f"({self.alias}.datastream_id = :{key} AND {self.alias}.phenomenon_time = "
                    f"timestamptz 'epoch' + CAST(:{key}t AS bigint) * interval '1 microsecond')")
            return cond if op == "eq" else f"NOT {cond}"
        self.params[key] = _coerce(kind, value, left[3])
        return f"{left[1]} {sql_op} CAST(:{key} AS {SQL_TYPES[kind]})"


def _family(kind: str) -> str:
    return {shape.ID: "number", shape.NUMBER: "number", shape.FLAGS: "number"}.get(kind, kind)


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"$filter: {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _coerce(kind: str, value: object, label: str) -> object:
    if kind == shape.TIME:
        if isinstance(value, str):
            return _parse_time(value)
        if isinstance(value, datetime):
            return value
    elif kind in (shape.NUMBER, shape.ID, shape.FLAGS):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if kind != shape.NUMBER and value != int(value):
                raise InputError(f"$filter: {label} is an integer, got {value}")
            return value if kind == shape.NUMBER else int(value)
    elif kind == shape.TEXT:
        if isinstance(value, str):
            return value
    raise InputError(f"$filter: cannot compare {label} with {value!r}")


def compile_filter(es: EntitySet, text: str, params: dict, alias: str) -> str:
    """``$filter`` text -> a SQL condition over ``alias`` (literals added to ``params``)."""
    if not text.strip():
        raise InputError("$filter is empty")
    return _FilterCompiler(es, text, params, alias).compile()


# -- ordering and keyset cursors ------------------------------------------------------------------------
@dataclass(frozen=True)
class SortKey:
    sql: str              # expression over the alias, NULLs replaced by a sentinel
    kind: str
    desc: bool


def sort_keys(es: EntitySet, opts: Options, alias: str) -> list[SortKey]:
    """The ORDER BY keys: the requested ones, then the primary key as tie-breaker (always unique)."""
    keys: list[SortKey] = []
    id_desc = False
    for prop, desc in opts.orderby:
        if prop.name == "id":
            id_desc = desc
            break
        sql = prop.sql.format(a=alias)
        if prop.kind in NULL_SENTINEL:
            sql = f"COALESCE({sql}, {NULL_SENTINEL[prop.kind]})"
        keys.append(SortKey(sql, prop.kind, desc))
    for column in es.key:
        kind = shape.TIME if column == "phenomenon_time" else shape.ID
        keys.append(SortKey(f"{alias}.{column}", kind, id_desc))
    return keys


def order_sql(keys: list[SortKey]) -> str:
    return ", ".join(f"{k.sql} {'DESC' if k.desc else 'ASC'}" for k in keys)


def encode_cursor(opts: Options, values: list) -> str:
    body = {"o": opts.orderby_text, "v": [_cursor_value(v) for v in values]}
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def _cursor_value(value: object) -> object:
    if isinstance(value, datetime):
        return {"t": value.astimezone(timezone.utc).isoformat()}
    if isinstance(value, float) and value != value:
        return {"nan": True}
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return {"inf": value > 0}
    return value


def cursor_condition(opts: Options, keys: list[SortKey], params: dict) -> str:
    """The WHERE condition for rows after the cursor in ``opts.skiptoken`` (keyset pagination)."""
    try:
        padded = opts.skiptoken + "=" * (-len(opts.skiptoken) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        values = body["v"]
        if body["o"] != opts.orderby_text or len(values) != len(keys):
            raise ValueError("cursor for another ordering")
    except (ValueError, KeyError, TypeError):
        raise InputError("$skiptoken is not a cursor this server issued for this query; "
                         "follow @iot.nextLink as given") from None
    names = []
    for i, (key, value) in enumerate(zip(keys, values)):
        name = f"c{i}"
        if isinstance(value, dict):
            value = (datetime.fromisoformat(value["t"]) if "t" in value else
                     float("nan") if "nan" in value else float("inf") if value.get("inf") else float("-inf"))
        params[name] = value
        names.append(f"CAST(:{name} AS {SQL_TYPES.get(key.kind, 'bigint')})")
    if len({k.desc for k in keys}) == 1:
        op = "<" if keys[0].desc else ">"
        return f"({', '.join(k.sql for k in keys)}) {op} ({', '.join(names)})"
    ors = []
    for i, key in enumerate(keys):
        eqs = [f"{keys[j].sql} = {names[j]}" for j in range(i)]
        eqs.append(f"{key.sql} {'<' if key.desc else '>'} {names[i]}")
        ors.append("(" + " AND ".join(eqs) + ")")
    return "(" + " OR ".join(ors) + ")"
