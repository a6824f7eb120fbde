"""Webhook subscriptions for outage events: HMAC-SHA256 signed, retried with backoff, logged.

Events are written to ``webhook_deliveries`` in the same transaction as the change they announce (an
outbox), so an event is never sent for a change that rolled back, nor lost for one that committed.
A dispatcher sends due deliveries; each attempt is logged on the delivery row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx
from sqlalchemy import Connection, Engine, text

from citytwin.errors import InputError, NotFoundError

EVENTS = ("outage.created", "outage.updated", "outage.restored")
MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 600.0
SIGNATURE_HEADER = "X-Citytwin-Signature"


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, as GitHub-style webhooks do."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def create_subscription(conn: Connection, url: str, events: list[str] | None, secret: str | None) -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"webhook url must be an absolute http(s) URL, got {url[:100]!r}")
    events = events or list(EVENTS)
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise InputError(f"unknown webhook events {unknown}; choose from {list(EVENTS)}")
    secret = secret or secrets.token_urlsafe(32)
    row = conn.execute(text("INSERT INTO webhook_subscriptions (url, secret, events) VALUES (:u, :s, :e) "
                            "RETURNING id, created_at"), {"u": url, "s": secret, "e": events}).one()
    return {"id": row.id, "url": url, "events": events, "secret": secret, "created_at": row.created_at.isoformat()}


def list_subscriptions(conn: Connection) -> list[dict]:
    rows = conn.execute(text("SELECT id, url, events, active, created_at FROM webhook_subscriptions ORDER BY id")).all()
    return [{**r._mapping, "created_at": r.created_at.isoformat()} for r in rows]


def delete_subscription(conn: Connection, subscription_id: int) -> None:
    if conn.execute(text("DELETE FROM webhook_subscriptions WHERE id = :id"), {"id": subscription_id}).rowcount == 0:
        raise NotFoundError(f"no webhook subscription {subscription_id}")


def deliveries(conn: Connection, subscription_id: int, limit: int = 100) -> list[dict]:
    rows = conn.execute(text("""
        SELECT id, event, status, attempts, response_code, error, created_at, delivered_at, next_attempt_at
        FROM webhook_deliveries WHERE subscription_id = :id ORDER BY id DESC LIMIT :limit
    """), {"id": subscription_id, "limit": limit}).all()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r._mapping.items()} for r in rows]


def enqueue_event(conn: Connection, event: str, payload: dict) -> int:
    """Queue ``event`` for every active subscription that wants it (inside the caller's transaction)."""
    body = json.dumps({"event": event, "data": payload}, default=str)
    return conn.execute(text("""
        INSERT INTO webhook_deliveries (subscription_id, event, payload)
        SELECT id, :event, CAST(:body AS jsonb) FROM webhook_subscriptions
        WHERE active AND :event = ANY(events)
    """), {"event": event, "body": body}).rowcount


def announce_outages(conn: Connection, outage_ids: list[int], *, created: list[int] | tuple = ()) -> int:
    """Queue the events for outages just created or changed; returns the deliveries queued.

    An outage in ``created`` gets ``outage.created``; then any outage now restored or closed gets
    ``outage.restored``, and any other changed one ``outage.updated``. Call it inside the transaction that
    made the change, so the events commit (or roll back) with it.
    """
    from citytwin.oms.store import get_outage

    new, queued = set(created), 0
    for outage_id in dict.fromkeys([*created, *outage_ids]):
        feature = get_outage(conn, outage_id)
        if outage_id in new:
            queued += enqueue_event(conn, "outage.created", feature)
        if feature["properties"]["status"] in ("restored", "closed"):
            queued += enqueue_event(conn, "outage.restored", feature)
        elif outage_id not in new:
            queued += enqueue_event(conn, "outage.updated", feature)
    return queued


def announce_created(conn: Connection, outage_ids: list[int]) -> int:
    """Queue ``outage.created`` for new outages (e.g. those a storm scenario stored)."""
    return announce_outages(conn, [], created=list(outage_ids))


@dataclass
class DispatchResult:
    delivered: int = 0
    retried: int = 0
    failed: int = 0


def dispatch_due(engine: Engine, *, timeout_s: float = 5.0, batch: int = 50) -> DispatchResult:
    """Send every due delivery once; schedule retries with exponential backoff."""
    result = DispatchResult()
    with engine.begin() as conn:
        due = conn.execute(text("""
            SELECT d.id, d.event, d.payload, d.attempts, s.url, s.secret
            FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at LIMIT :batch FOR UPDATE OF d SKIP LOCKED
        """), {"batch": batch}).all()
        with httpx.Client(timeout=timeout_s) as client:
            for row in due:
                body = json.dumps(row.payload, separators=(",", ":")).encode()
                headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(row.secret, body),
                           "X-Citytwin-Event": row.event, "X-Citytwin-Delivery": str(row.id)}
                code, error = None, None
                try:
                    response = client.post(row.url, content=body, headers=headers)
                    code = response.status_code
                    if not 200 <= code < 300:
                        error = f"HTTP {code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                attempts = row.attempts + 1
                if error is None:
                    status, result.delivered = "delivered", result.delivered + 1
                elif attempts >= MAX_ATTEMPTS:
                    status, result.failed = "failed", result.failed + 1
                else:
                    status, result.retried = "pending", result.retried + 1
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S ** attempts)
                conn.execute(text("""
                    UPDATE webhook_deliveries SET attempts = :a, status = :st, response_code = :code, error = :err,
                        delivered_at = CASE WHEN :st = 'delivered' THEN now() END,
                        next_attempt_at = now() + make_interval(secs => :delay)
                    WHERE id = :id
                """), {"a": attempts, "st": status, "code": code, "err": error, "delay": delay, "id": row.id})
    return result
