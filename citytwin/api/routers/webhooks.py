"""Webhook subscriptions for outage events and their delivery log."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from citytwin.api.auth import require_scope
from citytwin.oms import webhooks

router = APIRouter(prefix="/api/webhooks", tags=["Webhooks"], dependencies=[require_scope("outages:write")])


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., max_length=2000, description="http(s) endpoint that receives POSTed events")
    events: list[str] | None = Field(None, description=f"subset of {list(webhooks.EVENTS)}; default all")
    secret: str | None = Field(None, min_length=16, max_length=200,
                               description="HMAC-SHA256 key; generated and returned once if omitted")


@router.post("", status_code=201, summary="Subscribe to outage events")
def subscribe(request: Request, body: SubscriptionIn) -> dict:
    with request.app.state.engine.begin() as conn:
        return webhooks.create_subscription(conn, body.url, body.events, body.secret)


@router.get("", summary="Subscriptions")
def subscriptions(request: Request) -> list[dict]:
    with request.app.state.engine.connect() as conn:
        return webhooks.list_subscriptions(conn)


@router.delete("/{subscription_id}", status_code=204, summary="Unsubscribe")
def unsubscribe(request: Request, subscription_id: int) -> None:
    with request.app.state.engine.begin() as conn:
        webhooks.delete_subscription(conn, subscription_id)


@router.get("/{subscription_id}/deliveries", summary="Delivery log (attempts, response codes, errors)")
def delivery_log(request: Request, subscription_id: int) -> list[dict]:
    with request.app.state.engine.connect() as conn:
        return webhooks.deliveries(conn, subscription_id)
