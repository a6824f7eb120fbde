"""The citytwin grid GeoPackage: :class:`~citytwin.models.grid.tables.GridTables` as four layers.

Layout of the file
------------------
``nodes``        Point layer, the columns of ``NODE_COLUMNS``; the point is built from ``x``/``y``
                 (empty when they are NaN), the columns stay authoritative.
``sections``     LineString layer, ``SECTION_COLUMNS``; geometry from a ``geometry`` column of the
                 sections frame when present, else empty.
``switches``     Point layer, ``SWITCH_COLUMNS``; the point is the location of ``from_node`` (a switch
                 is a zero-length edge, see the tables' conventions).
``connections``  attribute-only table, ``CONNECTION_COLUMNS``.

The grid's name travels as metadata of the nodes layer (``citytwin_grid_name``), its CRS as the
layers' CRS. Extra columns (numbers, strings, booleans) follow the standard ones. Missing values are
SQL NULL; they read back as ``<NA>`` (strings) and NaN (floats), so a grid round-trips exactly.

Writing goes through :class:`GpkgSpool`: parts are appended to Arrow IPC files first and every layer
is then written in a single GDAL session (``pyogrio.write_arrow``), which lets GDAL build the
spatial index once at the end instead of row by row - a million service points stream through in
seconds with memory bounded by one part. The file appears under its name only when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from citytwin.errors import InputError
from citytwin.models.grid.tables import (
    CONNECTION_COLUMNS,
    NODE_COLUMNS,
    SECTION_COLUMNS,
    SWITCH_COLUMNS,
    GridTables,
)

GEOMETRY = "geometry"
NAME_KEY = "citytwin_grid_name"
# gpkg_contents.last_change is the only wall-clock value GDAL puts in a GeoPackage; fixing it makes
# equal inputs give byte-identical files. SOURCE_DATE_EPOCH (reproducible-builds convention) wins.
FIXED_LAST_CHANGE = "2000-01-01T00:00:00.000Z"
WRITE_BATCH_ROWS = 65_536

_ARROW_TYPES = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a spooled GeoPackage: its Arrow schema and OGR geometry type (None: no geometry)."""

    schema: pa.Schema
    geometry_type: str | None


def columns_schema(columns: dict[str, str], geometry: bool) -> pa.Schema:
    """The Arrow schema of a grid table (pandas dtype names -> Arrow types), plus WKB geometry."""
    fields = [pa.field(name, _ARROW_TYPES[dtype]) for name, dtype in columns.items()]
    if geometry:
        fields.append(pa.field(GEOMETRY, pa.binary()))
    return pa.schema(fields)


GRID_LAYERS: dict[str, LayerSpec] = {
    "nodes": LayerSpec(columns_schema(NODE_COLUMNS, True), "Point"),
    "sections": LayerSpec(columns_schema(SECTION_COLUMNS, True), "LineString"),
    "switches": LayerSpec(columns_schema(SWITCH_COLUMNS, True), "Point"),
    "connections": LayerSpec(columns_schema(CONNECTION_COLUMNS, False), None),
}


def gpkg_last_change() -> str:
    """The ``last_change`` stamp for written GeoPackages (SOURCE_DATE_EPOCH if set, else fixed)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        stamp = pd.Timestamp(int(epoch), unit="s", tz="UTC")
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return FIXED_LAST_CHANGE


class GpkgSpool:
    """Collect Arrow batches per layer on disk, then write a GeoPackage in one GDAL session per layer.

    Parameters
    ----------
    path : Path
        The GeoPackage to create (replaced if it exists, only once the new one is complete).
    layers : dict of str to LayerSpec
        Layers in the order they are written; a layer with no batches is written empty.
    crs : str or None
        CRS of every geometry layer.
    metadata : dict of str to dict, optional
        Per layer, key/value strings stored as the layer's metadata. (Layer rather than dataset
        metadata because GDAL drops a ``.aux.xml`` beside a GeoPackage with dataset metadata on
        every open.)

    Use as a context manager: leaving the block normally writes the file, an exception discards it.
    """

    def __init__(self, path: Path, layers: dict[str, LayerSpec], crs: str | None,
                 metadata: dict[str, dict[str, str]] | None = None) -> None:
        self.path = Path(path)
        self.layers = layers
        self.crs = crs
        self.metadata = metadata or {}
        self.rows = {name: 0 for name in layers}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._sinks: dict[str, pa.NativeFile] = {}
        self._writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}

    def __enter__(self) -> "GpkgSpool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def append(self, layer: str, table: pa.Table | pa.RecordBatch) -> None:
        """Append rows to ``layer``; columns are matched by name and cast to the layer's schema."""
        spec = self.layers[layer]
        if table.num_rows == 0:
            return
        missing = [f.name for f in spec.schema if f.name not in table.column_names]
        if missing:
            raise InputError(f"{self.path.name}: rows for layer {layer!r} lack columns {missing}")
        columns = [table.column(f.name).cast(f.type) for f in spec.schema]
        batch = pa.Table.from_arrays(columns, schema=spec.schema)
        if layer not in self._writers:
            self._sinks[layer] = pa.OSFile(str(self._tmp / f"{layer}.arrows"), "wb")
            self._writers[layer] = pa.ipc.new_stream(self._sinks[layer], spec.schema)
        self._writers[layer].write_table(batch)
        self.rows[layer] += batch.num_rows

    def _reader(self, layer: str) -> pa.RecordBatchReader:
        spec = self.layers[layer]
        if layer not in self._writers:
            return pa.RecordBatchReader.from_batches(spec.schema, iter(()))
        self._writers.pop(layer).close()
        self._sinks.pop(layer).close()
        spooled = pa.ipc.open_stream(pa.memory_map(str(self._tmp / f"{layer}.arrows")))
        return pa.RecordBatchReader.from_batches(spec.schema, _rebatched(spooled, WRITE_BATCH_ROWS))

    def commit(self) -> None:
        """Write every layer into a temporary GeoPackage and move it into place."""
        import pyogrio

        partial = self._tmp / self.path.name
        previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": gpkg_last_change()})
        try:
            for name, spec in self.layers.items():
                reader = self._reader(name)
                geometry = {"geometry_name": GEOMETRY, "geometry_type": spec.geometry_type} \
                    if spec.geometry_type else {}
                if spec.geometry_type and self.crs:
                    geometry["crs"] = self.crs
                with warnings.catch_warnings():  # a grid without coordinates has no CRS, on purpose
                    warnings.filterwarnings("ignore", message="'crs' was not provided")
                    pyogrio.write_arrow(reader, str(partial), layer=name, driver="GPKG",
                                        layer_metadata=self.metadata.get(name), **geometry)
            os.replace(partial, self.path)
        finally:
            pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
            self.abort()

    def abort(self) -> None:
        """Discard everything spooled so far (the target file is left as it was)."""
        for writer in self._writers.values():
            writer.close()
        for sink in self._sinks.values():
            sink.close()
        self._writers.clear()
        self._sinks.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _rebatched(batches, size: int) -> Iterator[pa.RecordBatch]:
    """The same rows in batches of exactly ``size`` (the last one shorter).

    GDAL's GeoPackage pages depend on the batches it is given; fixed batches make the file
    independent of how the rows were produced (chunk sizes of the generator, parts of a writer).
    """
    pending: list[pa.RecordBatch] = []
    buffered = 0
    for batch in batches:
        pending.append(batch)
        buffered += batch.num_rows
        while buffered >= size:
            table = pa.Table.from_batches(pending)
            yield from table.slice(0, size).combine_chunks().to_batches(max_chunksize=size)
            rest = table.slice(size).combine_chunks()
            pending = rest.to_batches() if rest.num_rows else []
            buffered -= size
    if buffered:
        yield from pa.Table.from_batches(pending).combine_chunks().to_batches(max_chunksize=size)


def _wkb(geoms: np.ndarray) -> pa.Array:
    return pa.array(shapely.to_wkb(geoms), type=pa.binary())


def _arrow_columns(frame: pd.DataFrame, columns: dict[str, str]) -> dict[str, pa.Array]:
    out = {}
    for name, dtype in columns.items():
        values = frame[name]
        if dtype == "string":
            out[name] = pa.array(values.astype("string"), type=pa.string())
        else:
            out[name] = pa.array(values.to_numpy(dtype=dtype), type=_ARROW_TYPES[dtype], from_pandas=True)
    return out


def _extra_columns(frame: pd.DataFrame, columns: dict[str, str], table: str) -> dict[str, pa.Array]:
    """Columns beyond the standard ones (e.g. ``component_class``), typed by Arrow's inference."""
    out = {}
    for name in frame.columns:
        if name in columns or name == GEOMETRY:
            continue
        try:
            out[str(name)] = pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"grid {table}: column {name!r} cannot be written to a GeoPackage "
                             f"({exc})") from exc
    return out


def grid_layer_tables(grid: GridTables, *, extras: bool = False) -> dict[str, pa.Table]:
    """The four layers of ``grid`` as Arrow tables in the file's schema (geometry as WKB).

    With ``extras``, columns beyond the standard ones are kept (before the geometry).
    """
    def more(frame: pd.DataFrame, columns: dict[str, str], table: str) -> dict[str, pa.Array]:
        return _extra_columns(frame, columns, table) if extras else {}

    nodes = grid.nodes
    x, y = nodes["x"].to_numpy(float), nodes["y"].to_numpy(float)
    has_xy = np.isfinite(x) & np.isfinite(y)
    points = np.full(len(nodes), None, dtype=object)
    points[has_xy] = shapely.points(x[has_xy], y[has_xy])
    node_cols = (_arrow_columns(nodes, NODE_COLUMNS) | more(nodes, NODE_COLUMNS, "nodes")
                 | {GEOMETRY: _wkb(points)})

    sections = grid.sections
    if GEOMETRY in sections.columns:
        lines = np.asarray(sections[GEOMETRY].to_numpy(), dtype=object)
        lines = np.where(pd.isna(lines), None, lines)
    else:
        lines = np.full(len(sections), None, dtype=object)
    section_cols = (_arrow_columns(sections, SECTION_COLUMNS) | more(sections, SECTION_COLUMNS, "sections")
                    | {GEOMETRY: _wkb(lines)})

    switches = grid.switches
    where = pd.Series(points, index=nodes["node_id"].astype(object))
    where = where[~where.index.duplicated()]
    switch_points = where.reindex(switches["from_node"].astype(object)).to_numpy(dtype=object)
    switch_points = np.where(pd.isna(switch_points), None, switch_points)
    switch_cols = (_arrow_columns(switches, SWITCH_COLUMNS) | more(switches, SWITCH_COLUMNS, "switches")
                   | {GEOMETRY: _wkb(switch_points)})

    return {
        "nodes": pa.table(node_cols),
        "sections": pa.table(section_cols),
        "switches": pa.table(switch_cols),
        "connections": pa.table(_arrow_columns(grid.connections, CONNECTION_COLUMNS)
                                 | more(grid.connections, CONNECTION_COLUMNS, "connections")),
    }


class GridGpkgWriter(GpkgSpool):
    """A grid GeoPackage written part by part (each part a :class:`GridTables` or Arrow tables).

    Switch points are looked up among the nodes of the same part; ids must be unique across parts.
    """

    def __init__(self, path: Path, crs: str | None, name: str = "grid") -> None:
        super().__init__(path, GRID_LAYERS, crs, {"nodes": {NAME_KEY: name}})

    def add(self, grid: GridTables) -> None:
        """Append all four tables of ``grid``."""
        for layer, table in grid_layer_tables(grid).items():
            self.append(layer, table)


def write_grid_gpkg(grid: GridTables, path: Path) -> Path:
    """Write ``grid`` as a citytwin grid GeoPackage (see module docstring); returns the path.

    Extra columns of the tables (numbers, strings, booleans) are written too and read back.
    """
    path = Path(path)
    tables = grid_layer_tables(grid, extras=True)
    layers = {name: LayerSpec(table.schema, GRID_LAYERS[name].geometry_type)
              for name, table in tables.items()}
    with GpkgSpool(path, layers, grid.crs, {"nodes": {NAME_KEY: grid.name}}) as spool:
        for name, table in tables.items():
            spool.append(name, table)
    return path


def _read_layer(path: Path, layer: str, columns: dict[str, str], geometry: bool = False) -> pd.DataFrame:
    """One layer as a frame with pandas ``string`` columns (straight from Arrow: no object round trip)."""
    import pyogrio

    meta, table = pyogrio.read_arrow(path, layer=layer, read_geometry=geometry)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: layer {layer!r} lacks columns {missing}; it is not a citytwin grid")
    wkb = None
    if geometry and meta.get("geometry_name") in table.column_names:
        wkb = table.column(meta["geometry_name"])
        table = table.drop_columns([meta["geometry_name"]])
    strings = {pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}
    frame = table.to_pandas(types_mapper=strings.get)
    if wkb is not None and wkb.null_count < len(wkb):
        # Plain shapely objects, like a GridTables built in memory.
        blobs = np.asarray(wkb.to_numpy(zero_copy_only=False), dtype=object)
        frame[GEOMETRY] = np.asarray(shapely.from_wkb(blobs), dtype=object)
    return frame


def read_grid_gpkg(path: Path) -> GridTables:
    """Read a grid GeoPackage written by :func:`write_grid_gpkg` (or any file with the same layers).

    Raises
    ------
    InputError
        If the file is not a readable GeoPackage or a layer or column is missing.
    """
    import pyogrio

    path = Path(path)
    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(path)}
        info = pyogrio.read_info(path, layer="nodes") if "nodes" in layers else {}
    except Exception as exc:  # pyogrio raises DataSourceError and friends for unreadable files
        raise InputError(f"{path}: not a readable GeoPackage ({exc})") from exc
    missing = [name for name in GRID_LAYERS if name not in layers]
    if missing:
        raise InputError(f"{path}: a grid GeoPackage needs layers {list(GRID_LAYERS)}; missing {missing}")

    nodes = _read_layer(path, "nodes", NODE_COLUMNS)
    sections = _read_layer(path, "sections", SECTION_COLUMNS, geometry=True)
    switches = _read_layer(path, "switches", SWITCH_COLUMNS)
    connections = _read_layer(path, "connections", CONNECTION_COLUMNS)
    metadata = info.get("layer_metadata") or {}
    return GridTables(nodes=nodes, sections=sections, switches=switches, connections=connections,
                      crs=info.get("crs"), name=metadata.get(NAME_KEY, path.stem))

