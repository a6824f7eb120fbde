"""Live telemetry: dead letters, latest values, hourly rollups, anomaly state, tasking, outbox, archive log.

Observation quality flags (``observations.quality_flags``, ``latest_observations.quality_flags``) are bits:

====  ==========  ================================================================================
bit   name        meaning
====  ==========  ================================================================================
1     spike       EWMA z-score of the value against its datastream's running mean/variance > limit
2     range       value outside the datastream's plausible range (``valid_min``/``valid_max``)
4     flatline    the same value repeated at least ``flatline_count`` times in a row
8     late        arrived older than the datastream's newest value (not used to update the state)
====  ==========  ================================================================================

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = r"""
-- Whatever could not be ingested, with the reason; ingest never stops on bad input.
CREATE TABLE telemetry_dead_letters (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    source        text NOT NULL CHECK (source IN ('mqtt', 'http')),
    topic         text,
    reason        text NOT NULL,
    detail        text NOT NULL DEFAULT '',
    item_index    integer,              -- position inside a batch payload; NULL = the whole message
    payload       text,                 -- the offending item or message, truncated
    payload_bytes integer NOT NULL DEFAULT 0
);
CREATE INDEX telemetry_dead_letters_time_idx ON telemetry_dead_letters (received_at);
CREATE INDEX telemetry_dead_letters_reason_idx ON telemetry_dead_letters (reason);

-- The newest value per datastream: what the live map and "current state" queries read.
CREATE TABLE latest_observations (
    datastream_id   bigint PRIMARY KEY REFERENCES datastreams (id) ON DELETE CASCADE,
    phenomenon_time timestamptz NOT NULL,
    result          double precision,
    result_json     jsonb,
    quality_flags   smallint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Hourly aggregates, kept after the raw partitions are archived and dropped.
CREATE TABLE observation_rollups_hourly (
    datastream_id bigint NOT NULL,
    hour          timestamptz NOT NULL,
    n             integer NOT NULL,
    min           double precision,
    mean          double precision,
    max           double precision,
    flagged       integer NOT NULL DEFAULT 0,
    refreshed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (datastream_id, hour)
);

-- Running statistics of the online anomaly rules, one row per datastream.
CREATE TABLE anomaly_state (
    datastream_id bigint PRIMARY KEY REFERENCES datastreams (id) ON DELETE CASCADE,
    n             bigint NOT NULL DEFAULT 0,
    mean          double precision NOT NULL DEFAULT 0,
    var           double precision NOT NULL DEFAULT 0,
    last_time     timestamptz,
    last_value    double precision,
    flat_run      integer NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Small named timestamps (e.g. how far hourly rollups are complete).
CREATE TABLE telemetry_watermarks (
    name  text PRIMARY KEY,
    value timestamptz NOT NULL
);

-- Raw days moved to Parquet, then detached and dropped.
CREATE TABLE observation_archive_log (
    day         date PRIMARY KEY,
    path        text NOT NULL,
    rows        bigint NOT NULL,
    bytes       bigint NOT NULL,
    sha256      text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    dropped_at  timestamptz
);

-- SensorThings Tasking (Part 2): Actuator, TaskingCapability, Task.
CREATE TABLE actuators (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    description   text NOT NULL DEFAULT '',
    encoding_type text NOT NULL DEFAULT 'text/plain',
    metadata      text NOT NULL DEFAULT ''
);
CREATE TABLE tasking_capabilities (
    id                 bigserial PRIMARY KEY,
    name               text NOT NULL,
    description        text NOT NULL DEFAULT '',
    thing_id           bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    actuator_id        bigint NOT NULL REFERENCES actuators (id),
    tasking_parameters jsonb NOT NULL,
    properties         jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (thing_id, name)
);
CREATE TABLE tasks (
    id                    bigserial PRIMARY KEY,
    tasking_capability_id bigint NOT NULL REFERENCES tasking_capabilities (id) ON DELETE CASCADE,
    tasking_parameters    jsonb NOT NULL,
    status                text NOT NULL DEFAULT 'created'
        CHECK (status IN ('created', 'sent', 'accepted', 'done', 'failed', 'expired')),
    creation_time         timestamptz NOT NULL DEFAULT now(),
    sent_at               timestamptz,
    accepted_at           timestamptz,
    finished_at           timestamptz,
    expires_at            timestamptz NOT NULL,
    message               text
);
CREATE INDEX tasks_open_idx ON tasks (expires_at) WHERE status IN ('created', 'sent', 'accepted');
CREATE TABLE task_events (
    id      bigserial PRIMARY KEY,
    task_id bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    status  text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX task_events_task_idx ON task_events (task_id, id);

-- Transactional outbox: a task and its command are written together; a relay publishes them.
CREATE TABLE command_outbox (
    id         bigserial PRIMARY KEY,
    task_id    bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    topic      text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts   integer NOT NULL DEFAULT 0,
    sent_at    timestamptz,
    last_error text
);
CREATE INDEX command_outbox_pending_idx ON command_outbox (id) WHERE sent_at IS NULL;

-- Desired (what the twin asked for) and reported (what the device says) state, kept apart.
CREATE TABLE device_state (
    thing_id        bigint NOT NULL REFERENCES things (id) ON DELETE CASCADE,
    property        text NOT NULL,
    desired         jsonb,
    desired_at      timestamptz,
    desired_task_id bigint REFERENCES tasks (id) ON DELETE SET NULL,
    reported        jsonb,
    reported_at     timestamptz,
    PRIMARY KEY (thing_id, property)
);
"""

DROP = """
DROP TABLE IF EXISTS device_state, command_outbox, task_events, tasks, tasking_capabilities, actuators,
    observation_archive_log, telemetry_watermarks, anomaly_state, observation_rollups_hourly,
    latest_observations, telemetry_dead_letters CASCADE;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(DROP)
