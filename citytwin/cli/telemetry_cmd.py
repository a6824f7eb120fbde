"""``citytwin telemetry ingest|simulate|retention|capabilities``: live telemetry from the command line."""

from __future__ import annotations

import logging
import signal
import sys
from datetime import timedelta
from functools import partial

import typer

from citytwin.cli.context import get_context
from citytwin.cli.output import emit
from citytwin.errors import ConfigurationError

telemetry_app = typer.Typer(help="Live telemetry: MQTT ingest, a sensor/device simulator, retention.",
                            no_args_is_help=True)


def _mqtt_url(required: bool = True) -> str:
    url = get_context().settings.mqtt_url
    if required and not url:
        raise ConfigurationError("no MQTT broker configured: set CITYTWIN_MQTT_URL "
                                 "(e.g. mqtt://127.0.0.1:1883)")
    return url


@telemetry_app.command()
def ingest(
    client_id: str = typer.Option("citytwin-ingest", "--client-id",
                                  help="MQTT client id; keep it fixed (the broker keeps its session)"),
    batch_ms: float = typer.Option(50.0, "--batch-ms", min=1, help="longest wait to fill a batch"),
    batch_messages: int = typer.Option(2000, "--batch-messages", min=1, help="most messages per transaction"),
    relay: bool = typer.Option(True, "--relay/--no-relay", help="also publish commands from the outbox"),
    workers: int = typer.Option(1, "--workers", min=1, max=32,
                                help="ingest processes sharing the load (MQTT 5 shared subscriptions)"),
    writer_process: bool = typer.Option(False, "--writer-process/--inline-writer",
                                        help="database writes in a child process (frees the MQTT thread)"),
    maintenance_minutes: float = typer.Option(60.0, "--maintenance-minutes", min=0,
                                              help="run retention and rollups this often (0: never)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the MQTT subscriber: store observations, apply command acks, publish commands, keep retention."""
    from citytwin.telemetry.commands import ensure_switch_capabilities
    from citytwin.telemetry.mqtt_ingest import IngestService
    from citytwin.telemetry.store import run_retention
    from citytwin.telemetry.validate import IngestLimits

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # This process runs paho's network thread (busy, pure Python) beside the writer thread, which
    # releases the GIL on every database round trip: with the default 5 ms switch interval it then waits
    # up to 5 ms to get it back, every time. 0.5 ms doubled per-message throughput here.
    sys.setswitchinterval(0.0005)
    ctx = get_context()
    mqtt_url = _mqtt_url()
    settings = ctx.settings
    with ctx.engine.begin() as conn:       # migrates, then gives every grid switch a command capability
        switches = ensure_switch_capabilities(conn)
    days = settings.telemetry_retention_days
    maintenance = (partial(run_retention, data_dir=settings.data_dir, retention_days=days)
                   if maintenance_minutes else None)
    options = dict(client_id=client_id, batch_ms=batch_ms, batch_max_messages=batch_messages, relay=relay,
                   limits=IngestLimits(max_age=timedelta(days=days)), maintenance=maintenance,
                   maintenance_interval_s=maintenance_minutes * 60, writer_process=writer_process,
                   share_group=client_id if workers > 1 else None)
    typer.echo(f"ingesting from {mqtt_url} into {ctx.database_url.split('@')[-1]} with {workers} process(es) "
               f"({switches} switches take commands); Ctrl-C stops")
    if workers > 1:
        _run_workers(ctx.database_url, mqtt_url, options, workers)
        return
    service = IngestService(ctx.database_url, mqtt_url, **options)
    signal.signal(signal.SIGTERM, lambda *_: service.request_stop())
    try:
        service.run_forever()
    except KeyboardInterrupt:
        pass
    typer.echo(f"stopped: {service.stats.messages} messages, {service.stats.stored} observations stored, "
               f"{service.stats.rejected} dead letters")


def _run_workers(database_url: str, mqtt_url: str, options: dict, workers: int) -> None:
    """Worker 0 keeps the client id (and runs the relay and maintenance); the others are ``<id>-<k>``."""
    import multiprocessing

    from citytwin.telemetry.mqtt_ingest import run_worker

    ctx = multiprocessing.get_context("spawn")
    procs = []
    for k in range(workers):
        opts = dict(options)
        if k:
            opts.update(client_id=f"{options['client_id']}-{k}", relay=False, maintenance=None)
        procs.append(ctx.Process(target=run_worker, args=(database_url, mqtt_url, opts), daemon=False))
    for proc in procs:
        proc.start()
    stop = lambda *_: [p.terminate() for p in procs if p.is_alive()]  # noqa: E731 - SIGTERM each worker
    signal.signal(signal.SIGTERM, stop)
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        stop()
        for proc in procs:
            proc.join(timeout=20)


@telemetry_app.command()
def simulate(
    interval: float = typer.Option(1.0, "--interval", min=0.01, help="seconds between readings of a sensor"),
    time_scale: float = typer.Option(1.0, "--time-scale", min=1.0, help="simulated seconds per real second"),
    backfill_hours: float = typer.Option(0.0, "--backfill-hours", min=0.0,
                                         help="start the simulated clock this far back (with --time-scale)"),
    duration: float = typer.Option(None, "--duration", min=0.0, help="stop after this many seconds"),
    per_message: bool = typer.Option(False, "--per-message",
                                     help="one SensorThings message per observation instead of batches"),
    silent: list[str] = typer.Option([], "--silent", help="a thing that never answers commands (repeatable)"),
    seed: int = typer.Option(7, "--seed"),
) -> None:
    """Publish realistic streams for the twin's sensors and answer commands like devices would.

    Without CITYTWIN_MQTT_URL the readings go straight into the database (no command answers).
    """
    from citytwin.telemetry.simulator import (DeviceResponder, database_sink, load_datastreams, mqtt_sink,
                                              run_simulator)

    ctx = get_context()
    streams = load_datastreams(ctx.engine)
    if not streams:
        raise ConfigurationError("the twin has no numeric datastreams: import sensors first (citytwin demo)")
    mqtt_url = _mqtt_url(required=False)
    sink = mqtt_sink(mqtt_url, batch=not per_message) if mqtt_url else database_sink(ctx.database_url)
    devices = DeviceResponder(mqtt_url, silent=set(silent)) if mqtt_url else None
    typer.echo(f"simulating {len(streams)} datastreams every {interval} s "
               f"{'via ' + mqtt_url if mqtt_url else 'straight into the database'}; Ctrl-C stops")
    try:
        sent = run_simulator(sink, streams, interval_s=interval, time_scale=time_scale, duration_s=duration,
                             seed=seed, backfill_s=backfill_hours * 3600)
    except KeyboardInterrupt:
        sent = None
    finally:
        sink.close()
        if devices is not None:
            devices.close()
    if sent is not None:
        typer.echo(f"{sent} observations sent")


@telemetry_app.command()
def retention(
    days: int = typer.Option(None, "--days", min=1,
                             help="raw days kept (default CITYTWIN_TELEMETRY_RETENTION_DAYS)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Once: partitions ahead, hourly rollups, archive old raw days to Parquet and drop them."""
    from citytwin.telemetry.store import run_retention

    ctx = get_context()
    report = run_retention(ctx.engine, ctx.settings.data_dir, days or ctx.settings.telemetry_retention_days)
    emit({"partitions_created": report.partitions_created, "rollup_rows": report.rollup_rows,
          "archived": report.archived, "dead_letters_purged": report.dead_letters_purged}, as_json=as_json)


@telemetry_app.command()
def capabilities() -> None:
    """Give every grid switch a Thing and a ``switch_operation`` tasking capability (idempotent)."""
    from citytwin.telemetry.commands import ensure_switch_capabilities

    with get_context().engine.begin() as conn:
        count = ensure_switch_capabilities(conn)
    typer.echo(f"{count} switches can be operated with POST /api/tasks")
