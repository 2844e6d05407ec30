"""Webhook endpoint management for API consumers, and the dispatcher the shop runs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.auth import require_admin
from convergent.errors import NotFound
from convergent.store import Store
from convergent.webhooks import (
    WebhookSettings,
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_attempts,
    list_endpoints,
    recover,
    resend,
    rotate_secret,
    update_endpoint,
)
from convergent_shop.clients import AUTHENTICATED, owned, owner_ids, take
from convergent_shop.fields import JsonDatetime

__all__ = ["DISPATCHER_ENV", "router"]

#: set to 0 to run the dispatcher elsewhere (a worker) instead of inside `convergent serve`
DISPATCHER_ENV = "CONVERGENT_WEBHOOK_DISPATCHER"

router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[AUTHENTICATED])
_KIND = "webhook endpoint"

EventTypes = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=255)]], Field(max_length=100)
]


class EndpointIn(BaseModel):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    event_types: EventTypes | None = None
    description: Annotated[str, Field(max_length=1000)] = ""


class EndpointPatch(BaseModel):
    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    event_types: EventTypes | None = None
    description: Annotated[str, Field(max_length=1000)] | None = None
    enabled: bool | None = None


class RecoverIn(BaseModel):
    since: JsonDatetime


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _settings(request: Request) -> WebhookSettings:
    return getattr(request.app.state, "webhook_settings", None) or WebhookSettings()


def _id(raw: str, what: str = "webhook endpoint") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} {raw}") from None


async def _mine(conn: AsyncConnection, raw: str, request: Request) -> uuid.UUID:
    """The endpoint's id if this request's client owns it; NotFound otherwise."""
    endpoint_id = _id(raw)
    await owned(conn, _KIND, str(endpoint_id), request)
    return endpoint_id


@router.post("/endpoints", status_code=201)
async def add_endpoint(body: EndpointIn, request: Request, response: Response) -> dict[str, Any]:
    """Subscribe a URL; the answer carries the signing secret, shown this once only."""
    store, cfg = _store(request), _settings(request)
    async with store.begin() as conn:
        endpoint, secret = await create_endpoint(
            conn,
            body.url,
            event_types=body.event_types,
            description=body.description,
            allow=cfg.allow,
        )
        await take(conn, _KIND, str(endpoint.id), request)
    response.headers["Location"] = f"/webhooks/endpoints/{endpoint.id}"
    return {**endpoint.to_dict(), "secret": secret}


@router.get("/endpoints")
async def endpoints(request: Request) -> list[dict[str, Any]]:
    async with _store(request).read() as conn:
        mine = await owner_ids(conn, _KIND, request)
        return [e.to_dict() for e in await list_endpoints(conn) if str(e.id) in mine]


@router.get("/endpoints/{endpoint_id}")
async def endpoint(endpoint_id: str, request: Request) -> dict[str, Any]:
    async with _store(request).read() as conn:
        return (await get_endpoint(conn, await _mine(conn, endpoint_id, request))).to_dict()


@router.patch("/endpoints/{endpoint_id}")
async def change_endpoint(
    endpoint_id: str, body: EndpointPatch, request: Request
) -> dict[str, Any]:
    store = _store(request)
    changes: dict[str, Any] = {
        k: getattr(body, k) for k in ("url", "description", "enabled") if k in body.model_fields_set
    }
    if "event_types" in body.model_fields_set:
        changes["event_types"] = body.event_types
    async with store.begin() as conn:
        updated = await update_endpoint(
            conn, await _mine(conn, endpoint_id, request), allow=_settings(request).allow, **changes
        )
    return updated.to_dict()


@router.delete("/endpoints/{endpoint_id}", status_code=204)
async def remove_endpoint(endpoint_id: str, request: Request) -> Response:
    async with _store(request).begin() as conn:
        await delete_endpoint(conn, await _mine(conn, endpoint_id, request))
    return Response(status_code=204)


@router.get("/endpoints/{endpoint_id}/attempts")
async def attempts(
    endpoint_id: str, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Latest delivery attempts, newest first."""
    async with _store(request).read() as conn:
        mine = await _mine(conn, endpoint_id, request)
        return [a.to_dict() for a in await list_attempts(conn, mine, limit)]


@router.post("/endpoints/{endpoint_id}/rotate-secret", dependencies=[Depends(require_admin)])
async def rotate(endpoint_id: str, request: Request) -> dict[str, Any]:
    """A new secret (shown this once); the old one keeps signing during the grace period.

    An operator's route: it needs an admin key, since whoever holds the secret can forge
    callbacks to the endpoint.
    """
    store, cfg = _store(request), _settings(request)
    async with store.begin() as conn:
        secret = await rotate_secret(conn, _id(endpoint_id), grace=cfg.rotation_grace)
    grace_ends = store.clock.now() + cfg.rotation_grace
    return {"secret": secret, "previous_secret_valid_until": grace_ends.isoformat()}


@router.post("/endpoints/{endpoint_id}/messages/{message_id}/resend", status_code=202)
async def resend_message(endpoint_id: str, message_id: str, request: Request) -> dict[str, Any]:
    store = _store(request)
    async with store.begin() as conn:
        endpoint = await _mine(conn, endpoint_id, request)
        await resend(conn, _id(message_id, "webhook message"), endpoint)
    return {"message_id": message_id, "status": "queued"}


@router.post("/endpoints/{endpoint_id}/recover", status_code=202)
async def recover_since(endpoint_id: str, body: RecoverIn, request: Request) -> dict[str, Any]:
    """Resend every message since a time whose delivery to this endpoint failed."""
    store = _store(request)
    async with store.begin() as conn:
        count = await recover(conn, await _mine(conn, endpoint_id, request), body.since)
    return {"queued": count}
