"""The result viewer: server-rendered pages (no front-end build), same keys as the API (cookie)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from api.deps import KEY_COOKIE, ImagesDep, SessionDep, scope_of, viewer_key
from api.routes.judgments import DbId, owned_batch, owned_judgment
from core.enums import TERMINAL_STATUSES
from core.errors import PigrewardError
from core.requests import ExternalId
from models.batches import batch_counts, batch_judgments
from models.contexts import latest_context
from models.judgments import dimensions_of, recent_judgments
from models.keys import verify_key
from models.references import list_references, tenant_reference
from models.tables import Tenant
from models.users import find_user
from workers.imaging import ImageLoader

router = APIRouter(prefix="/ui", include_in_schema=False)
NO_IMAGE = "no such image"
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))


def viewer_tenant(
    request: Request, session: SessionDep, key: Annotated[str | None, Depends(viewer_key)]
) -> Tenant:
    """Like the API's tenant check, but sends a person to the login page instead of a 401."""
    tenant = verify_key(session=session, key=key) if key else None
    if tenant is None:
        target = quote(request.url.path)
        raise HTTPException(status.HTTP_303_SEE_OTHER, headers={"Location": f"/ui/login?next={target}"})
    return tenant


ViewerDep = Annotated[Tenant, Depends(viewer_tenant)]


def _safe_next(value: str) -> str:
    return value if value.startswith("/ui/") and "//" not in value else "/ui/login"


def _login_response(session: Session, key: str, next_url: str, request: Request) -> Response:
    if verify_key(session=session, key=key) is None:
        return templates.TemplateResponse(
            request, "login.html", {"error": "invalid API key", "next": next_url}, status_code=401
        )
    response = RedirectResponse(_safe_next(next_url), status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        KEY_COOKIE, key, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, session: SessionDep, next: str = "/ui/login", key: str | None = None
) -> Response:
    """The login form. `?key=` logs in directly (scripts, headless browsers); prefer the form."""
    if key:
        return _login_response(session, key, next, request)
    return templates.TemplateResponse(request, "login.html", {"error": None, "next": next})


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    key: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/ui/login",
) -> Response:
    return _login_response(session, key, next, request)


@router.get("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(KEY_COOKIE)
    return response


@router.get("/judgments/{judgment_id}", response_class=HTMLResponse)
def judgment_page(judgment_id: DbId, request: Request, session: SessionDep, tenant: ViewerDep) -> Response:
    row = owned_judgment(session, tenant, judgment_id)
    dims = dimensions_of(session=session, judgment_id=judgment_id)
    return templates.TemplateResponse(request, "judgment.html", {"tenant": tenant, "j": row, "dims": dims})


@router.get("/users/{external_id}", response_class=HTMLResponse)
def user_page(external_id: ExternalId, request: Request, session: SessionDep, tenant: ViewerDep) -> Response:
    assert tenant.id is not None
    user = find_user(session=session, tenant_id=tenant.id, external_id=external_id)
    if user is None or user.id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
    context = latest_context(session=session, user_id=user.id)
    judgments = recent_judgments(session=session, tenant_id=tenant.id, user=external_id, limit=50)
    refs = list_references(session=session, user_id=user.id)
    return templates.TemplateResponse(
        request,
        "user.html",
        {"tenant": tenant, "user": user, "refs": refs, "context": context, "judgments": judgments},
    )


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_page(batch_id: DbId, request: Request, session: SessionDep, tenant: ViewerDep) -> Response:
    batch = owned_batch(session, tenant, batch_id)
    counts = batch_counts(session=session, batch_id=batch_id)
    total = sum(counts.values())
    finished = sum(n for s, n in counts.items() if s in TERMINAL_STATUSES)
    rows = batch_judgments(session=session, batch_id=batch_id, limit=200)
    return templates.TemplateResponse(
        request,
        "batch.html",
        {
            "tenant": tenant,
            "batch": batch,
            "counts": counts,
            "total": total,
            "finished": finished,
            "percent": round(100 * finished / total) if total else 0,
            "judgments": rows,
        },
    )


@router.get("/images/{judgment_id}/{side}")
def judgment_image(
    judgment_id: DbId, side: Literal["a", "b"], session: SessionDep, tenant: ViewerDep, images: ImagesDep
) -> Response:
    row = owned_judgment(session, tenant, judgment_id)
    return _png(images, tenant, row.image_a_uri if side == "a" else row.image_b_uri)


@router.get("/references/{reference_id}/{which}")
def reference_image(
    reference_id: DbId,
    which: Literal["chosen", "rejected"],
    session: SessionDep,
    tenant: ViewerDep,
    images: ImagesDep,
) -> Response:
    assert tenant.id is not None
    ref = tenant_reference(session=session, tenant_id=tenant.id, reference_id=reference_id)
    if ref is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_IMAGE)
    return _png(images, tenant, ref.chosen_uri if which == "chosen" else ref.rejected_uri)


def _png(images: ImageLoader, tenant: Tenant, uri: str) -> Response:
    """The normalized picture the models saw, as PNG (any stored format, any size), and only if it
    lies in the tenant's image scope today: a row naming someone else's object shows nothing."""
    if not scope_of(tenant).allows(uri):
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_IMAGE)
    try:
        image = images.load(uri)
    except PigrewardError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image unavailable: {exc.message}") from exc
    buf = io.BytesIO()
    image.image.save(buf, format="PNG")
    return Response(
        buf.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )
