"""Bulk loading through COPY: frames are serialised to CSV in vectorised passes (pyarrow), never row by row."""

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


def hex_ewkb(geoms: Sequence | np.ndarray, srid: int) -> np.ndarray:
    """Hex EWKB strings (with SRID) for a geometry array; None stays None (NULL in COPY)."""
    array = np.asarray(geoms, dtype=object)
    with_srid = shapely.set_srid(array, srid)
    return shapely.to_wkb(with_srid, hex=True, include_srid=True, output_dimension=3)


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
    buffer = io.BytesIO()
    pacsv.write_csv(pa.table(arrays), buffer, write_options=_CSV_OPTIONS)
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
