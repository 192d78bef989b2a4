"""Dependencies shared by the routes: the app's database sessions and image loader, the caller's tenant.

The API owns what it needs, built once per app (`api.main.create_app`) from settings: its own database
engine (`models.db`) and an image loader for uploads and the viewer. It borrows nothing of the
workers' per-process wiring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Cookie, Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.scope import ImageScope
from core.settings import Settings, get_settings
from models.db import make_engine, session_scope
from models.keys import verify_key
from models.tables import Tenant
from tasks.config import image_loader
from workers.imaging import ImageLoader

KEY_COOKIE = "pigreward_key"


@dataclass
class ApiState:
    """What one API app holds for its lifetime."""

    db: Engine
    images: ImageLoader

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiState:
        return cls(db=make_engine(settings.resolved_database_url), images=image_loader(settings))


def app_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.pigreward
    return state


StateDep = Annotated[ApiState, Depends(app_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """One unit of work per request: committed when the route returns, rolled back if it raises."""
    with session_scope(state.db) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_images(state: StateDep) -> ImageLoader:
    return state.images


ImagesDep = Annotated[ImageLoader, Depends(get_images)]


bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="Authorization: Bearer pgr_...")
header_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey", description="X-API-Key: pgr_..."
)


def api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    x_api_key: Annotated[str | None, Depends(header_key)],
) -> str | None:
    """The key from `Authorization: Bearer ...` or `X-API-Key` (the two security schemes)."""
    return credentials.credentials.strip() if credentials else x_api_key


def viewer_key(
    key: Annotated[str | None, Depends(api_key)],
    pigreward_key: Annotated[str | None, Cookie(include_in_schema=False)] = None,
) -> str | None:
    """The viewer also takes the cookie its login sets."""
    return key or pigreward_key


def current_tenant(session: SessionDep, key: Annotated[str | None, Depends(api_key)]) -> Tenant:
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key", {"WWW-Authenticate": "Bearer"})
    tenant = verify_key(session=session, key=key)
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", {"WWW-Authenticate": "Bearer"})
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]


def scope_of(tenant: Tenant) -> ImageScope:
    """The image locations this tenant may name and be shown (`core.scope`)."""
    assert tenant.id is not None
    return ImageScope(tenant.id, tuple(tenant.image_prefixes), get_settings().upload_bucket)
