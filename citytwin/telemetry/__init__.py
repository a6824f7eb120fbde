"""Live telemetry: ingest (MQTT + HTTP), the time-series store, live fan-out, retention, anomaly flags,
commands back to devices, and a device simulator.

Data path::

    MQTT (QoS 1, persistent session)  ─┐                      ┌─ observations (day partitions, PK (ds, time))
    HTTP POST /api/telemetry/...      ─┴─ validate ─ write ────┼─ latest_observations, anomaly_state
                                          │  (one txn/batch)   └─ NOTIFY citytwin_telemetry (one per batch)
                                          └─ telemetry_dead_letters (reason)
    API processes LISTEN ─ read latest ─ coalesce (≤ 10 Hz) ─ WebSocket clients (bbox / datastream filters)

Modules: ``validate`` (payloads -> columns + dead letters), ``ingest`` (batch writer: COPY, upserts,
NOTIFY), ``writer`` (retrying writer, inline or in a child process), ``mqtt`` (broker URLs, clients),
``mqtt_ingest`` (subscriber service, outbox relay), ``store`` (partitions, rollups, Parquet archive,
retention), ``anomaly`` (online rules, quality-flag bits), ``livefeed`` (WebSocket fan-out),
``commands`` (Tasking: capabilities, tasks, outbox, acks, desired/reported state), ``simulator``,
``sta_shape`` / ``sta_query`` / ``sta_read`` (SensorThings entity model, $-options to SQL, reads).
"""
