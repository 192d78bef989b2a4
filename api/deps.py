"""Dependencies shared by the routes: one database session per request, the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Cookie, Depends, Header, HTTPException, status
from sqlmodel import Session

from models.db import session_scope
from models.keys import verify_key
from models.tables import Tenant
from tasks.runtime import get_resources

KEY_COOKIE = "pigreward_key"


def get_session() -> Iterator[Session]:
    with session_scope(get_resources().engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def api_key(
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
    pigreward_key: Annotated[str | None, Cookie()] = None,
) -> str | None:
    """The key from `Authorization: Bearer ...`, `X-API-Key`, or the viewer's cookie."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key or pigreward_key


def current_tenant(session: SessionDep, key: Annotated[str | None, Depends(api_key)]) -> Tenant:
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key", {"WWW-Authenticate": "Bearer"})
    tenant = verify_key(session=session, key=key)
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", {"WWW-Authenticate": "Bearer"})
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
