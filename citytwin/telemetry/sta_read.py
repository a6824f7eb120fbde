"""Answering SensorThings read requests: resource paths, collections with keyset paging, entities, $expand.

Paths: ``""`` (service root), ``Set``, ``Set(id)``, ``Set(id)/Nav`` (collection or entity),
``Set(id)/Nav(id)``, ``Set(id)/property``. One SQL statement per collection page (plus one per expanded
navigation property and one for ``$count``); pages end with ``@iot.nextLink`` carrying a keyset cursor.
"""

from __future__ import annotations

import re
from collections import defaultdict
from urllib.parse import quote, urlencode

from sqlalchemy import Connection, text

from citytwin.errors import InputError, NotFoundError
from citytwin.telemetry import sta_shape as shape
from citytwin.telemetry.sta_query import (
    Options, compile_filter, cursor_condition, encode_cursor, order_sql, parse_options, sort_keys,
)
from citytwin.telemetry.sta_shape import EntitySet, Nav

CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
    "http://www.opengis.net/spec/iot_tasking/1.0/req/tasking-core",
]
_SEGMENT = re.compile(r"^([A-Za-z]+)(?:\((.+)\))?$")


def service_root(base: str) -> dict:
    return {"value": [{"name": name, "url": f"{base}/{name}"} for name in shape.ENTITY_SETS],
            "serverSettings": {"conformance": CONFORMANCE}}


def read_path(conn: Connection, path: str, params: dict[str, str], base: str) -> dict:
    """The JSON answer for a resource path (relative to the service root) and its query options."""
    path = path.strip("/")
    if not path:
        return service_root(base)
    segments = path.split("/")
    if len(segments) > 2:
        raise InputError(f"resource path {path!r} is deeper than this server supports (Set(id)/Nav)")
    name, key_text = _segment(segments[0])
    es = shape.entity_set(name)
    if len(segments) == 1:
        if key_text is None:
            opts = parse_options(es, params)
            return read_collection(conn, es, opts, base, f"{base}/{es.name}")
        return read_entity(conn, es, shape.parse_key(es, key_text), parse_options(es, params), base)
    if key_text is None:
        raise InputError(f"{segments[0]} needs an id before /{segments[1]}")
    parent_key = shape.parse_key(es, key_text)
    parent_row = _parent_row(conn, es, parent_key)
    child, child_key = _segment(segments[1])
    if child in es.props and child_key is None:
        entity = read_entity(conn, es, parent_key, parse_options(es, {"$select": child}), base)
        return {child: entity.get("@iot.id" if child == "id" else child)}
    nav = es.nav(child, "resource path")
    target = shape.entity_set(nav.target)
    opts = parse_options(target, params)
    if nav.kind == "to_one":
        fk = parent_row[nav.fk]
        if fk is None:
            raise NotFoundError(f"{es.singular} {key_text} has no {nav.name}")
        return read_entity(conn, target, (fk,), opts, base)
    scope_params: dict = {"scope0": parent_row["id"]}
    scope = _nav_condition(nav, ":scope0")
    if child_key is not None:
        key = shape.parse_key(target, child_key)
        scope += " AND " + shape.key_condition(target, "e", key, scope_params, prefix="ck")
        rows = _page(conn, target, opts, scope, scope_params, single=True)
        if not rows:
            raise NotFoundError(f"{target.singular} {child_key} is not among the {nav.name} "
                                f"of {es.singular} {key_text}")
        return _render_rows(conn, target, opts, rows, base)[0]
    url = f"{shape.entity_url(base, es, parent_row['id'])}/{nav.name}"
    return read_collection(conn, target, opts, base, url, scope, scope_params)


def _segment(raw: str) -> tuple[str, str | None]:
    match = _SEGMENT.match(raw)
    if match is None:
        raise NotFoundError(f"cannot read path segment {raw!r}")
    return match.group(1), match.group(2)


def _parent_row(conn: Connection, es: EntitySet, key: tuple) -> dict:
    params: dict = {}
    cond = shape.key_condition(es, "e", key, params)
    cols = ", ".join([f"{es.props['id'].sql.format(a='e')} AS id"] + [f"e.{h}" for h in es.hidden])
    row = conn.execute(text(f"SELECT {cols} FROM {es.table} e WHERE {cond}"), params).mappings().first()
    if row is None:
        raise NotFoundError(f"{es.singular} {'_'.join(map(str, key))} does not exist")
    return dict(row)


def _nav_condition(nav: Nav, parent: str) -> str:
    """Rows of the navigation target that belong to the parent id expression ``parent``."""
    if nav.kind == "to_many":
        return f"e.{nav.fk} = {parent}"
    if nav.kind == "link":
        return f"e.id IN (SELECT {nav.link_child} FROM {nav.link} WHERE {nav.link_parent} = {parent})"
    raise ValueError(nav.kind)


def _columns(es: EntitySet, alias: str) -> list[str]:
    cols = [f'{p.sql.format(a=alias)} AS "{name}"' for name, p in es.props.items()]
    cols += [f'{alias}.{h} AS "{h}"' for h in es.hidden if h not in es.props]
    return cols


def _page(conn: Connection, es: EntitySet, opts: Options, scope: str | None, scope_params: dict,
          *, single: bool = False) -> list[dict]:
    params = dict(scope_params)
    where = [scope] if scope else []
    if opts.filter_text:
        where.append(compile_filter(es, opts.filter_text, params, "e"))
    keys = sort_keys(es, opts, "e")
    if opts.skiptoken and not single:
        where.append(cursor_condition(opts, keys, params))
    cols = _columns(es, "e") + [f'{k.sql} AS "_s{i}"' for i, k in enumerate(keys)]
    sql = f"SELECT {', '.join(cols)} FROM {es.table} e"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order_sql(keys)} LIMIT :_limit OFFSET :_offset"
    params["_limit"] = 1 if single else opts.top + 1
    params["_offset"] = 0 if single else opts.skip
    return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]


def _count(conn: Connection, es: EntitySet, opts: Options, scope: str | None, scope_params: dict) -> int:
    params = dict(scope_params)
    where = [scope] if scope else []
    if opts.filter_text:
        where.append(compile_filter(es, opts.filter_text, params, "e"))
    sql = f"SELECT count(*) FROM {es.table} e" + (" WHERE " + " AND ".join(where) if where else "")
    return conn.execute(text(sql), params).scalar_one()


def _next_link(url: str, opts: Options, last_row: dict) -> str:
    values = [last_row[f"_s{i}"] for i in range(sum(1 for k in last_row if k.startswith("_s")))]
    query = {k: v for k, v in opts.raw.items() if k not in ("$skip", "$skiptoken")}
    query["$skiptoken"] = encode_cursor(opts, values)
    return f"{url}?{urlencode(query, quote_via=quote, safe='(),$')}"


def read_collection(conn: Connection, es: EntitySet, opts: Options, base: str, url: str,
                    scope: str | None = None, scope_params: dict | None = None) -> dict:
    rows = _page(conn, es, opts, scope, scope_params or {})
    more = len(rows) > opts.top
    rows = rows[:opts.top]
    out: dict = {}
    if opts.count:
        out["@iot.count"] = _count(conn, es, opts, scope, scope_params or {})
    out["value"] = _render_rows(conn, es, opts, rows, base)
    if more and rows:
        out["@iot.nextLink"] = _next_link(url, opts, rows[-1])
    return out


def read_entity(conn: Connection, es: EntitySet, key: tuple, opts: Options, base: str) -> dict:
    params: dict = {}
    rows = _page(conn, es, opts, shape.key_condition(es, "e", key, params), params, single=True)
    if not rows:
        raise NotFoundError(f"{es.singular} {'_'.join(map(str, key))} does not exist")
    return _render_rows(conn, es, opts, rows, base)[0]


def _render_rows(conn: Connection, es: EntitySet, opts: Options, rows: list[dict], base: str) -> list[dict]:
    entities = [shape.render_entity(es, row, opts.select, base) for row in rows]
    for nav_name, sub in opts.expand:
        nav = es.navs[nav_name]
        target = shape.entity_set(nav.target)
        if nav.kind == "to_one":
            _expand_to_one(conn, nav, target, sub, rows, entities, base)
        else:
            _expand_to_many(conn, es, nav, target, sub, rows, entities, base)
    return entities


def _expand_to_one(conn, nav: Nav, target: EntitySet, sub: Options, rows, entities, base: str) -> None:
    ids = sorted({r[nav.fk] for r in rows if r.get(nav.fk) is not None})
    params: dict = {"ids": ids}
    cond = "e.id = ANY(:ids)"
    if sub.filter_text:
        cond += " AND " + compile_filter(target, sub.filter_text, params, "e")
    sql = f"SELECT {', '.join(_columns(target, 'e'))} FROM {target.table} e WHERE {cond}"
    found = [dict(r) for r in conn.execute(text(sql), params).mappings().all()]
    rendered = _render_rows(conn, target, Options(select=sub.select), found, base)
    by_id = {r["id"]: entity for r, entity in zip(found, rendered)}
    for row, entity in zip(rows, entities):
        entity[nav.name] = by_id.get(row.get(nav.fk))


def _expand_to_many(conn, es: EntitySet, nav: Nav, target: EntitySet, sub: Options, rows, entities,
                    base: str) -> None:
    params: dict = {"pids": [r["id"] for r in rows]}
    where = [_nav_condition(nav, "p.pid")]
    if sub.filter_text:
        where.append(compile_filter(target, sub.filter_text, params, "e"))
    keys = sort_keys(target, sub, "e")
    cols = _columns(target, "e") + [f'{k.sql} AS "_s{i}"' for i, k in enumerate(keys)]
    params["_limit"], params["_offset"] = sub.top + 1, sub.skip
    sql = (f"SELECT p.pid AS _parent, x.* FROM unnest(CAST(:pids AS bigint[])) AS p(pid) CROSS JOIN LATERAL "
           f"(SELECT {', '.join(cols)} FROM {target.table} e WHERE {' AND '.join(where)} "
           f"ORDER BY {order_sql(keys)} LIMIT :_limit OFFSET :_offset) x")
    grouped: dict = defaultdict(list)
    for r in conn.execute(text(sql), params).mappings().all():
        row = dict(r)
        grouped[row.pop("_parent")].append(row)
    for row, entity in zip(rows, entities):
        children = grouped.get(row["id"], [])
        more = len(children) > sub.top
        children = children[:sub.top]
        entity[nav.name] = _render_rows(conn, target, Options(select=sub.select), children, base)
        if more and children:
            url = f"{shape.entity_url(base, es, row['id'])}/{nav.name}"
            entity[f"{nav.name}@iot.nextLink"] = _next_link(url, sub, children[-1])
