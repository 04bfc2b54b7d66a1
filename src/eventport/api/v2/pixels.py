"""v2 tracking pixels."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from eventport.api.deps import Actor, Db, Events, forget_events
from eventport.api.pagination import After, PerPage, links, page
from eventport.api.routing import ControlRoute
from eventport.api.v2 import shapes
from eventport.api.v2.bodies import PixelBody
from eventport.control import pixels as store
from eventport.domain.access import Access

router = APIRouter(
    prefix="/v2/tracking-pixels", tags=["v2 tracking pixels"], route_class=ControlRoute
)


@router.get("/{owner}")
def list_pixels(
    owner: str,
    request: Request,
    db: Db,
    actor: Actor,
    after: After = None,
    per_page: PerPage = None,
) -> dict[str, Any]:
    with db.session() as s:
        chunk, next_after = page(
            store.list_pixels(s, actor, owner), after, per_page, lambda p: (p.id,)
        )
        return {"results": [shapes.pixel(p) for p in chunk], "_links": links(request, next_after)}


@router.post("/{owner}", status_code=201)
def create_pixel(owner: str, body: PixelBody, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return shapes.pixel(store.create_pixel(s, actor, owner, body.name, body.package_id))


@router.get("/{owner}/{tracking_pixel_id}")
def get_pixel(owner: str, tracking_pixel_id: str, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return shapes.pixel(store.pixel_for(s, actor, owner, tracking_pixel_id, Access.READ))


@router.put("/{owner}/{tracking_pixel_id}")
def update_pixel(
    owner: str, tracking_pixel_id: str, body: PixelBody, db: Db, actor: Actor
) -> dict[str, Any]:
    with db.session() as s:
        pixel = store.pixel_for(s, actor, owner, tracking_pixel_id, Access.ADMIN)
        package_id = body.given("package_id", pixel)
        return shapes.pixel(store.update_pixel(s, actor, pixel, body.name, package_id))


@router.delete("/{owner}/{tracking_pixel_id}", status_code=204)
def delete_pixel(
    owner: str, tracking_pixel_id: str, db: Db, actor: Actor, events: Events
) -> Response:
    with db.session() as s:
        pixel = store.pixel_for(s, actor, owner, tracking_pixel_id, Access.ADMIN)
        deleted = store.delete_pixel(s, pixel)
    forget_events(events, deleted)
    return Response(status_code=204)
