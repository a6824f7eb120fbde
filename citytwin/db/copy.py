"""Bulk loading through COPY: frames are serialised to CSV in vectorised passes (pyarrow), never row by row.

Geometries travel as hex EWKB text. ``hex_column`` turns a whole Arrow binary column into hex in one
NumPy gather (no Python string per row), which is what keeps a million footprints cheap to encode.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import shapely
from sqlalchemy import Connection

_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed", batch_size=65536)
# Two ASCII hex digits per byte value, read as one little-endian uint16 so a single gather encodes a byte.
_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype="<u2")


def hex_ewkb(geoms: Sequence | np.ndarray, srid: int) -> np.ndarray:
    """Hex EWKB strings (with SRID) for a geometry array; None stays None (NULL in COPY)."""
    array = np.asarray(geoms, dtype=object)
    with_srid = shapely.set_srid(array, srid)
    return shapely.to_wkb(with_srid, hex=True, include_srid=True, output_dimension=3)


def hex_column(values: pa.Array) -> pa.Array:
    """Lower-case hex text of every value of an Arrow binary column (nulls stay null), vectorised.

    The hex of a concatenation is the concatenation of the hex, so the data buffer is encoded in
    one pass and the offsets simply double; no per-row Python objects are created.
    """
    if values.offset:
        values = pa.concat_arrays([values])  # a slice: copy so the buffers start at row 0
    large = pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type)
    validity, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if large else np.int32, count=len(values) + 1)
    data = np.frombuffer(data_buffer, dtype=np.uint8, count=int(offsets[-1])) if data_buffer else \
        np.empty(0, dtype=np.uint8)
    text = _HEX_PAIRS[data]
    wide = large or 2 * int(offsets[-1]) > np.iinfo(np.int32).max
    offsets = offsets.astype(np.int64 if wide else np.int32) * 2
    return pa.Array.from_buffers(pa.large_string() if wide else pa.string(), len(values),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(text)],
                                 null_count=values.null_count)


def json_column(values: pd.Series | Sequence) -> np.ndarray:
    """JSON text per row (orjson, numpy scalars allowed); None and empty dicts become '{}'."""
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    dumps = orjson.dumps
    encoded = [dumps(v, default=_json_default, option=option).decode() if isinstance(v, dict) and v else "{}"
               for v in values]
    return np.array(encoded, dtype=object)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"attribute value of type {type(value).__name__} is not JSON-serialisable")


def csv_payload(frame: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """CSV bytes of ``frame[columns]`` for ``COPY ... (FORMAT csv)``: nulls as unquoted empty fields."""
    arrays = {}
    for name in columns:
        column = frame[name]
        if column.dtype == object:
            arrays[name] = pa.array(column.to_numpy(), type=pa.string(), from_pandas=True)
        else:
            arrays[name] = pa.array(column, from_pandas=True)
    return csv_table(pa.table(arrays))


def csv_table(table: pa.Table) -> bytes:
    """CSV bytes of an Arrow table (columns in COPY order) for ``COPY ... (FORMAT csv)``."""
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, write_options=_CSV_OPTIONS)
    return buffer.getvalue()


def copy_payload(conn: Connection, table: str, columns: Sequence[str], payload: bytes) -> None:
    """COPY CSV bytes (from :func:`csv_payload`) into ``table``."""
    if not payload:
        return
    raw = conn.connection.dbapi_connection  # the psycopg connection under SQLAlchemy's transaction
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)") as copy:
            view = memoryview(payload)
            step = 4 * 1024 * 1024
            for start in range(0, len(view), step):
                copy.write(view[start:start + step])


def copy_frame(conn: Connection, table: str, frame: pd.DataFrame, columns: Sequence[str]) -> int:
    """COPY ``frame[columns]`` into ``table`` (NaN/None -> NULL). Returns rows written."""
    if frame.empty:
        return 0
    copy_payload(conn, table, columns, csv_payload(frame, columns))
    return len(frame)
