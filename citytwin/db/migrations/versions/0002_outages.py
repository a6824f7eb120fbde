"""Outages (CIM / outage-feed vocabulary), affected customers, detection events; API keys; webhooks.

Revision ID: 0002
"""

from alembic import op
from sqlalchemy import text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE outages (
    id                        bigserial PRIMARY KEY,
    status                    text NOT NULL DEFAULT 'predicted'
        CHECK (status IN ('predicted', 'confirmed', 'partially_restored', 'restored', 'closed')),
    kind                      text NOT NULL DEFAULT 'unplanned' CHECK (kind IN ('unplanned', 'planned', 'simulated')),
    cause                     text NOT NULL DEFAULT 'unknown',
    start_time                timestamptz NOT NULL DEFAULT now(),
    etr                       timestamptz,
    etr_confidence            text CHECK (etr_confidence IS NULL OR etr_confidence IN ('low', 'medium', 'high')),
    end_time                  timestamptz,
    customers_affected        integer NOT NULL DEFAULT 0,
    customers_restored        integer NOT NULL DEFAULT 0,
    original_customers_served integer NOT NULL DEFAULT 0,
    feeder                    text,
    faulted_assets            text[] NOT NULL DEFAULT '{}',
    opened_switches           text[] NOT NULL DEFAULT '{}',
    switching_plan            jsonb NOT NULL DEFAULT '[]'::jsonb,
    run_id                    bigint REFERENCES simulation_runs (id) ON DELETE CASCADE,
    geom                      geometry(MultiPolygon),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outages_status_idx ON outages (status, start_time DESC);
CREATE INDEX outages_geom_gist ON outages USING gist (geom);

CREATE TABLE outage_customers (
    outage_id       bigint NOT NULL REFERENCES outages (id) ON DELETE CASCADE,
    node_id         text NOT NULL,
    building_id     bigint REFERENCES buildings (id) ON DELETE SET NULL,
    customers       integer NOT NULL DEFAULT 1,
    interruption_h  double precision,
    restored_by     text CHECK (restored_by IS NULL OR restored_by IN ('switching', 'repair')),
    restored_at     timestamptz,
    PRIMARY KEY (outage_id, node_id)
);
CREATE INDEX outage_customers_building_idx ON outage_customers (building_id);

-- Outage-detection events (MultiSpeak-like) as received, for audit and re-inference.
CREATE TABLE od_events (
    id           bigserial PRIMARY KEY,
    object_id    text NOT NULL,
    event_type   text NOT NULL CHECK (event_type IN ('Outage', 'Restoration', 'NoResponse')),
    event_time   timestamptz NOT NULL,
    device_id    text,
    device_type  text,
    outage_id    bigint REFERENCES outages (id) ON DELETE SET NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (object_id, event_type, event_time)
);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    prefix      text NOT NULL UNIQUE,
    key_hash    text NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE webhook_subscriptions (
    id          bigserial PRIMARY KEY,
    url         text NOT NULL,
    secret      text NOT NULL,
    events      text[] NOT NULL DEFAULT '{outage.created,outage.updated,outage.restored}',
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event           text NOT NULL,
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    response_code   integer,
    error           text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    srid = op.get_bind().execute(text("SELECT srid FROM twin WHERE id = 1")).scalar()
    if srid:
        op.execute(f"ALTER TABLE outages ALTER COLUMN geom TYPE geometry(MultiPolygon, {int(srid)})")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS webhook_deliveries, webhook_subscriptions, api_keys, od_events, "
               "outage_customers, outages CASCADE")
