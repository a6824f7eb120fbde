"""Foundation schema: twin metadata, buildings, electric grid, terrain, SensorThings, runs.

Geometry columns are created without an SRID constraint; ``citytwin.db.twin.init_twin`` pins them to
the twin's metric CRS (``ALTER ... TYPE geometry(<type>, <srid>)``) once that CRS is chosen.

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE twin (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    name        text NOT NULL,
    crs         text NOT NULL,
    srid        integer NOT NULL,
    vertical_crs text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE import_log (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('buildings', 'grid', 'dem', 'sensors')),
    source      text NOT NULL,
    path        text NOT NULL,
    imported    integer NOT NULL DEFAULT 0,
    updated     integer NOT NULL DEFAULT 0,
    rejected    integer NOT NULL DEFAULT 0,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    finished_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE buildings (
    id               bigserial PRIMARY KEY,
    source           text NOT NULL,
    source_id        text NOT NULL,
    footprint        geometry(MultiPolygon) NOT NULL,
    ground_elevation double precision,
    height           double precision NOT NULL CHECK (height > 0),
    floors           integer CHECK (floors IS NULL OR floors >= 0),
    use              text NOT NULL DEFAULT 'other',
    year_built       integer,
    attributes       jsonb NOT NULL DEFAULT '{}'::jsonb,
    lod2             geometry(MultiPolygonZ),
    UNIQUE (source, source_id)
);
CREATE INDEX buildings_footprint_gist ON buildings USING gist (footprint);
CREATE INDEX buildings_use_idx ON buildings (use);

CREATE TABLE feeders (
    feeder_id   text PRIMARY KEY,
    substation  text,
    name        text
);

CREATE TABLE grid_nodes (
    node_id          text PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('source', 'substation', 'bus', 'transformer', 'service_point')),
    name             text,
    feeder           text REFERENCES feeders (feeder_id) ON DELETE SET NULL,
    voltage_kv       double precision,
    customers        integer NOT NULL DEFAULT 0 CHECK (customers >= 0),
    load_mw          double precision,
    peak_load_mw     double precision,
    rating_mva       double precision,
    failure_rate     double precision CHECK (failure_rate IS NULL OR failure_rate >= 0),
    repair_time_h    double precision CHECK (repair_time_h IS NULL OR repair_time_h >= 0),
    critical_depth_m double precision,
    component_class  text,
    geom             geometry(Point),
    source           text NOT NULL,
    attributes       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX grid_nodes_geom_gist ON grid_nodes USING gist (geom);
CREATE INDEX grid_nodes_feeder_idx ON grid_nodes (feeder);

CREATE TABLE grid_sections (
    section_id    text PRIMARY KEY,
    from_node     text NOT NULL REFERENCES grid_nodes (node_id) ON DELETE CASCADE,
    to_node       text NOT NULL REFERENCES grid_nodes (node_id) ON DELETE CASCADE,
    length_km     double precision CHECK (length_km IS NULL OR length_km >= 0),
    rating_mva    double precision,
    failure_rate  double precision CHECK (failure_rate IS NULL OR failure_rate >= 0),
    repair_time_h double precision CHECK (repair_time_h IS NULL OR repair_time_h >= 0),
    feeder        text REFERENCES feeders (feeder_id) ON DELETE SET NULL,
    component_class text,
    geom          geometry(LineString),
    source        text NOT NULL,
    CHECK (from_node <> to_node)
);
CREATE INDEX grid_sections_geom_gist ON grid_sections USING gist (geom);

CREATE TABLE grid_switches (
    switch_id        text PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('breaker', 'recloser', 'fuse', 'disconnector', 'tie')),
    from_node        text NOT NULL REFERENCES grid_nodes (node_id) ON DELETE CASCADE,
    to_node          text NOT NULL REFERENCES grid_nodes (node_id) ON DELETE CASCADE,
    normal_state     text NOT NULL CHECK (normal_state IN ('open', 'closed')),
    present_state    text NOT NULL CHECK (present_state IN ('open', 'closed')),
    switching_time_h double precision,
    feeder           text REFERENCES feeders (feeder_id) ON DELETE SET NULL,
    component_class  text,
    geom             geometry(Point),
    source           text NOT NULL,
    CHECK (from_node <> to_node)
);

CREATE TABLE service_connections (
    building_id bigint NOT NULL REFERENCES buildings (id) ON DELETE CASCADE,
    node_id     text NOT NULL REFERENCES grid_nodes (node_id) ON DELETE CASCADE,
    customers   integer NOT NULL DEFAULT 1 CHECK (customers >= 0),
    PRIMARY KEY (building_id, node_id)
);
CREATE INDEX service_connections_node_idx ON service_connections (node_id);

CREATE TABLE terrain (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    path       text NOT NULL,
    crs        text NOT NULL,
    cell_size  double precision NOT NULL,
    width      integer NOT NULL,
    height     integer NOT NULL,
    nodata     double precision,
    extent     geometry(Polygon),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- SensorThings API 1.1 core entities.
CREATE TABLE things (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    properties  jsonb NOT NULL DEFAULT '{}'::jsonb,
    asset_id    text
);
CREATE TABLE locations (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    encoding_type text NOT NULL DEFAULT 'application/geo+json',
    location      geometry(Point) NOT NULL
);
CREATE INDEX locations_location_gist ON locations USING gist (location);
CREATE TABLE thing_locations (
    thing_id    bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    location_id bigint NOT NULL REFERENCES locations (id) ON DELETE CASCADE,
    PRIMARY KEY (thing_id, location_id)
);
CREATE TABLE sensors (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    description   text NOT NULL DEFAULT '',
    encoding_type text NOT NULL DEFAULT 'text/plain',
    metadata      text NOT NULL DEFAULT ''
);
CREATE TABLE observed_properties (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    definition  text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT ''
);
CREATE TABLE datastreams (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    description         text NOT NULL DEFAULT '',
    thing_id            bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    sensor_id           bigint NOT NULL REFERENCES sensors (id),
    observed_property_id bigint NOT NULL REFERENCES observed_properties (id),
    unit_of_measurement jsonb NOT NULL DEFAULT '{}'::jsonb,
    observation_type    text NOT NULL DEFAULT
        'http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement',
    result_type         text NOT NULL DEFAULT 'number' CHECK (result_type IN ('number', 'boolean', 'string', 'object')),
    properties          jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Observations: range-partitioned by day, primary key (datastream_id, phenomenon_time) makes
-- ingest idempotent; BRIN on time is tiny and fits append-mostly data.
CREATE TABLE observations (
    datastream_id   bigint NOT NULL,
    phenomenon_time timestamptz NOT NULL,
    result_time     timestamptz,
    result          double precision,
    result_json     jsonb,
    quality_flags   smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (datastream_id, phenomenon_time)
) PARTITION BY RANGE (phenomenon_time);
CREATE INDEX observations_time_brin ON observations USING brin (phenomenon_time);

CREATE FUNCTION citytwin_ensure_observation_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    created integer := 0;
    part text;
BEGIN
    WHILE day <= last_day LOOP
        part := format('observations_%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF observations FOR VALUES FROM (%L) TO (%L)',
                part, day::timestamptz AT TIME ZONE 'UTC', (day + 1)::timestamptz AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END $$;

CREATE TABLE simulation_runs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    parameters  jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress    double precision NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    error       text,
    result_path text,
    summary     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX simulation_runs_kind_idx ON simulation_runs (kind, created_at DESC);

CREATE TABLE building_results (
    run_id         bigint NOT NULL REFERENCES simulation_runs (id) ON DELETE CASCADE,
    building_id    bigint NOT NULL REFERENCES buildings (id) ON DELETE CASCADE,
    max_depth_m    double precision,
    arrival_time_s double precision,
    annual_kwh     double precision,
    peak_kw        double precision,
    outage_state   text,
    PRIMARY KEY (run_id, building_id)
);

CREATE TABLE asset_results (
    run_id         bigint NOT NULL REFERENCES simulation_runs (id) ON DELETE CASCADE,
    asset_id       text NOT NULL,
    asset_kind     text NOT NULL,
    max_depth_m    double precision,
    arrival_time_s double precision,
    failed         boolean,
    annual_mwh     double precision,
    peak_mw        double precision,
    overloaded     boolean,
    PRIMARY KEY (run_id, asset_id)
);
"""

DROP = """
DROP TABLE IF EXISTS asset_results, building_results, simulation_runs, observations, datastreams,
    observed_properties, sensors, thing_locations, locations, things, terrain, service_connections,
    grid_switches, grid_sections, grid_nodes, feeders, buildings, import_log, twin CASCADE;
DROP FUNCTION IF EXISTS citytwin_ensure_observation_partitions(date, date);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(DROP)
