"""The analysts' Python API: the same twin the web map shows, as GeoDataFrames and xarray Datasets.

>>> import citytwin
>>> twin = citytwin.connect()          # CITYTWIN_DATABASE_URL, else the embedded local database
>>> offices = twin.buildings(where={"use": "office"})
>>> bool((offices["use"] == "office").all())
True
>>> offices.crs == twin.summary()["crs"]   # the twin's metric CRS, e.g. EPSG:32632
True

``offices.plot(column="height")`` maps them (with matplotlib installed).

The examples in this module's docstrings run in the tests (``tests/test_doc_examples.py``) against a
generated demo city.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import xarray as xr
from sqlalchemy import Engine, text

from citytwin.errors import InputError, NotFoundError

FILTERABLE = {"use", "source", "floors", "year_built", "height", "ground_elevation"}


@dataclass
class ScenarioResult:
    """What a storm scenario produced: the summary, the flood grid, buildings, outages, the plan."""

    run_id: int
    summary: dict
    flood: xr.Dataset
    buildings: gpd.GeoDataFrame
    outages: gpd.GeoDataFrame
    restoration_plan: pd.DataFrame


class Twin:
    """A connection to one twin. Create it with :func:`connect`.

    >>> twin.summary()["counts"]["buildings"] > 0
    True
    """

    def __init__(self, engine: Engine, data_dir: Path, dask_scheduler: str = "") -> None:
        self.engine = engine
        self.data_dir = Path(data_dir)
        self._dask_scheduler = dask_scheduler

    # -- city ------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Counts of everything the twin holds, its CRS and extent.

        >>> summary = twin.summary()
        >>> sorted(summary)
        ['buildings_by_use', 'counts', 'crs', 'extent', 'name', 'vertical_crs']
        >>> summary["counts"]["grid_nodes"] >= summary["counts"]["service_points"]
        True
        """
        from citytwin.db.summary import twin_summary

        with self.engine.connect() as conn:
            return twin_summary(conn)

    def buildings(self, bbox: tuple[float, float, float, float] | None = None, *, bbox_crs: str = "EPSG:4326",
                  where: dict | None = None, with_lod2: bool = False) -> gpd.GeoDataFrame:
        """Buildings in the twin's CRS, optionally inside ``bbox`` and matching ``where``.

        ``where`` maps a column to a value (equality), a list (membership) or a ``(min, max)`` tuple
        (range, either end may be None), e.g. ``{"use": ["office", "retail"], "height": (20, None)}``.
        ``bbox`` is ``(xmin, ymin, xmax, ymax)`` in ``bbox_crs`` (lon/lat by default).

        >>> tall = twin.buildings(where={"use": ["office", "retail"], "height": (20, None)})
        >>> bool(tall["use"].isin(["office", "retail"]).all() and (tall["height"] >= 20).all())
        True
        >>> x0, y0, x1, y1 = twin.summary()["extent"]      # in the twin's CRS
        >>> west = twin.buildings(bbox=(x0, y0, (x0 + x1) / 2, y1), bbox_crs=twin.summary()["crs"])
        >>> 0 < len(west) <= len(twin.buildings())
        True
        """
        from citytwin.db.read import read_buildings

        with self.engine.connect() as conn:
            frame = read_buildings(conn, bbox=bbox, bbox_crs=bbox_crs, with_lod2=with_lod2)
        for column, condition in (where or {}).items():
            if column not in FILTERABLE:
                raise InputError(f"cannot filter buildings by {column!r}; choose from {sorted(FILTERABLE)}")
            values = frame[column]
            if isinstance(condition, tuple):
                low, high = condition
                mask = pd.Series(True, index=frame.index)
                if low is not None:
                    mask &= values >= low
                if high is not None:
                    mask &= values <= high
            elif isinstance(condition, (list, set)):
                mask = values.isin(list(condition))
            else:
                mask = values == condition
            frame = frame[mask.fillna(False).astype(bool)]
        return frame

    # -- grid --------------------------------------------------------------------------------
    def grid(self) -> dict[str, gpd.GeoDataFrame]:
        """The grid as GeoDataFrames: ``nodes``, ``lines``, ``switches`` (twin CRS).

        >>> grid = twin.grid()
        >>> sorted(grid)
        ['lines', 'nodes', 'switches']
        >>> grid["nodes"].crs == twin.summary()["crs"]
        True
        """
        from citytwin.db.twin import require_twin

        with self.engine.connect() as conn:
            crs = require_twin(conn).crs
            nodes = gpd.read_postgis(text("SELECT * FROM grid_nodes ORDER BY node_id"), conn, geom_col="geom", crs=crs)
            lines = gpd.read_postgis(text("SELECT * FROM grid_sections ORDER BY section_id"), conn, geom_col="geom",
                                     crs=crs)
            switches = gpd.read_postgis(text("SELECT * FROM grid_switches ORDER BY switch_id"), conn,
                                        geom_col="geom", crs=crs)
        return {"nodes": nodes, "lines": lines, "switches": switches}

    def grid_tables(self):
        """The grid as :class:`citytwin.models.grid.GridTables` (what the grid models take).

        >>> tables = twin.grid_tables()
        >>> len(tables.nodes) == twin.summary()["counts"]["grid_nodes"]
        True
        """
        from citytwin.db.grid import read_grid

        with self.engine.connect() as conn:
            return read_grid(conn)

    def grid_graph(self):
        """The grid as a ``networkx.Graph`` (nodes with attributes; sections and switches as edges).

        >>> graph = twin.grid_graph()
        >>> graph.number_of_nodes() == twin.summary()["counts"]["grid_nodes"]
        True
        """
        import networkx as nx

        grid = self.grid_tables()
        graph = nx.Graph()
        for row in grid.nodes.itertuples(index=False):
            graph.add_node(row.node_id, kind=row.kind, feeder=row.feeder, customers=row.customers)
        for row in grid.sections.itertuples(index=False):
            graph.add_edge(row.from_node, row.to_node, id=row.section_id, kind="section", length_km=row.length_km)
        for row in grid.switches.itertuples(index=False):
            graph.add_edge(row.from_node, row.to_node, id=row.switch_id, kind=row.kind, state=row.present_state)
        return graph

    def relationships(self) -> pd.DataFrame:
        """The twin graph's edges: substation feeds feeder, ..., sensor monitors asset, building liesIn
        district.

        >>> edges = twin.relationships()
        >>> list(edges.columns)
        ['source', 'source_kind', 'relationship', 'target', 'target_kind']
        >>> "feeds" in set(edges["relationship"])
        True
        """
        from citytwin.graph.queries import relationships

        with self.engine.connect() as conn:
            return relationships(conn)

    def buildings_served_by(self, asset_id: str) -> pd.DataFrame:
        """Every building downstream of a grid asset in the normal switch state.

        Downstream means: the buildings that lose their only path to a source when the asset (a node,
        section or switch: substation, transformer, bus, line, breaker, ...) is taken out, with every
        switch in its normal state. A feeder id stands for the whole feeder: all buildings it supplies.
        This is topology, not protection (a fault also trips the device above it; the outage models
        answer that).

        Parameters
        ----------
        asset_id
            A node, section or switch id of the grid, or a feeder id.

        Returns
        -------
        pandas.DataFrame
            Columns ``id, source_id, use, height`` (m) ``, customers``; one row per building and
            service connection, ordered by ``id``.

        Raises
        ------
        NotFoundError
            If ``asset_id`` is no node, section, switch or feeder of the grid.

        >>> edges = twin.relationships()
        >>> feeder = edges.loc[edges["source_kind"] == "feeder", "source"].iloc[0]
        >>> served = twin.buildings_served_by(feeder)          # a feeder id: its whole feeder
        >>> list(served.columns)
        ['id', 'source_id', 'use', 'height', 'customers']
        >>> len(served) > 0
        True
        """
        from citytwin.graph.queries import buildings_served_by

        with self.engine.connect() as conn:
            return buildings_served_by(conn, asset_id)

    def critical_customers_behind(self, asset_id: str) -> pd.DataFrame:
        """Buildings with critical uses (hospitals, schools) downstream of ``asset_id``.

        Those of :meth:`buildings_served_by` (normal switch state; a feeder id means the whole feeder)
        whose ``use`` is critical: they lose supply when the asset opens or is taken out.

        Returns
        -------
        pandas.DataFrame
            The columns of :meth:`buildings_served_by`, rows renumbered from 0.

        Raises
        ------
        NotFoundError
            If ``asset_id`` is no node, section, switch or feeder of the grid.

        >>> edges = twin.relationships()
        >>> feeder = edges.loc[edges["source_kind"] == "feeder", "source"].iloc[0]
        >>> critical = twin.critical_customers_behind(feeder)
        >>> set(critical["use"]) <= {"hospital", "school"}
        True
        >>> len(critical) <= len(twin.buildings_served_by(feeder))
        True
        """
        from citytwin.graph.queries import critical_customers_behind

        with self.engine.connect() as conn:
            return critical_customers_behind(conn, asset_id)

    def sensors_on(self, feeder: str) -> pd.DataFrame:
        """Every sensor monitoring an asset on a feeder, or a building the feeder supplies.

        The feeder is taken whole, as in the normal switch state: its nodes, transformers, service
        points and the substation above it, and the buildings downstream of it.

        Returns
        -------
        pandas.DataFrame
            Columns ``id, name, asset_id, kind`` (the SensorThings Thing), ordered by ``id``.

        Raises
        ------
        NotFoundError
            If ``feeder`` is not a feeder of the grid.

        >>> edges = twin.relationships()
        >>> feeder = edges.loc[edges["source_kind"] == "feeder", "source"].iloc[0]
        >>> sensors = twin.sensors_on(feeder)
        >>> list(sensors.columns)
        ['id', 'name', 'asset_id', 'kind']
        """
        from citytwin.graph.queries import sensors_on

        with self.engine.connect() as conn:
            return sensors_on(conn, feeder)

    # -- telemetry ---------------------------------------------------------------------------
    def telemetry(self, datastream: int | str, start: datetime | str | None = None,
                  end: datetime | str | None = None, *, as_xarray: bool = False) -> pd.Series | xr.DataArray:
        """Observations of a datastream (id or name) between ``start`` and ``end`` as a time series.

        ``start`` is inclusive, ``end`` exclusive; either may be None (open). With ``as_xarray`` an
        ``xarray.DataArray`` on a ``time`` dimension (UTC, tz-naive) with the datastream's unit
        symbol in ``attrs["units"]``.

        >>> series = twin.telemetry(1, start="2026-01-01", end="2026-01-02")  # id (or name)
        >>> series.index.name
        'time'
        """
        with self.engine.connect() as conn:
            if isinstance(datastream, str) and not datastream.isdigit():
                row = conn.execute(text("SELECT id, unit_of_measurement FROM datastreams WHERE name = :n"),
                                   {"n": datastream}).first()
            else:
                row = conn.execute(text("SELECT id, unit_of_measurement FROM datastreams WHERE id = :i"),
                                   {"i": int(datastream)}).first()
            if row is None:
                raise NotFoundError(f"no datastream {datastream!r}")
            frame = pd.read_sql_query(text("""
                SELECT phenomenon_time, result FROM observations WHERE datastream_id = :d
                  AND (CAST(:start AS timestamptz) IS NULL OR phenomenon_time >= CAST(:start AS timestamptz))
                  AND (CAST(:end AS timestamptz) IS NULL OR phenomenon_time < CAST(:end AS timestamptz))
                ORDER BY phenomenon_time
            """), conn, params={"d": row[0], "start": start, "end": end})
        # utc=True: an empty window still gives a tz-aware (UTC) index, as a full one does
        times = pd.DatetimeIndex(pd.to_datetime(frame["phenomenon_time"], utc=True), name="time")
        series = pd.Series(frame["result"].to_numpy(), index=times, name=str(datastream))
        if as_xarray:
            return xr.DataArray(series.to_numpy(), coords={"time": series.index.tz_convert(None)}, dims="time",
                                name=str(datastream), attrs={"units": (row[1] or {}).get("symbol", "")})
        return series

    # -- scenarios ---------------------------------------------------------------------------
    @property
    def client(self):
        """The Dask client scenarios run on (``CITYTWIN_DASK_SCHEDULER`` or a LocalCluster)."""
        from citytwin.scenarios.cluster import get_client

        return get_client(self._dask_scheduler)

    def run_scenario(self, rain_mm_h: float, hours: float = 1.0, **options) -> ScenarioResult:
        """Storm what-if: flood, failed assets, outages and restoration; results as xarray and GeoDataFrames.

        Runs on :attr:`client` (started on first use, then shared by every run of this process).
        """
        from citytwin.scenarios.storm import StormRequest, run_storm

        summary = run_storm(self.engine, self.data_dir, StormRequest(rain_mm_h=rain_mm_h, hours=hours, **options),
                            client=self.client)
        return self.scenario(summary["run_id"])

    def scenario(self, run_id: int) -> ScenarioResult:
        """The results of a finished storm run."""
        from citytwin.db.twin import require_twin
        from citytwin.scenarios.runs import get_run

        with self.engine.connect() as conn:
            run = get_run(conn, run_id)
            crs = require_twin(conn).crs
            buildings = gpd.read_postgis(text("""
                SELECT b.id, b.source_id, b.use, b.height, r.max_depth_m, r.arrival_time_s, r.outage_state,
                       r.annual_kwh, b.footprint
                FROM building_results r JOIN buildings b ON b.id = r.building_id WHERE r.run_id = :r ORDER BY b.id
            """), conn, geom_col="footprint", crs=crs, params={"r": run_id})
            outages = gpd.read_postgis(text("""
                SELECT id, status, kind, cause, start_time, etr, customers_affected, customers_restored, feeder,
                       faulted_assets, opened_switches, geom FROM outages WHERE run_id = :r ORDER BY id
            """), conn, geom_col="geom", crs=crs, params={"r": run_id})
        summary = run.get("summary") or {}
        path = run.get("result_path")
        flood = xr.open_dataset(path, engine="h5netcdf") if path and Path(path).exists() else xr.Dataset()
        return ScenarioResult(run_id=run_id, summary=summary, flood=flood, buildings=buildings, outages=outages,
                              restoration_plan=pd.DataFrame(summary.get("restoration_plan", [])))


def connect(url: str | None = None, *, data_dir: str | Path | None = None) -> Twin:
    """Open the twin: ``url`` or ``CITYTWIN_DATABASE_URL``, else the embedded database (started if needed).

    The schema is brought up to date (migrations) on connecting.

    >>> twin = connect()                   # or connect("postgresql+psycopg://user@host/db")
    >>> isinstance(twin.summary()["counts"]["buildings"], int)
    True
    """
    from citytwin.config import load_settings
    from citytwin.db import make_engine, upgrade
    from citytwin.db.engine import resolve_database_url

    settings = load_settings(database_url=url, data_dir=Path(data_dir) if data_dir else None)
    engine = make_engine(resolve_database_url(settings.database_url, settings.data_dir))
    upgrade(engine)
    return Twin(engine, settings.data_dir, settings.dask_scheduler)
