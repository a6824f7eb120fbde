"""Observation payloads -> validated columns, and dead letters (with a reason) for everything else.

Accepted payloads (the MQTT batch topic and ``POST /api/telemetry/observations`` take all of them; the
SensorThings topic ``v1.1/Datastreams(ID)/Observations`` takes observation objects without a Datastream):

* compact rows ``[[datastream_id, phenomenonTime, result], ...]`` or ``{"observations": [[...], ...]}``
* SensorThings observations ``{"Datastream": {"@iot.id": 1}, "phenomenonTime": ..., "result": ...,
  "resultTime": ...}``, alone or in a list
* SensorThings dataArray blocks ``{"Datastream": {"@iot.id": 1}, "components": ["phenomenonTime",
  "result"], "dataArray": [[t, v], ...]}``, alone or in a list

Times are ISO 8601 (``Z`` or an offset; a time without offset is taken as UTC). A message is checked in
two passes: a tight per-item loop that only looks at JSON types, then vectorised checks (time parsing,
datastream lookup, finiteness, time window) over the whole batch. Nothing here touches the database:
the datastream lookup is a callable.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Sequence

import numpy as np

# Dead-letter reasons (``telemetry_dead_letters.reason``).
OVERSIZED = "oversized"
MALFORMED_JSON = "malformed_json"
BAD_SHAPE = "bad_shape"
UNKNOWN_TOPIC = "unknown_topic"
UNKNOWN_DATASTREAM = "unknown_datastream"
BAD_RESULT_TYPE = "bad_result_type"
NON_FINITE = "non_finite"
BAD_TIME = "bad_time"
FUTURE_TIME = "future_time"
TOO_OLD = "too_old"

# Datastream result types as small codes (0 = unknown datastream).
RESULT_TYPES = {"number": 1, "boolean": 2, "string": 3, "object": 4}
NO_TIME = np.iinfo(np.int64).min          # "no resultTime"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_ID = 2**62
STA_TOPIC = re.compile(r"^v1\.[01]/Datastreams\((\d+)\)/Observations$")
STA_PLAIN_TOPIC = re.compile(r"^v1\.[01]/Observations$")
DEFAULT_BATCH_TOPIC = "citytwin/ingest/batch"
_PAYLOAD_KEEP = 2000                      # characters of an offending payload kept in the dead letter
_ROUTES: dict[tuple[str, str], object] = {}
_MISSING = object()


@dataclass(frozen=True)
class IngestLimits:
    """What counts as acceptable input.

    ``max_future``: how far ahead of the receiver's clock a phenomenonTime may be (clock skew).
    ``max_age``: how far back; older raw days are archived and dropped, so such data has no home.
    """

    max_message_bytes: int = 4 * 1024 * 1024
    max_items: int = 200_000
    max_future: timedelta = timedelta(hours=1)
    max_age: timedelta = timedelta(days=30)


@dataclass
class RawMessage:
    """One received payload; ``token`` is whatever the transport needs to acknowledge it."""

    topic: str
    payload: bytes
    source: str = "mqtt"
    token: object = None


@dataclass
class DeadLetter:
    source: str
    topic: str | None
    reason: str
    detail: str
    item_index: int | None = None
    payload: str | None = None
    payload_bytes: int = 0


@dataclass
class ObservationColumns:
    """Validated observations as columns; times are microseconds since the Unix epoch (UTC)."""

    datastream_id: np.ndarray                  # int64
    time_us: np.ndarray                        # int64
    result: np.ndarray                         # float64 (NaN where the result is JSON)
    result_time_us: np.ndarray                 # int64, NO_TIME when absent
    json_result: dict[int, object] = field(default_factory=dict)   # row -> non-numeric result

    def __len__(self) -> int:
        return len(self.datastream_id)


@dataclass
class ValidatedBatch:
    rows: ObservationColumns
    dead: list[DeadLetter]
    messages: int


@dataclass
class _Collected:
    """Per-item output of the first pass, before the vectorised checks."""

    ds: list = field(default_factory=list)
    times: list = field(default_factory=list)
    values: list = field(default_factory=list)
    result_times: list = field(default_factory=list)
    origin: list = field(default_factory=list)     # (message index, item index) per row


def _snippet(value: object) -> str:
    try:
        if isinstance(value, (bytes, bytearray)):
            text = value.decode("utf-8", "replace")
        else:
            text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text[:_PAYLOAD_KEEP]


class _MessageParser:
    """First pass: JSON decoding and shape checks, item by item, into flat lists."""

    def __init__(self, batch_topic: str, limits: IngestLimits) -> None:
        self.batch_topic = batch_topic
        self.limits = limits
        self.out = _Collected()
        self.dead: list[DeadLetter] = []

    def route(self, topic: str) -> int | bool | None:
        """The datastream id a topic names, None for topics whose payload names it, False if unknown.

        Cached: a deployment has a bounded set of topics and the regex costs more than the rest of a
        small message's checks."""
        found = _ROUTES.get((self.batch_topic, topic), _MISSING)
        if found is _MISSING:
            match = STA_TOPIC.match(topic)
            found = (int(match.group(1)) if match else
                     None if topic == self.batch_topic or STA_PLAIN_TOPIC.match(topic) else False)
            if len(_ROUTES) > 100_000:
                _ROUTES.clear()
            _ROUTES[(self.batch_topic, topic)] = found
        return found

    def reject(self, msg: RawMessage, reason: str, detail: str, index: int | None = None,
               item: object = None) -> None:
        payload = _snippet(item if index is not None else msg.payload)
        self.dead.append(DeadLetter(msg.source, msg.topic, reason, detail, index, payload, len(msg.payload)))

    def parse(self, m: int, msg: RawMessage) -> None:
        if len(msg.payload) > self.limits.max_message_bytes:
            self.reject(msg, OVERSIZED, f"{len(msg.payload)} bytes exceeds the limit of "
                        f"{self.limits.max_message_bytes} bytes")
            return
        route = self.route(msg.topic or "")
        if route is False and msg.source == "mqtt":
            self.reject(msg, UNKNOWN_TOPIC, f"no observations are accepted on topic {msg.topic!r}")
            return
        topic_ds = route if type(route) is int else None
        try:
            doc = json.loads(msg.payload.decode("utf-8") if type(msg.payload) is bytes else msg.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            self.reject(msg, MALFORMED_JSON, f"payload is not JSON: {exc}")
            return
        if isinstance(doc, dict) and "observations" in doc and topic_ds is None:
            doc = doc["observations"]
            if not isinstance(doc, list):
                self.reject(msg, BAD_SHAPE, "'observations' must be a list")
                return
        items = doc if isinstance(doc, list) else [doc]
        if len(items) > self.limits.max_items:
            self.reject(msg, OVERSIZED, f"{len(items)} items exceed the limit of {self.limits.max_items}")
            return
        self._items(m, msg, items, topic_ds)

    def _items(self, m: int, msg: RawMessage, items: list, topic_ds: int | None) -> None:
        out = self.out
        ds_append, t_append, v_append = out.ds.append, out.times.append, out.values.append
        rt_append, o_append = out.result_times.append, out.origin.append
        for i, item in enumerate(items):
            if type(item) is list and topic_ds is None:
                # The hot path: compact rows. Only JSON types are checked here.
                if len(item) == 3 and type(item[0]) is int and type(item[1]) is str and 0 < item[0] < MAX_ID:
                    ds_append(item[0])
                    t_append(item[1])
                    v_append(item[2])
                    rt_append(None)
                    o_append((m, i))
                else:
                    self.reject(msg, BAD_SHAPE, "a compact row must be [datastream_id (positive integer), "
                                "phenomenonTime (ISO 8601 string), result]", i, item)
            elif type(item) is dict:
                if "dataArray" in item:
                    self._data_array(m, msg, i, item, topic_ds)
                else:
                    self._sta_object(m, msg, i, item, topic_ds)
            else:
                self.reject(msg, BAD_SHAPE, "expected an observation object or a compact row", i, item)

    def _datastream_of(self, item: dict, topic_ds: int | None) -> int | str:
        if topic_ds is not None:
            return topic_ds
        ref = item.get("Datastream")
        ds = ref.get("@iot.id") if isinstance(ref, dict) else None
        if type(ds) is not int or not 0 < ds < MAX_ID:
            return "the observation needs \"Datastream\": {\"@iot.id\": <positive integer>}"
        return ds

    def _sta_object(self, m: int, msg: RawMessage, i: int, item: dict, topic_ds: int | None) -> None:
        ds = self._datastream_of(item, topic_ds)
        if isinstance(ds, str):
            self.reject(msg, BAD_SHAPE, ds, i, item)
            return
        if "phenomenonTime" not in item or "result" not in item:
            self.reject(msg, BAD_SHAPE, "an observation needs phenomenonTime and result", i, item)
            return
        out = self.out
        out.ds.append(ds); out.times.append(item["phenomenonTime"]); out.values.append(item["result"])
        out.result_times.append(item.get("resultTime")); out.origin.append((m, i))

    def _data_array(self, m: int, msg: RawMessage, i: int, item: dict, topic_ds: int | None) -> None:
        ds = self._datastream_of(item, topic_ds)
        components, rows = item.get("components"), item.get("dataArray")
        if isinstance(ds, str) or not isinstance(components, list) or not isinstance(rows, list):
            self.reject(msg, BAD_SHAPE, ds if isinstance(ds, str) else
                        "a dataArray block needs components (list) and dataArray (list of rows)", i, item)
            return
        try:
            t_at, v_at = components.index("phenomenonTime"), components.index("result")
        except ValueError:
            self.reject(msg, BAD_SHAPE, "components must include phenomenonTime and result", i, item)
            return
        rt_at = components.index("resultTime") if "resultTime" in components else None
        width = len(components)
        out = self.out
        for row in rows:
            if type(row) is not list or len(row) != width:
                self.reject(msg, BAD_SHAPE, f"each dataArray row must have {width} values", i, row)
                continue
            out.ds.append(ds); out.times.append(row[t_at]); out.values.append(row[v_at])
            out.result_times.append(row[rt_at] if rt_at is not None else None); out.origin.append((m, i))


def parse_times(values: Sequence[object]) -> np.ndarray:
    """ISO 8601 strings -> int64 microseconds since the epoch (UTC); NO_TIME where unparseable.

    Fast path: all strings end in ``Z`` -> one numpy parse. Otherwise ``datetime.fromisoformat`` per
    item (offsets; no offset = UTC). Intervals (``a/b``) and non-strings are unparseable.
    """
    n = len(values)
    out = np.full(n, NO_TIME, dtype=np.int64)
    if n == 0:
        return out
    if all(type(v) is str and v.endswith("Z") and "/" not in v for v in values):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = np.array([v[:-1] for v in values], dtype="datetime64[us]")
            # numpy also accepts bare years/months; require a full date at least.
            if all(len(v) >= 11 for v in values):
                return parsed.astype(np.int64)
        except ValueError:
            pass
    for i, v in enumerate(values):
        out[i] = _parse_one(v)
    return out


def _parse_one(value: object) -> int:
    if type(value) is not str or "/" in value or len(value) < 10:
        return NO_TIME
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return NO_TIME
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    delta = parsed - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _result_code(value: object) -> int:
    """The result type a JSON value has (number/boolean/string/object codes), 0 for null."""
    kind = type(value)
    if kind is float or kind is int:
        return 1
    if kind is bool:
        return 2
    if kind is str:
        return 3
    if kind is dict or kind is list:
        return 4
    return 0


def validate_messages(
    messages: Sequence[RawMessage],
    result_types: Callable[[np.ndarray], np.ndarray],
    *,
    limits: IngestLimits = IngestLimits(),
    batch_topic: str = DEFAULT_BATCH_TOPIC,
    now: datetime | None = None,
) -> ValidatedBatch:
    """Parse and check ``messages``; returns the good rows as columns and dead letters for the rest.

    ``result_types(ids)`` gives, per datastream id, its result-type code (``RESULT_TYPES``; 0 = unknown).
    """
    parser = _MessageParser(batch_topic, limits)
    for m, msg in enumerate(messages):
        parser.parse(m, msg)
    got, dead = parser.out, parser.dead
    n = len(got.ds)
    ds = np.fromiter(got.ds, dtype=np.int64, count=n)
    time_us = parse_times(got.times)
    if any(v is not None for v in got.result_times):
        result_time_us = parse_times(got.result_times)
    else:
        result_time_us = np.full(n, NO_TIME, dtype=np.int64)
    codes = np.fromiter((_result_code(v) for v in got.values), dtype=np.int8, count=n)
    result = np.full(n, np.nan)
    numeric = codes == 1
    if numeric.any():
        try:
            result[numeric] = np.array([got.values[i] for i in np.flatnonzero(numeric)], dtype=np.float64)
        except OverflowError:  # integers beyond float range
            for i in np.flatnonzero(numeric):
                try:
                    result[i] = float(got.values[i])
                except OverflowError:
                    result[i] = math.inf
    expected = result_types(ds) if n else np.zeros(0, dtype=np.int8)
    now = now or datetime.now(timezone.utc)
    now_us = _parse_one(now.isoformat())
    reasons = _row_reasons(ds, time_us, result, codes, expected, got.result_times, result_time_us,
                           now_us, limits)
    bad = np.flatnonzero(reasons != "")
    for i in bad:
        m, index = got.origin[i]
        msg = messages[m]
        item = [int(ds[i]), got.times[i], got.values[i]]
        detail = _detail(reasons[i], ds[i], got, i, expected[i], limits)
        dead.append(DeadLetter(msg.source, msg.topic, reasons[i], detail, index, _snippet(item),
                               len(msg.payload)))
    keep = reasons == ""
    kept_rows = np.flatnonzero(keep)
    json_result = {int(new): got.values[old] for new, old in enumerate(kept_rows) if codes[old] != 1}
    rows = ObservationColumns(ds[keep], time_us[keep], result[keep], result_time_us[keep], json_result)
    return ValidatedBatch(rows, dead, len(messages))


def _row_reasons(ds, time_us, result, codes, expected, result_times_raw, result_time_us, now_us,
                 limits: IngestLimits) -> np.ndarray:
    """The first failing check per row ('' = good), in a fixed order of precedence."""
    n = len(ds)
    reasons = np.full(n, "", dtype=object)

    def mark(mask: np.ndarray, reason: str) -> None:
        reasons[(reasons == "") & mask] = reason

    mark(expected == 0, UNKNOWN_DATASTREAM)
    mark(time_us == NO_TIME, BAD_TIME)
    given_rt = np.fromiter((v is not None for v in result_times_raw), dtype=bool, count=n)
    mark(given_rt & (result_time_us == NO_TIME), BAD_TIME)
    mark(codes != expected, BAD_RESULT_TYPE)
    mark((codes == 1) & ~np.isfinite(result), NON_FINITE)
    max_future = int(limits.max_future / timedelta(microseconds=1))
    max_age = int(limits.max_age / timedelta(microseconds=1))
    mark(time_us > now_us + max_future, FUTURE_TIME)
    mark(time_us < now_us - max_age, TOO_OLD)
    return reasons


def _detail(reason: str, ds: int, got: _Collected, i: int, expected: int, limits: IngestLimits) -> str:
    names = {code: name for name, code in RESULT_TYPES.items()}
    if reason == UNKNOWN_DATASTREAM:
        return f"datastream {ds} does not exist"
    if reason == BAD_TIME:
        return (f"phenomenonTime/resultTime {str(got.times[i])[:60]!r} is not an ISO 8601 instant "
                "(intervals are not accepted)")
    if reason == BAD_RESULT_TYPE:
        return (f"datastream {ds} takes {names.get(int(expected), '?')} results, got "
                f"{type(got.values[i]).__name__} {str(got.values[i])[:40]!r}")
    if reason == NON_FINITE:
        return f"result {got.values[i]!r} is not a finite number"
    if reason == FUTURE_TIME:
        return f"phenomenonTime {got.times[i]!r} is more than {limits.max_future} ahead of the receiver clock"
    if reason == TOO_OLD:
        return f"phenomenonTime {got.times[i]!r} is older than the raw-data window of {limits.max_age}"
    return reason


def dead_letters_from_error(messages: Iterable[RawMessage], reason: str, detail: str) -> list[DeadLetter]:
    """Dead letters for whole messages (e.g. a request body that could not be read)."""
    return [DeadLetter(m.source, m.topic, reason, detail, None, _snippet(m.payload), len(m.payload))
            for m in messages]
