"""The demo city: generate (once, deterministically) and load it into the twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine

DEMO_SOURCE = "demo-city"


def ensure_demo_files(out_dir: Path, buildings: int, seed: int) -> dict:
    """Generate the demo city unless the same one (size and seed) is already on disk."""
    from citytwin.synth import generate_city

    manifest_path = Path(out_dir) / "city.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("seed") == seed and manifest.get("counts", {}).get("buildings") == buildings:
            return manifest
    generate_city(buildings, seed, out_dir)
    return json.loads(manifest_path.read_text())


def load_demo_city(engine: Engine, *, out_dir: Path, buildings: int, seed: int,
                   log: Callable[[str], None] = print) -> dict:
    """Generate the demo city files and import buildings, terrain, grid and sensors; return a summary."""
    from citytwin.db.buildings import load_buildings
    from citytwin.db.grid import load_grid
    from citytwin.db.sensors import load_sensors
    from citytwin.db.summary import twin_summary
    from citytwin.db.terrain import register_dem
    from citytwin.io.buildings import iter_building_chunks
    from citytwin.io.grids import read_grid
    from citytwin.io.sensors import read_sensors

    out_dir = Path(out_dir)
    manifest = ensure_demo_files(out_dir, buildings, seed)
    files = {key: out_dir / name for key, name in manifest["files"].items()}
    log(f"demo city: {buildings} buildings, seed {seed}, files in {out_dir}")
    result = load_buildings(engine, iter_building_chunks(files["buildings"]), source=DEMO_SOURCE,
                            path=str(files["buildings"]), twin_name=manifest.get("name", "demo-city"))
    log(f"buildings: {result.imported} new, {result.updated} updated, {result.rejected} rejected")
    result = register_dem(engine, files["dem"], name="demo-dem")
    log(f"terrain: {files['dem'].name} registered")
    result = load_grid(engine, read_grid(files["grid"]), source=DEMO_SOURCE, path=str(files["grid"]))
    log(f"grid: {result.imported} elements ({result.updated} replaced)")
    result = load_sensors(engine, read_sensors(files["sensors"]), source=DEMO_SOURCE, path=str(files["sensors"]))
    log(f"sensors: {result.imported} new datastreams, {result.updated} updated")
    with engine.connect() as conn:
        return twin_summary(conn)


def run_demo_scenarios(engine: Engine, data_dir: Path, tiles_dir: Path, *, rain_mm_h: float, hours: float,
                       client=None, dask_scheduler: str = "", log: Callable[[str], None] = print) -> dict:
    """Energy demand, a storm what-if and the 3D tiles with their results: what the web map shows.

    The scenarios run on ``client``, else on the client for ``dask_scheduler`` (empty: a LocalCluster),
    like every other scenario entry point.
    """
    from citytwin.scenarios.cluster import get_client
    from citytwin.scenarios.energy_run import EnergyRequest, simulate_energy_on_twin
    from citytwin.scenarios.storm import StormRequest, run_storm
    from citytwin.tiler.source import build_tiles

    client = client if client is not None else get_client(dask_scheduler)
    energy = simulate_energy_on_twin(engine, data_dir, EnergyRequest(), client=client)
    log(f"energy: {energy['electricity_mwh']:,.0f} MWh/yr electricity for {energy['buildings']} buildings "
        f"(run {energy['run_id']})")
    storm = run_storm(engine, data_dir, StormRequest(rain_mm_h=rain_mm_h, hours=hours), client=client)
    log(f"storm {rain_mm_h:g} mm/h for {hours:g} h: {storm['flooded_buildings']} buildings flooded, "
        f"{len(storm['failed_assets'])} assets failed, {storm['customers_out']} customers out, "
        f"{storm['customers_restored_by_switching']} restored by switching (run {storm['run_id']})")
    tiles = build_tiles(engine, tiles_dir, "buildings")
    log(f"tiles: {tiles.buildings} buildings in {tiles.tiles} tiles at {tiles.path}")
    return {"energy_run": energy["run_id"], "storm_run": storm["run_id"], "tileset": str(tiles.path)}
